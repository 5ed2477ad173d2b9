"""Every exception trapline raises on purpose, in one place.

A docstring is the default message and says what to do next. Third-party errors are wrapped at
the boundary that called the library, so users never see a DuckDB or MIME traceback for a
situation we anticipated.
"""

from __future__ import annotations


class TraplineError(Exception):
    """Trapline failed; the message says why."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class NotConfigured(TraplineError):
    """A pipeline stage has no inputs to work with and switched itself off."""


# --- user input -------------------------------------------------------------------------------


class UsageError(TraplineError):
    """The command was given options it cannot use; see --help."""


class TrustSpecError(UsageError):
    """A --trust value is neither a CIDR, an IP nor a host name; use 129.97.0.0/16, 10.1.2.3,
    mx.example.org or .example.org."""


class SourceError(TraplineError):
    """A mail source could not be read; check the path and its permissions."""


class IngestError(TraplineError):
    """An ingest run stopped early; what was committed stays, run the same command to resume."""


class ConfigError(TraplineError):
    """trapline.toml or a TRAPLINE_* variable holds a value trapline cannot use; fix it and retry."""


# --- the store --------------------------------------------------------------------------------


class StoreError(TraplineError):
    """The DuckDB store could not be opened or written; check --data-dir."""


class StoreLocked(StoreError):
    """Another trapline process holds the store open for writing; wait for it or stop it."""


class StoreDamaged(StoreError):
    """The store file is truncated or corrupted; the message says how to recover."""


class StoreBusy(StoreLocked):
    """The store did not come free within the wait limit; retry, or raise --wait."""


class QueryError(StoreError):
    """The SQL could not run; check it against docs/schema.md (`trapline query "show tables"`)."""


class NotFound(TraplineError):
    """Nothing matches; check the id or name (ids may be given as a unique prefix)."""


class Ambiguous(TraplineError):
    """The prefix matches more than one item; give more characters."""


# --- data and enrichment ----------------------------------------------------------------------


class RoutingDataError(TraplineError):
    """A routing table could not be read; check its format (see `trapline routing import --help`)."""


class FeedError(TraplineError):
    """A threat feed could not be read; check --kind and the file format."""


# --- traps and services -----------------------------------------------------------------------


class TrapAddressError(TraplineError):
    """The address is not a trap address issued by this site (forged, mistyped or re-keyed)."""


class ServiceError(TraplineError):
    """A trapline service could not start; is the port free and the address local?"""


# --- scale-out ---------------------------------------------------------------------------------


class ObjectStoreError(TraplineError):
    """An object-store path (s3a://, gs://, hdfs://) could not be used; the message says what
    to add or check."""
