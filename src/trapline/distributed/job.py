"""Entry point for ``spark-submit``: ``spark-submit "$(trapline spark job-path)" ingest ...``.

The master and resources come from spark-submit; trapline must be installed on the driver and
the executors (``pip install 'trapline[spark]'`` in the cluster image, or ``--py-files``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trapline-spark-job")
    sub = parser.add_subparsers(dest="command", required=True)
    ing = sub.add_parser("ingest", help="mail -> Parquet with the store's schema")
    ing.add_argument("inputs", nargs="+")
    ing.add_argument("--out", required=True)
    ing.add_argument("--data-dir", default=None, help="store whose routing snapshots to use")
    ing.add_argument("--split-mb", type=int, default=64)
    ing.add_argument("--trust", action="append", default=[])
    ing.add_argument("--force", action="store_true")
    ana = sub.add_parser("analyze", help="networks, timeline, campaigns over an ingest's output")
    ana.add_argument("dataset")
    ana.add_argument("--out", required=True)
    ana.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    from trapline.config import load_settings
    from trapline.distributed import spark as job
    from trapline.errors import TraplineError

    settings = load_settings({"data_dir": args.data_dir})
    session = job.session(None)
    try:
        if args.command == "ingest":
            summary = job.ingest(
                session,
                args.inputs,
                args.out,
                settings=settings,
                data_dir=Path(args.data_dir) if args.data_dir else None,
                trust=args.trust,
                target_bytes=args.split_mb << 20,
                force=args.force,
            )
            print(summary.line())
        else:
            from trapline.distributed.analyze import run

            result = run(
                session,
                args.dataset,
                args.out,
                settings=settings,
                data_dir=Path(args.data_dir) if args.data_dir else None,
            )
            print(json.dumps(result.summary(), default=str))
    except TraplineError as exc:  # said plainly, as the CLI does, not as a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        session.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
