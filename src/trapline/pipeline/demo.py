"""``trapline demo``: ingest the bundled real corpus and report on it.

The sample is package data (``trapline/data/sample``: ~300 SpamAssassin 2002 messages, byte for
byte, with their licence note), so the demo works from an installed wheel with no network and no
checkout. The routing table shipped under ``trapline/data/routing`` (RouteViews, 2008-05-01) is
imported first, so the post-ingest ASN stage maps the 2002 mail with the oldest routing data we
have rather than today's.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from trapline.pipeline.run import IngestSummary, NoteFn, ProgressFn, ingest
from trapline.store.duckdb import open_store
from trapline.store.queries import stats
from trapline.store.routing import import_bundled_routing

# The corpus collector's own relays have public addresses: mail.webnote.net (its forwarding
# mailbox, fetched by POP) and mandark (213.105.180.140, its other server). Without trusting them
# they would top the "origin networks" table although they only forwarded the mail to the trap.
SAMPLE_TRUST = ("mail.webnote.net", "213.105.180.140")
# The sample keeps SpamAssassin's folders: spam in spam*/, legitimate mail in *ham*/.
SAMPLE_LABELS = (("spam", ("spam", "spam_2")), ("ham", ("easy_ham", "easy_ham_2", "hard_ham")))


def run_demo(
    settings: dict[str, Any],
    *,
    on_progress: ProgressFn | None = None,
    on_note: NoteFn | None = None,
) -> dict[str, Any]:
    """Ingest the bundled sample into ``settings['data_dir']``, spam and ham folders with their
    labels, then cluster the spam into campaigns; returns the summaries (label, summary), stats,
    top networks and campaigns (spam only), notes."""
    notes: list[str] = []
    data_dir = Path(settings["data_dir"])
    # The sample was not caught by our traps: the harvester stage has nothing to do here, and
    # its "switched off" note would be the first thing a new user reads.
    stages = settings.get("post_ingest_stages") or []
    settings = {**settings, "post_ingest_stages": [s for s in stages if "harvest" not in s]}
    # Before the ingest, so the post-ingest ASN stage maps 2002 mail with period data.
    with open_store(data_dir) as store:
        notes.append(import_bundled_routing(store))
    summaries: list[tuple[str, IngestSummary]] = []
    with resources.as_file(resources.files("trapline").joinpath("data", "sample")) as sample:
        for label, folders in SAMPLE_LABELS:
            summary = ingest(
                [sample / "mail" / f for f in folders],
                settings=settings,
                trust=SAMPLE_TRUST,
                on_progress=on_progress,
                on_note=on_note,
                label=label,
            )
            summaries.append((label, summary))
    from trapline.analyze.campaign_report import list_campaigns
    from trapline.analyze.campaigns import analyze_campaigns
    from trapline.analyze.networks import network_scores

    with open_store(data_dir) as store:
        analyze_campaigns(store, settings)  # spam only: ham does not form campaigns
        report = stats(store.con, top=5)
        networks = [n.as_dict() for n in network_scores(store, settings, top=5)]
        campaigns = list_campaigns(store.con, top=5, min_size=2)
    return {
        "summaries": summaries,
        "stats": report,
        "networks": networks,
        "campaigns": campaigns,
        "notes": notes,
        "sample": str(sample),
    }
