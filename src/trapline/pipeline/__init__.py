"""One ingest core for files and trap mail.

``run`` ingests files (sources -> parse pool -> store), ``drain`` moves the trap spool into the
store, ``pool`` is the parse process pool, ``stages`` the post-ingest stage runner, ``demo`` the
bundled-sample tour. ``adapters`` hold the store side of each stage.
"""
