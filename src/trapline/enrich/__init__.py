"""Enrichment stages: IP to ASN as of a date, trap address to harvester, external feeds."""
