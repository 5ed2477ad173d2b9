"""The API's and dashboard's settings as one typed view of ``config.DEFAULTS`` (``web_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trapline.config import SettingsView


@dataclass(slots=True, frozen=True)
class WebSettings(SettingsView):
    """Where the dashboard listens, who may read, how long sessions and snapshots live."""

    prefix: ClassVar[str] = "web_"
    listen: str  # inside `serve`; "off" = not started
    default_listen: str  # `trapline web` without an address
    anonymous_read: bool
    session_hours: float
    search_refresh_s: float
