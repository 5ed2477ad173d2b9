"""Routing data: IP → prefix and origin AS as of a date (``lookup``), the index it searches
(``index``), the table formats it reads (``formats``) and what a snapshot is (``snapshots``).
Pure: nothing here opens a store; ``trapline.store.routing`` is the store side."""
