"""The store side of each stage: read the rows a pure stage needs, write what it returns.

``asn`` (origin networks, ``trapline.enrich.asn``), ``harvest`` (trap addresses to visits,
``trapline.enrich.harvest``), ``fingerprint`` (signatures, ``trapline.fingerprint``) and ``feeds``
(external indicators, ``trapline.enrich.feeds``). These are the only modules where a stage meets
DuckDB; the ``*_stage`` functions are the ``post_ingest_stages`` entries,
``fn(store, message_ids, settings) -> summary``.
"""
