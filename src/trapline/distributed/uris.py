"""Inputs given as URIs (``s3a://``, ``gs://``, ``hdfs://``, ``file://``): listing and globs.

A URI names a file, a folder (a key prefix) or a glob (``*``, ``?``, ``[..]`` in any path
component, ``s3a://b/spam/2008-*/*.mbox.gz``). The driver expands it here by listing with
pyarrow and matching each component with ``fnmatch`` (hidden names only when the pattern asks
for them, as the shell does); folders are walked with the local walker's rules
(:mod:`trapline.ingest.maildir`: sorted names, Maildirs, non-mail names skipped). Entries carry
the URI as given, so tasks open it themselves (:func:`trapline.objectstores.open_input`) and
sources name it. Which filesystem a URI lives on, and how to reach it, is
:mod:`trapline.objectstores`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trapline.errors import SourceError
from trapline.ingest.maildir import MAILDIR_PARTS, FileEntry, is_not_mail_name
from trapline.model import SourceProblem
from trapline.objectstores import GLOB, ObjectStores, locate, parse_uri


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
    prefix = parse_uri(uri)[3]
    try:
        matches = (
            _expand(filesystem, path) if GLOB.search(path) else [filesystem.get_file_info(path)]
        )
    except OSError as exc:
        raise SourceError(
            f"{uri}: cannot list it ({str(exc).splitlines()[0][:300]}); check the URI and the credentials"
        ) from exc
    found = [m for m in matches if _info_kind(m) != "-"]
    if not found:
        what = (
            "nothing matches the pattern" if GLOB.search(path) else "no such file, folder or object"
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
    first = next(i for i, p in enumerate(parts) if GLOB.search(p))
    heads = ["/".join(parts[:first]) or "/"]
    for i in range(first, len(parts)):
        part, last = parts[i], i == len(parts) - 1
        nxt: list[Any] = []
        for head in heads:
            if not GLOB.search(part):
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
