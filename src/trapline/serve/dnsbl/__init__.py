"""The DNSBL: trapline's listings over DNS (RFC 5782), as a ``trapline serve`` service or alone.

Modules: ``wire`` (the narrow codec), ``zones`` (listing data, indexes, return codes),
``listings`` (store → listing data), ``answer`` (the pure ``Responder.answer``), ``server``
(UDP/TCP sockets, reloads, worker processes), ``run`` (building a server from settings,
the standalone command), ``service`` (the ``trapline serve`` service). docs/dnsbl.md is the
user's guide.
"""
