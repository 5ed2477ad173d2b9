"""Pure enrichment: origin network as of a date, trap address to visit, external feed readers.

The store side of each is in ``trapline.pipeline.adapters``."""
