"""Network services: DNSBL, REST API, dashboard."""
