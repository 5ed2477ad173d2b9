"""The DNSBL's settings as one typed view of ``config.DEFAULTS`` (the ``dnsbl_*`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trapline.config import SettingsView
from trapline.errors import UsageError


@dataclass(slots=True, frozen=True)
class DnsblSettings(SettingsView):
    """What the DNSBL serves, for how long, and how (docs/dnsbl.md explains each)."""

    prefix: ClassVar[str] = "dnsbl_"
    listen: str
    zones: tuple[str, ...]
    max_age_days: float
    ttl: int
    negative_ttl: int
    ns: tuple[str, ...]
    hostmaster: str
    record_url: str
    networks_top: int
    httpbl_keys: tuple[str, ...]
    reload_s: float
    workers: int
    rate_limit: float

    @property
    def max_age_s(self) -> int:
        return int(self.max_age_days * 86400)

    def zone_names(self) -> list[str]:
        names = [z.strip().strip(".").lower() for z in self.zones if z.strip().strip(".")]
        if not names:
            raise UsageError("no DNSBL zone configured; pass --zone bl.example.org")
        return names
