"""Exports: rbldnsd, STIX 2.1, MISP, ARF abuse reports, network dossiers, tables."""
