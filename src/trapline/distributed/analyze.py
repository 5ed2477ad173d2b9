"""Analyses at scale on Spark, over the Parquet dataset of ``spark ingest``.

* **Networks**: ``analyze.networks.network_scores`` runs unchanged; its SQL goes through
  ``dialect.SparkSQL``, one thin dialect layer that sends queries over the big tables to Spark
  SQL and the rest (routing snapshots, AS names, feeds) to the local store of ``--data-dir``,
  whose small tables are also registered in Spark.
* **Timeline**: ``analyze.timeline.series`` runs unchanged through the same layer: messages
  per received day and origin network, collection gaps as gaps.
* **Campaigns**: the link rule of ``analyze.lsh`` as Spark operations: LSH band keys per
  message (``fingerprint.minhash``), a window per bucket for its first and previous member,
  verification with ``equal_counts``, URL-template anchors as a join, then connected
  components by alternating large-star / small-star rounds (Kiveris et al., SoCC 2014).
  Processing order is ``signatures.seq``, so the partition equals ``analyze campaigns``'.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from trapline.distributed.dialect import BIG, SparkSQL, frame
from trapline.distributed.spark import read_parquet
from trapline.distributed.task import DAY, memory_store
from trapline.errors import UsageError
from trapline.objectstores import ObjectStores
from trapline.store.labels import SPAM, label_filter

SMALL = ("routing_snapshots", "as_names", "feed_indicators", "visits", "dictionary_attacks")
NUM_PERM = 128


@dataclass(slots=True, frozen=True)
class AnalyzeResult:
    out: str
    networks: list[dict[str, Any]]
    timeline: dict[str, Any]  # ``Series.as_dict()``, as the API and `timeline --json` give it
    campaigns: int
    clustered: int
    rounds: int

    def summary(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "networks": len(self.networks),
            "top_networks": [n["asn"] for n in self.networks[:10]],
            "timeline_by": self.timeline["by"],
            "timeline_periods": len(self.timeline["periods"]),
            "timeline_gaps": len(self.timeline["gaps"]),
            "campaigns": self.campaigns,
            "clustered_messages": self.clustered,
            "component_rounds": self.rounds,
        }


def register_dataset(spark: Any, dataset: str) -> list[str]:
    """Temp views over the dataset's table folders (partition column dropped), and the names
    found. The job writes a folder only for a table with rows: any other is an empty view
    with the store's columns, so the analyses' SQL runs on every dataset."""
    found, absent = [], []
    for name in sorted(BIG):
        df = read_parquet(spark, f"{dataset.rstrip('/')}/{name}", absent_ok=True)
        if df is None:
            absent.append(name)
            continue
        if DAY in df.columns:
            df = df.drop(DAY)
        df.createOrReplaceTempView(name)
        found.append(name)
    if not found:
        raise UsageError(
            f"{dataset} holds no table folders (messages/, raw/, ...): give the --out folder "
            "or URI of `trapline spark ingest`"
        )
    if absent:
        schema = memory_store()
        for name in absent:
            empty = schema.con.sql(f'SELECT * FROM "{name}" LIMIT 0').to_arrow_table()
            frame(spark, empty).createOrReplaceTempView(name)
        schema.close()
    return found


def register_small(spark: Any, store: Any) -> None:
    """The local store's small tables (routing snapshots, names, feeds) as Spark views."""
    for name in SMALL:
        try:
            table = store.con.sql(f'SELECT * FROM "{name}"').to_arrow_table()
        except Exception:
            continue  # an older store without this table: the SQL that needs it is skipped
        frame(spark, table).createOrReplaceTempView(name)


def dataset_connection(spark: Any, local: Any) -> SparkSQL:
    """The dialect layer over the registered dataset, with ``local``'s small tables in Spark."""
    register_small(spark, local)
    return SparkSQL(spark, local.con)


def run(
    spark: Any,
    dataset: str,
    out: str,
    *,
    settings: dict[str, Any],
    data_dir: Path | None,
    label: str = SPAM,
) -> AnalyzeResult:
    """Networks, timeline and campaigns over ``dataset``; results written under ``out``."""
    from trapline.analyze.networks import network_scores
    from trapline.analyze.timeline import series
    from trapline.store.duckdb import Store, open_store
    from trapline.store.queries import plain_value as json_value

    register_dataset(spark, dataset)
    if data_dir is None or not (data_dir / "trapline.duckdb").exists():
        raise_missing(data_dir)
    assert data_dir is not None
    with open_store(data_dir, read_only=True) as local:
        con = dataset_connection(spark, local)
        shim = object.__new__(Store)
        shim.data_dir, shim.path = local.data_dir, local.path
        shim.con = cast(Any, con)
        networks = [s.as_dict() for s in network_scores(shim, settings, label=label)]
        (routed,) = local.con.execute("SELECT count(*) FROM routing_snapshots").fetchone() or (0,)
        by = "asn" if routed else "none"
        timeline = json_value(series(con, by=by, freq="day", label=label).as_dict())
    members, rounds = campaign_members(spark, settings, label)
    members.write.mode("overwrite").parquet(f"{out.rstrip('/')}/campaign_members")
    counts = members.groupBy("campaign_id").count()
    n_campaigns = counts.count()
    clustered = members.count()
    stores = ObjectStores.from_settings(settings)
    _write_json(out, "networks.json", networks, stores)
    _write_json(out, "timeline.json", timeline, stores)
    return AnalyzeResult(out, networks, timeline, n_campaigns, clustered, rounds)


def raise_missing(data_dir: Path | None) -> None:
    raise UsageError(
        f"no store in {data_dir}: the analyses need the routing snapshots the ingest used "
        "(pass the same --data-dir as `spark ingest`)"
    )


def _write_json(out: str, name: str, value: Any, stores: ObjectStores) -> None:
    from trapline.distributed.task import filesystem_for

    text = json.dumps(value, default=str, indent=2) + "\n"
    filesystem, base = filesystem_for(out, stores)
    if filesystem is None:
        Path(base).mkdir(parents=True, exist_ok=True)
        Path(base, name).write_text(text, encoding="utf-8")
    else:
        with filesystem.open_output_stream(f"{base}/{name}") as fh:
            fh.write(text.encode())


# --- campaigns ---------------------------------------------------------------------------------


def _matrix(blobs: Sequence[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, NUM_PERM), np.uint32)
    return np.frombuffer(b"".join(blobs), dtype="<u4").reshape(len(blobs), NUM_PERM)


def _band_rows(rows: Iterator[Any], bands: int, per_band: int) -> Iterator[tuple[int, int, int]]:
    from trapline.fingerprint.minhash import band_keys_by_band, is_empty

    batch = list(rows)
    if not batch:
        return
    sig = _matrix([bytes(r["minhash"]) for r in batch])
    seqs = np.fromiter((r["seq"] for r in batch), np.int64, len(batch))
    live = ~is_empty(sig)
    keys = band_keys_by_band(sig[live], bands, per_band)
    live_seqs = seqs[live].tolist()
    for band in range(bands):
        for seq, key in zip(live_seqs, keys[band].tolist(), strict=True):
            yield band, key, seq


def _verified(rows: Iterator[Any], need: int) -> Iterator[tuple[int, int]]:
    from trapline.fingerprint.minhash import equal_counts

    batch = list(rows)
    if not batch:
        return
    n = len(batch)
    sig = np.concatenate(
        (_matrix([bytes(r["a_sig"]) for r in batch]), _matrix([bytes(r["b_sig"]) for r in batch]))
    )
    idx = np.arange(n)
    ok = equal_counts(sig, idx, idx + n) >= need
    for r, good in zip(batch, ok.tolist(), strict=True):
        if good:
            yield r["a"], r["b"]


def _url_rows(rows: Iterator[Any], period_days: float) -> Iterator[tuple[int, int]]:
    from trapline.analyze.lsh import url_keys
    from trapline.fingerprint.templates import template_hash

    batch = list(rows)
    if not batch:
        return
    hashes = [[template_hash(t) for t in (r["url_templates"] or ())] for r in batch]
    times = np.fromiter((r["t"] if r["t"] is not None else -1 for r in batch), np.int64, len(batch))
    row_idx, keys = url_keys(hashes, times, period_days)
    for i, key in zip(row_idx.tolist(), keys.tolist(), strict=True):
        yield batch[i]["seq"], key


def campaign_members(spark: Any, settings: dict[str, Any], label: str = SPAM) -> tuple[Any, int]:
    """DataFrame (message_id, campaign_id) for every clustered message, and the CC rounds."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from trapline.analyze.lsh import ClusterParams

    params = ClusterParams.from_settings(settings)
    chosen = "TRUE" if label == "all" else label_filter(label, "m.label")
    sig = spark.sql(
        "SELECT s.message_id, s.seq, s.minhash, s.url_templates, "
        "CAST(unix_timestamp(s.received_at) AS BIGINT) AS t FROM signatures s "
        f"JOIN messages m ON m.id = s.message_id WHERE {chosen}"
    ).cache()
    bands, per_band = params.bands, params.rows
    band_df = (
        sig.select("seq", "minhash")
        .rdd.mapPartitions(lambda rows: _band_rows(rows, bands, per_band))
        .toDF("band INT, key BIGINT, seq BIGINT")
    )
    w = Window.partitionBy("band", "key").orderBy("seq")
    firsts = band_df.select(
        "seq",
        F.first("seq").over(w).alias("first"),
        F.lag("seq").over(w).alias("prev"),
    )
    pairs = (
        firsts.where("seq <> first")
        .select(F.col("seq").alias("a"), F.col("first").alias("b"))
        .union(
            firsts.where("prev IS NOT NULL AND prev <> first").select(
                F.col("seq").alias("a"), F.col("prev").alias("b")
            )
        )
        .distinct()
    )
    mh = sig.select("seq", "minhash")
    joined = pairs.join(mh.toDF("a", "a_sig"), "a").join(mh.toDF("b", "b_sig"), "b")
    need = math.ceil(params.threshold * NUM_PERM - 1e-9)
    text_edges = joined.rdd.mapPartitions(lambda rows: _verified(rows, need)).toDF(
        "a BIGINT, b BIGINT"
    )
    period = params.url_period_days
    url_df = (
        sig.select("seq", "url_templates", "t")
        .rdd.mapPartitions(lambda rows: _url_rows(rows, period))
        .toDF("seq BIGINT, key BIGINT")
    )
    anchors = url_df.groupBy("key").agg(F.min("seq").alias("anchor"))
    url_edges = None
    for delta in (-1, 0, 1):
        shifted = anchors.select((F.col("key") - delta).alias("key"), "anchor")
        edges = (
            url_df.join(shifted, "key")
            .where("anchor < seq")
            .select(F.col("seq").alias("a"), F.col("anchor").alias("b"))
        )
        url_edges = edges if url_edges is None else url_edges.union(edges)
    assert url_edges is not None
    edges = text_edges.union(url_edges).distinct()
    labels, rounds = components(edges)
    members = (
        sig.select("seq", "message_id")
        .join(labels, "seq", "left")
        .withColumn("root", F.coalesce("root", "seq"))
        .join(sig.select(F.col("seq").alias("root"), F.col("message_id").alias("root_id")), "root")
        .select(
            "message_id", F.concat(F.lit("c"), F.substring("root_id", 1, 16)).alias("campaign_id")
        )
    )
    return members, rounds


def components(edges: Any, max_rounds: int = 64) -> tuple[Any, int]:
    """Connected components of an edge DataFrame (a, b): DataFrame (seq, root = min member).

    Alternating large-star and small-star rounds (Kiveris et al., "Connected Components in
    MapReduce and Beyond", SoCC 2014) turn every component into a star around its smallest
    node in O(log n) rounds; nodes without edges are their own component (not listed).
    """
    rdd = edges.rdd.map(lambda r: (int(r[0]), int(r[1]))).filter(lambda e: e[0] != e[1])
    current = rdd.map(lambda e: (max(e), min(e))).distinct().cache()
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        large = _large_star(current).cache()
        small = _small_star(large).cache()
        changed = not small.subtract(current).union(current.subtract(small)).isEmpty()
        current.unpersist()
        large.unpersist()
        current = small
        if not changed:
            break
    # A star: every node's one edge points at its component's smallest node.
    labels = current.reduceByKey(min).toDF("seq BIGINT, root BIGINT")
    return labels, rounds


def _large_star(edges: Any) -> Any:
    """Each node links its larger neighbours to the smallest of its closed neighbourhood."""

    def emit(item: tuple[int, Any]) -> list[tuple[int, int]]:
        u, ns = item
        neighbours = set(ns)
        m = min(neighbours | {u})
        return [(v, m) for v in neighbours if v > u]

    both = edges.flatMap(lambda e: [(e[0], e[1]), (e[1], e[0])])
    return both.groupByKey().flatMap(emit).map(lambda e: (max(e), min(e))).distinct()


def _small_star(edges: Any) -> Any:
    """Each node links itself and its smaller neighbours to the smallest of them."""

    def emit(item: tuple[int, Any]) -> list[tuple[int, int]]:
        u, ns = item
        group = set(ns) | {u}
        m = min(group)
        return [(v, m) for v in group if v != m]

    oriented = edges.map(lambda e: (max(e), min(e)))
    return oriented.groupByKey().flatMap(emit).map(lambda e: (max(e), min(e))).distinct()
