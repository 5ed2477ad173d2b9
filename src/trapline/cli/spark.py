"""Commands for large corpora: the ingest (and analyses) as Spark jobs, and attaching their output.

Each command calls one function of ``trapline.distributed`` and renders its result.
"""

from __future__ import annotations

from pathlib import Path

import click

from trapline.cli.common import (
    AppContext,
    echo_json,
    hint,
    ingest_label_option,
    json_option,
    label_option,
    open_existing,
    pass_app,
)

DEFAULT_MASTER = "local[*]"


def _conf(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    conf: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{text!r} is not KEY=VALUE (for example spark.executor.memory=4g)", param=param
            )
        conf[key.strip()] = value
    return conf


conf_option = click.option(
    "--conf",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_conf,
    help="A Spark setting, over trapline's defaults (repeatable): spark.jars.packages="
    "org.apache.hadoop:hadoop-aws:3.5.0 lets Spark read s3a:// (match Spark's Hadoop version).",
)


@click.group("spark")
def spark() -> None:
    """Run the ingest and the analyses as Apache Spark jobs (pip install 'trapline[spark]').

    Example: trapline spark ingest ./corpus/ --out ./parquet/ && trapline attach parquet ./parquet/
    """


@spark.command("ingest")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, help="Output folder or URI (one sub-folder per table).")
@click.option(
    "--master",
    default=DEFAULT_MASTER,
    show_default=True,
    help="Spark master (local[N], yarn, spark://host:7077, k8s://...).",
)
@click.option(
    "--split-mb",
    type=int,
    default=64,
    show_default=True,
    help="Input bytes per task (mbox files are cut at From lines).",
)
@click.option("--trust", multiple=True, help="Extra trusted CIDR / host name for the origin walk.")
@click.option("--no-dedupe", is_flag=True, help="Skip the pass that drops repeated messages.")
@click.option("--force", is_flag=True, help="Replace an earlier output in the same folder.")
@conf_option
@ingest_label_option
@json_option
@pass_app
def spark_ingest(
    app: AppContext,
    inputs: tuple[str, ...],
    out: str,
    master: str,
    split_mb: int,
    trust: tuple[str, ...],
    no_dedupe: bool,
    force: bool,
    conf: dict[str, str],
    label: str | None,
    as_json: bool,
) -> None:
    """Ingest mail into Parquet with the store's schema, partitioned by received day.

    INPUTS are files, folders, or URIs read through pyarrow (s3a://, gs://, hdfs://, file://),
    with * ? [..] patterns in any part of a URI (quote them); the executors read the objects
    themselves. Other S3 services: the s3_endpoint setting. Routing snapshots come from the
    --data-dir store (trapline routing import FILE first).

    Example: trapline spark ingest 's3a://bucket/spam/2008-*/*.mbox.gz' --out s3a://bucket/trapline/
    """
    from trapline.distributed import spark as job
    from trapline.objectstores import ObjectStores

    if split_mb < 1:
        raise click.BadParameter("must be at least 1", param_hint="--split-mb")
    job.check_inputs(inputs, ObjectStores.from_settings(app.settings))  # before the JVM starts
    with job.running(master or None, conf) as session:
        summary = job.ingest(
            session,
            list(inputs),
            out,
            settings=app.settings,
            data_dir=app.data_dir,
            trust=trust,
            target_bytes=split_mb << 20,
            dedupe=not no_dedupe,
            force=force,
            label=label or "spam",
        )
    if as_json:
        echo_json({k: getattr(summary, k) for k in summary.__slots__})
        return
    click.echo(summary.line())
    if not summary.snapshots:
        click.echo("note: no routing snapshot in --data-dir: origins are not mapped to networks")
    if summary.task_errors:
        click.echo(f"note: {summary.task_errors} task(s) failed and are recorded in quarantine")


@spark.command("analyze")
@click.argument("dataset")
@click.option("--out", required=True, help="Folder or URI for the results.")
@click.option("--master", default=DEFAULT_MASTER, show_default=True, help="Spark master.")
@conf_option
@label_option
@json_option
@pass_app
def spark_analyze(
    app: AppContext,
    dataset: str,
    out: str,
    master: str,
    conf: dict[str, str],
    label: str,
    as_json: bool,
) -> None:
    """Network ranking, daily timeline and campaigns over a `spark ingest` dataset, in Spark.

    Writes networks.json, timeline.json (messages per day and origin network, as
    `trapline timeline --by asn --json`) and campaign_members/ (Parquet) under --out; routing
    snapshots and feeds come from the --data-dir store the ingest used.

    Spark reads the dataset itself: s3a:// needs the hadoop-aws connector (--conf
    spark.jars.packages=..., see --conf) and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; another
    S3 service: --conf spark.hadoop.fs.s3a.endpoint=http://host:port.

    Example: trapline spark analyze s3a://bucket/trapline/ --out ./results/ --conf spark.jars.packages=org.apache.hadoop:hadoop-aws:3.5.0
    """
    from trapline.distributed import analyze
    from trapline.distributed import spark as job

    with job.running(master or None, conf) as session:
        result = analyze.run(
            session, dataset, out, settings=app.settings, data_dir=app.data_dir, label=label
        )
    if as_json:
        echo_json(result.summary())
        return
    s = result.summary()
    click.echo(
        f"{s['networks']} networks ranked (top: {', '.join(f'AS{a}' for a in s['top_networks'][:5])}), "
        f"timeline by {s['timeline_by']} over {s['timeline_periods']:,} days "
        f"({s['timeline_gaps']:,} gaps), {s['clustered_messages']:,} messages in "
        f"{s['campaigns']:,} campaigns ({s['component_rounds']} component rounds) -> {out}"
    )


@spark.command("job-path")
def spark_job_path() -> None:
    """Print the path of the job script, for spark-submit on a cluster.

    Example: spark-submit --master yarn "$(trapline spark job-path)" ingest 's3a://b/spam/2008-*/' --out s3a://b/out/
    """
    from trapline.distributed import job

    click.echo(str(Path(job.__file__).resolve()))


@click.group("attach")
def attach() -> None:
    """Let this store read a dataset in place (for example the output of `spark ingest`).

    Example: trapline attach parquet ./parquet/ && trapline stats
    """


@attach.command("parquet")
@click.argument("dataset")
@json_option
@pass_app
def attach_parquet_cmd(app: AppContext, dataset: str, as_json: bool) -> None:
    """Read the tables of a Parquet dataset (one folder per table) instead of the store's own.

    DATASET is a folder or a URI: s3a:// (s3://, s3n://), gs://, hdfs:// or file://. An
    S3 dataset is read with the AWS credentials of whoever runs each command, at the
    s3_endpoint and s3_region settings given when attaching (other S3 services: set
    TRAPLINE_S3_ENDPOINT=http://host:port). Attaching the dataset again (after it moved,
    say) replaces the views; `trapline attach list` shows which tables are read from where.

    Example: trapline --data-dir ./big attach parquet s3a://bucket/trapline/
    """
    from trapline.distributed.attach import attach_parquet
    from trapline.objectstores import ObjectStores
    from trapline.store.duckdb import open_store

    with open_store(app.data_dir) as store:
        done = attach_parquet(store, dataset, ObjectStores.from_settings(app.settings))
    if done.kept and not app.quiet:
        click.echo(f"kept this store's own {', '.join(done.kept)}", err=True)
    if done.missing_snapshots:
        click.echo(
            f"note: the dataset was mapped with {', '.join(done.missing_snapshots)}, which this "
            "store has not imported; `networks` sizes each AS by it: trapline routing import FILE",
            err=True,
        )
    if as_json:
        echo_json([{"table": a.table, "path": a.path, "rows": a.rows} for a in done.tables])
        return
    for a in done.tables:
        click.echo(f"{a.table:<12} {a.rows:>12,} rows  {a.path}")


@attach.command("list")
@json_option
@pass_app
def attach_list_cmd(app: AppContext, as_json: bool) -> None:
    """Which tables this store reads from an attached dataset, where, and at which endpoint.

    Example: trapline --data-dir ./big attach list
    """
    from trapline.store.attached import locations

    with open_existing(app) as store:
        found = locations(store.con)
    rows = [
        {"table": t, "path": w.path, "endpoint": w.stores.endpoint, "region": w.stores.region}
        for t, w in sorted(found.items())
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        hint("this store reads no dataset in place; attach one: trapline attach parquet FOLDER")
        return
    for r in rows:
        at = f"  (endpoint {r['endpoint']})" if r["endpoint"] else ""
        click.echo(f"{r['table']:<20} {r['path']}{at}")


commands = [spark, attach]
