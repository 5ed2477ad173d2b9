"""Timeline routes: volume series, change points and takedown prediction from the analyses'
own functions (``analyze.timeline.series``, ``analyze.changes.detect``,
``analyze.takedown.predict``), cached per store version."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from trapline.serve.api.access import StoreAccess
from trapline.serve.api.auth import reader
from trapline.serve.api.cache import params_key
from trapline.serve.api.responses import cached_response
from trapline.serve.api.search import utc_naive
from trapline.store.queries import plain_value

router = APIRouter(dependencies=[Depends(reader)])
By = Literal["none", "botnet", "campaign", "asn", "harvester-asn"]
Freq = Literal["hour", "day", "week"]


def series(
    access: StoreAccess,
    *,
    by: str = "none",
    freq: str = "day",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    from trapline.analyze.timeline import series as build

    return build(access.cursor(), by=by, freq=freq, since=since, until=until)


def change_points(access: StoreAccess, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The overall series' change points, attributed to networks, as the overview marks them."""
    from trapline.analyze.changes import Params, detect

    s = series(access, by="asn", freq=_freq_for(access))
    if len(s.periods) < 3:
        return []
    found = []
    for cp in detect(s, Params.from_settings(settings)):
        d = plain_value(cp.as_dict())
        rel = d["relative_change"]
        who = ", ".join(
            f"{'AS' if a['kind'] == 'asn' else ''}{a['id']} {a['share']:.0%}"
            for a in d["attribution"][:2]
        )
        d["label"] = f"{d['kind']}" + (f" {rel:+.0%}" if rel is not None else "") + (
            f" ({who})" if who else "")  # fmt: skip
        found.append(d)
    return found


def _freq_for(access: StoreAccess) -> str:
    """Days for up to ~3 years of mail, weeks beyond (PELT on decades of days is noise)."""
    row = (
        access.cursor()
        .execute(
            f"SELECT max(received_at) - min(received_at) FROM messages WHERE {access.spam_only()}"
        )
        .fetchone()
    )
    span = row[0] if row else None
    return "week" if span is not None and span.days > 3 * 366 else "day"


@router.get("/timeline", summary="Spam per period, overall and per group, with collection gaps")
def timeline(
    request: Request,
    by: By = "none",
    freq: Freq = "day",
    since: datetime | None = None,
    until: datetime | None = None,
    top: Annotated[int, Query(ge=1, le=200)] = 20,
) -> Response:
    st = request.app.state.web
    key = params_key("timeline", by=by, freq=freq, since=since, until=until, top=top)
    entry = st.cache.get(key, lambda: plain_value(series(
        st.access, by=by, freq=freq, since=utc_naive(since), until=utc_naive(until)).as_dict(top)))  # fmt: skip
    return cached_response(request, entry)


@router.get("/changes", summary="Change points in spam volume, attributed to groups")
def changes(
    request: Request,
    by: By = "asn",
    freq: Freq = "day",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Response:
    from trapline.analyze.changes import Params, detect

    st = request.app.state.web
    key = params_key("changes", by=by, freq=freq, since=since, until=until)

    def compute() -> Any:
        s = series(st.access, by=by, freq=freq, since=utc_naive(since), until=utc_naive(until))
        return [plain_value(cp.as_dict()) for cp in detect(s, Params.from_settings(st.settings))]

    return cached_response(request, st.cache.get(key, compute))


@router.get(
    "/takedown/{network}",
    summary="Predicted (and observed) share of spam stopping if a network goes dark",
)
def takedown(
    request: Request,
    network: Annotated[str, Path(max_length=64, description="AS26780 or a CIDR.")],
    at: Annotated[datetime | None, Query(description="When it goes dark (default: now).")] = None,
) -> Response:
    from trapline.analyze.takedown import predict

    st = request.app.state.web
    key = params_key("takedown", network=network, at=at)
    entry = st.cache.get(key, lambda: plain_value(predict(
        st.access.cursor(), network, utc_naive(at), settings=st.settings).as_dict()))  # fmt: skip
    return cached_response(request, entry)
