"""Inputs and outputs given as URIs (``s3a://``, ``gs://``, ``hdfs://``, ``file://``), via pyarrow.

A URI names a file, a folder (a key prefix) or a glob (``*``, ``?``, ``[..]`` in any path
component, ``s3a://b/spam/2008-*/*.mbox.gz``). The driver expands it here by listing with
pyarrow and matching each component with ``fnmatch`` (hidden names only when the pattern asks
for them, as the shell does); folders are walked with the local walker's rules
(:mod:`trapline.ingest.maildir`: sorted names, Maildirs, non-mail names skipped). Entries carry
the URI as given, so tasks open it themselves (:func:`open_input`) and sources name it.

``s3a://`` and ``s3n://`` (Hadoop's names) are pyarrow's ``s3://``: same bucket and key,
credentials from the AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
instance roles), region from ``s3_region``, ``AWS_REGION`` or the bucket itself, and another
S3 service (MinIO, Ceph) from the ``s3_endpoint`` setting.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from trapline.config import SettingsView
from trapline.errors import ObjectStoreError, SourceError
from trapline.ingest.maildir import MAILDIR_PARTS, FileEntry, is_not_mail_name
from trapline.model import SourceProblem

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?\[]")
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


def _parse(uri: str) -> tuple[str, str, str, str, str]:
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
        if not authority or _GLOB.search(authority):
            raise ObjectStoreError(
                f"{uri}: name the bucket (no pattern in it), as {scheme}://bucket/key"
            )
        return kind, scheme.lower(), authority, f"{scheme}://", f"{authority}/{key}".rstrip("/")
    return kind, scheme.lower(), authority, f"{scheme}://{authority}", "/" + key


def locate(uri: str, stores: ObjectStores | None = None) -> tuple[Any, str]:
    """The pyarrow filesystem of ``uri`` and the path of ``uri`` in it."""
    kind, scheme, authority, _prefix, path = _parse(uri)
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


def _info_kind(info: Any) -> str:
    from pyarrow import fs

    if info.type == fs.FileType.Directory:
        return "d"
    if info.type == fs.FileType.NotFound:
        return "-"
    return "f"


def _listing(filesystem: Any, path: str, recursive: bool) -> list[Any]:
    from pyarrow import fs

    return list(filesystem.get_file_info(fs.FileSelector(path, recursive=recursive)))


def entries(
    uri: str, stores: ObjectStores | None = None, skipped: list[str] | None = None
) -> Iterator[FileEntry | SourceProblem]:
    """The mail files a URI names: a file, a folder walked, or every match of a glob."""
    filesystem, path = locate(uri, stores)
    prefix = _parse(uri)[3]
    try:
        matches = (
            _expand(filesystem, path) if _GLOB.search(path) else [filesystem.get_file_info(path)]
        )
    except OSError as exc:
        raise SourceError(
            f"{uri}: cannot list it ({str(exc).splitlines()[0][:300]}); check the URI and the credentials"
        ) from exc
    found = [m for m in matches if _info_kind(m) != "-"]
    if not found:
        what = (
            "nothing matches the pattern"
            if _GLOB.search(path)
            else "no such file, folder or object"
        )
        raise SourceError(
            f"{uri}: {what}; check the URI (and quote a pattern so the shell passes it on)"
        )
    for info in found:
        if _info_kind(info) == "d":
            yield from _walk(filesystem, prefix, info.path, skipped)
        else:
            yield FileEntry(prefix + info.path, False, info.size)


def _expand(filesystem: Any, path: str) -> list[Any]:
    """Every file or folder matching ``path``'s glob components, in sorted tree order."""
    parts = path.split("/")
    first = next(i for i, p in enumerate(parts) if _GLOB.search(p))
    heads = ["/".join(parts[:first]) or "/"]
    for i in range(first, len(parts)):
        part, last = parts[i], i == len(parts) - 1
        nxt: list[Any] = []
        for head in heads:
            if not _GLOB.search(part):
                nxt.append(f"{head.rstrip('/')}/{part}")
                continue
            listing = (
                []
                if _info_kind(filesystem.get_file_info(head)) != "d"
                else _listing(filesystem, head, False)
            )
            for info in sorted(listing, key=lambda f: f.base_name):
                name = info.base_name
                if name.startswith(".") and not part.startswith("."):
                    continue  # as the shell: * does not match hidden names
                if fnmatch.fnmatchcase(name, part) and (last or _info_kind(info) == "d"):
                    nxt.append(info.path)
        heads = nxt
    return list(filesystem.get_file_info(heads)) if heads else []


def _walk(
    filesystem: Any, prefix: str, root: str, skipped: list[str] | None
) -> Iterator[FileEntry | SourceProblem]:
    """A folder of a store, by the local walker's rules, from one recursive listing."""
    try:
        listing = _listing(filesystem, root, True)
    except OSError as exc:
        yield SourceProblem(
            prefix + root, "unreadable", f"listing: {str(exc).splitlines()[0][:300]}"
        )
        return
    tree: dict[str, dict[str, Any]] = {}  # folder -> name -> FileInfo (None: a folder)
    for info in listing:
        parent, _, name = info.path.rpartition("/")
        tree.setdefault(parent, {})[name] = None if _info_kind(info) == "d" else info
        while parent != root and parent.startswith(root):  # keys imply their "folders"
            up, _, dname = parent.rpartition("/")
            tree.setdefault(up, {}).setdefault(dname, None)
            parent = up
    yield from _Tree(tree, prefix, skipped).walk(root)


@dataclass(slots=True)
class _Tree:
    """The rules of ``maildir.walk`` over a listed tree (stores have no links or devices)."""

    tree: dict[str, dict[str, Any]]
    prefix: str
    skipped: list[str] | None

    def _skip(self, path: str) -> None:
        if self.skipped is not None:
            self.skipped.append(self.prefix + path)

    def walk(self, folder: str) -> Iterator[FileEntry | SourceProblem]:
        children = self.tree.get(folder, {})
        if all(part in children and children[part] is None for part in MAILDIR_PARTS):
            yield from self._maildir(folder, children)
            return
        for name in sorted(children):
            path, info = f"{folder}/{name}", children[name]
            if name.startswith(".") or (info is not None and is_not_mail_name(name)):
                self._skip(path)
            elif info is None:
                yield from self.walk(path)
            else:
                yield FileEntry(self.prefix + path, False, info.size)

    def _maildir(
        self, folder: str, children: dict[str, Any]
    ) -> Iterator[FileEntry | SourceProblem]:
        for part in MAILDIR_PARTS:
            sub = f"{folder}/{part}"
            for name, info in sorted(self.tree.get(sub, {}).items()):
                if name.startswith(".") or info is None:
                    self._skip(f"{sub}/{name}")
                else:
                    yield FileEntry(f"{self.prefix}{sub}/{name}", True, info.size)
        for name in sorted(children):
            path, info = f"{folder}/{name}", children[name]
            if name in MAILDIR_PARTS:
                continue
            if name.startswith(".") and info is None:
                yield from self.walk(path)  # Maildir++ folder (.Junk, .Sent, ...)
            elif name == "tmp" and info is None:
                for inner in sorted(self.tree.get(path, {})):
                    self._skip(f"{path}/{inner}")
            else:
                self._skip(path)
