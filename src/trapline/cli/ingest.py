"""Commands over the core store: ingest, stats, show, query, demo."""

from __future__ import annotations

import click

commands: list[click.Command] = []
