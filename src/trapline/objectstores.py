"""Where a URI's bytes live: pyarrow filesystems for ``s3a://``, ``gs://``, ``hdfs://``, ``file://``.

Every part of trapline that reads or writes a URI gets its filesystem here: the Spark job's
inputs and outputs, and a store that reads an attached dataset from an object store.

``s3a://`` and ``s3n://`` (Hadoop's names) are pyarrow's ``s3://``: same bucket and key,
credentials from the AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
instance roles), region from ``s3_region``, ``AWS_REGION`` or the bucket itself, and another
S3 service (MinIO, Ceph) from the ``s3_endpoint`` setting.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from trapline.config import SettingsView
from trapline.errors import ObjectStoreError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
GLOB = re.compile(r"[*?\[]")
_KINDS = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs", "file": "file"}
SUPPORTED = "s3a:// (s3://, s3n://), gs://, hdfs:// and file://"


@dataclass(slots=True, frozen=True)
class ObjectStores(SettingsView):
    """How to reach S3-compatible stores (the settings ``s3_endpoint``, ``s3_region``)."""

    prefix: ClassVar[str] = "s3_"
    endpoint: str  # "" = AWS itself; "http://127.0.0.1:9000" for a MinIO, say
    region: str  # "" = AWS_REGION / AWS_DEFAULT_REGION, else asked of the bucket


def is_uri(text: str) -> bool:
    """Whether ``text`` is a URI (``scheme://...``) rather than a local path."""
    return bool(_URI.match(text))


def _unsupported(uri: str, detail: str) -> ObjectStoreError:
    scheme = uri.split("://", 1)[0]
    return ObjectStoreError(
        f"cannot open {scheme}:// URIs ({uri}): {detail}; trapline reads {SUPPORTED} "
        "through pyarrow: use one of those, or mount or copy the files to a local folder"
    )


@functools.lru_cache(maxsize=32)
def _filesystem(kind: str, scheme: str, authority: str, stores: ObjectStores) -> Any:
    """One pyarrow filesystem per store and process (S3 clients are costly to make)."""
    from pyarrow import fs

    if kind == "file":
        return fs.LocalFileSystem()
    if kind == "s3":
        options: dict[str, Any] = {}
        if stores.endpoint:
            scheme_, sep, host = stores.endpoint.partition("://")
            options["endpoint_override"] = host.rstrip("/") if sep else scheme_
            options["scheme"] = scheme_ if sep else "https"
        region = (
            stores.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region and not stores.endpoint:
            region = fs.resolve_s3_region(authority)  # what pyarrow's from_uri does
        # Delayed open: an object that fits one part goes up in one PutObject request.
        return fs.S3FileSystem(region=region or "us-east-1", allow_delayed_open=True, **options)
    if kind == "gs":
        return fs.GcsFileSystem()
    filesystem, _path = fs.FileSystem.from_uri(f"{scheme}://{authority}/")
    return filesystem


def parse_uri(uri: str) -> tuple[str, str, str, str, str]:
    """``(kind, scheme, authority, prefix, path)``: ``prefix + path`` is the URI again."""
    scheme, _, rest = uri.partition("://")
    kind = _KINDS.get(scheme.lower(), scheme.lower())
    authority, _, key = rest.partition("/")
    key = key.rstrip("/")
    if kind == "file":
        if authority not in ("", "localhost"):
            raise _unsupported(uri, f"file:// names a host ({authority})")
        return kind, "file", authority, f"{scheme}://{authority}", "/" + key
    if kind in ("s3", "gs"):
        if not authority or GLOB.search(authority):
            raise ObjectStoreError(
                f"{uri}: name the bucket (no pattern in it), as {scheme}://bucket/key"
            )
        return kind, scheme.lower(), authority, f"{scheme}://", f"{authority}/{key}".rstrip("/")
    return kind, scheme.lower(), authority, f"{scheme}://{authority}", "/" + key


def locate(uri: str, stores: ObjectStores | None = None) -> tuple[Any, str]:
    """The pyarrow filesystem of ``uri`` and the path of ``uri`` in it."""
    kind, scheme, authority, _prefix, path = parse_uri(uri)
    try:
        filesystem = _filesystem(kind, scheme, authority, stores or ObjectStores.from_settings({}))
    except (ValueError, OSError, ImportError) as exc:  # pyarrow: unknown scheme, no libhdfs, ...
        raise _unsupported(uri, str(exc).splitlines()[0][:300]) from exc
    return filesystem, path


def open_input(path: str, stores: ObjectStores | None = None) -> tuple[Any, int | None]:
    """A seekable binary handle on a local path or a URI, and its size (None: unknown).

    Raises ``FileNotFoundError`` when it is gone and ``OSError`` when it cannot be read.
    """
    if not is_uri(path):
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 - the caller closes it
        try:
            return handle, os.fstat(handle.fileno()).st_size
        except OSError:
            return handle, None
    filesystem, inner = locate(path, stores)
    try:
        handle = filesystem.open_input_file(inner)
    except (ValueError, TypeError) as exc:  # pyarrow: a folder, or a path it refuses
        raise OSError(str(exc)) from exc
    return handle, handle.size()
