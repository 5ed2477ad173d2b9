"""Entry point for ``spark-submit``: ``spark-submit "$(trapline spark job-path)" ingest ...``.

It runs ``trapline spark ingest`` / ``trapline spark analyze`` themselves (the same Click
commands, so the same options), with the master and resources spark-submit gives unless
``--master`` says otherwise. trapline's own options (``--data-dir``, ``-q``, ``--wait``) may
come before or after the command; the store defaults to the configured one, as for
``trapline``. trapline must be installed on the driver and the executors (``pip install
'trapline[spark]'`` in the cluster image, or ``--py-files``).
"""

from __future__ import annotations

import os
import sys

# trapline's options that take a value (True) or not, accepted anywhere in the arguments.
TOP_OPTIONS = {"--data-dir": True, "--wait": True, "-q": False, "--quiet": False}
SUBMITTED = ""  # --master default under spark-submit: the session spark-submit made


def arguments(argv: list[str]) -> list[str]:
    """``argv`` as ``trapline`` takes it: its own options first, then ``spark`` and the rest."""
    top, rest = [], []
    items = iter(argv)
    for arg in items:
        if arg == "--":
            rest += [arg, *items]
            break
        name = arg.split("=", 1)[0]
        if name in TOP_OPTIONS:
            top.append(arg)
            if TOP_OPTIONS[name] and "=" not in arg:
                top.append(next(items, ""))
        else:
            rest.append(arg)
    return [*top, "spark", *rest]


def main(argv: list[str] | None = None) -> int:
    """Run ``spark ingest`` or ``spark analyze`` with ``argv``; the exit status."""
    from trapline.cli.main import cli

    given = sys.argv[1:] if argv is None else argv
    spark_submit = {"master": SUBMITTED}
    try:
        cli.main(
            arguments(given),
            prog_name="trapline-spark-job",
            default_map={"spark": {"ingest": spark_submit, "analyze": spark_submit}},
        )
    except SystemExit as exc:  # Click ends every run with one (0 when it went well)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    # As a script, this folder is on sys.path: its spark.py, task.py, ... must shadow nothing.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.exit(main())
