"""Walk directories for mail files: plain trees and Maildirs, lazily and in a stable order.

A directory holding ``cur/`` and ``new/`` is a Maildir: every file in ``cur`` then ``new`` is
exactly one message (never split, whatever it starts with); ``tmp/`` holds deliveries still being
written and is skipped; Maildir++ ``.Folder`` subfolders are walked; index and marker files
(``dovecot-uidlist``, ``maildirfolder``) are skipped. Any other directory is walked recursively
in sorted name order, skipping files that are obviously not mail and hidden files.

The walk is a generator holding one directory listing per level (names only), not a list of
every file: a trap's Maildir of millions of messages costs memory for its names once, while they
are sorted, and nothing per file after that. Skipped paths are appended to a caller's list so
the run can say how many it passed over.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from trapline.model import SourceProblem

# Names that are documentation or metadata next to a corpus, compared lowercased.
_SKIP_PREFIXES = ("readme", "license", "licence", "copying", "notice", "commit", "source.")
_SKIP_NAMES = frozenset({"package.json", "package-lock.json", "cmds", "makefile", "manifest"})
_SKIP_SUFFIXES: tuple[str, ...] = (
    *(".md", ".rst", ".json", ".py", ".sh", ".sha256", ".md5", ".asc", ".sig"),
    ".msf",  # Thunderbird's index beside each mbox
    ".lock",  # mutt/procmail lock files
)
MAILDIR_PARTS = ("cur", "new")
_DIR, _FILE, _LINK, _OTHER = "d", "f", "l", "o"
_SPECIAL = {
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


@dataclass(slots=True, frozen=True)
class FileEntry:
    """A file to read and what its location already tells us about its format."""

    path: str
    single: bool  # one message per file by definition (Maildir): never split at From lines
    size: int | None  # None: not a regular file (a pipe such as <(zcat x)): size unknown


def is_not_mail_name(name: str) -> bool:
    """Whether a file found while walking a directory is obviously not a message."""
    lower = name.lower()
    return (
        lower.startswith(".")
        or lower in _SKIP_NAMES
        or lower.startswith(_SKIP_PREFIXES)
        or lower.endswith(_SKIP_SUFFIXES)
    )


def file_entry(path: str, *, single: bool = False) -> FileEntry | SourceProblem:
    """A :class:`FileEntry` with the file's size, or the reason it cannot be looked at."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return SourceProblem(
            display_name(path), "unreadable", f"{exc.strerror or exc}; check permissions"
        )
    return FileEntry(path, single, info.st_size if stat.S_ISREG(info.st_mode) else None)


def walk(
    directory: str, skipped: list[str] | None = None, *, follow_symlinks: bool = False
) -> Iterator[FileEntry | SourceProblem]:
    """Mail files under ``directory`` in a stable order; unreadable directories as problems.

    Symbolic links are read only when they stay inside ``directory`` (a link out of it, to
    ``/etc/shadow`` say, is a ``symlink-outside`` problem) unless ``follow_symlinks``; dangling
    links, loops, fifos, sockets and devices are problems too, never silently passed over.
    """
    yield from _Walker(directory, skipped, follow_symlinks).walk(directory)


class _Walker:
    """One directory walk: its root, its symlink policy, and the directories already entered."""

    def __init__(self, root: str, skipped: list[str] | None, follow: bool) -> None:
        self.root = os.path.realpath(root)
        self.skipped = skipped
        self.follow = follow
        self.entered: set[tuple[int, int]] = set()  # (device, inode) of walked directories

    def walk(self, directory: str) -> Iterator[FileEntry | SourceProblem]:
        try:
            info = os.stat(directory)
        except OSError:
            info = None
        if info is not None:
            key = (info.st_dev, info.st_ino)
            if key in self.entered:  # only reachable through a followed link
                yield SourceProblem(
                    display_name(directory), "symlink-loop", "directory already walked"
                )
                return
            self.entered.add(key)
        listing = _list(directory)
        if isinstance(listing, SourceProblem):
            yield listing
            return
        kinds = dict(listing)
        if all(kinds.get(part) == _DIR for part in MAILDIR_PARTS):
            yield from self._maildir(directory, listing)
            return
        for name, kind in listing:
            path = os.path.join(directory, name)
            if name.startswith("."):
                _skip(self.skipped, path)
            elif kind == _DIR:
                yield from self.walk(path)
            elif kind in (_FILE, _LINK) and is_not_mail_name(name):
                _skip(self.skipped, path)
            else:
                yield from self._entry(path, kind, single=False)

    def _entry(self, path: str, kind: str, *, single: bool) -> Iterator[FileEntry | SourceProblem]:
        if kind == _FILE:
            yield file_entry(path, single=single)
        elif kind == _LINK:
            yield from self._link(path, single=single)
        else:
            yield _special(path)

    def _link(self, path: str, *, single: bool) -> Iterator[FileEntry | SourceProblem]:
        name = display_name(path)
        try:
            info = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                yield SourceProblem(name, "symlink-loop", "the link points back at itself")
            else:
                target = os.readlink(path) if os.path.islink(path) else "?"
                yield SourceProblem(
                    name, "dangling-symlink", f"points to {display_name(target)}, which is gone"
                )
            return
        real = os.path.realpath(path)
        inside = real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)
        if not inside and not self.follow:
            yield SourceProblem(
                name,
                "symlink-outside",
                f"points outside {display_name(self.root)} (to {display_name(real)}); "
                "not read: pass --follow-symlinks to read links out of the tree",
            )
        elif stat.S_ISDIR(info.st_mode):
            if self.follow:
                yield from self.walk(path)
            else:
                _skip(self.skipped, path)  # inside the tree: walked where it really is
        elif stat.S_ISREG(info.st_mode):
            yield FileEntry(path, single, info.st_size)
        else:
            yield _special(path, info)

    def _maildir(
        self, root: str, listing: list[tuple[str, str]]
    ) -> Iterator[FileEntry | SourceProblem]:
        for part in MAILDIR_PARTS:
            sub = os.path.join(root, part)
            files = _list(sub)
            if isinstance(files, SourceProblem):
                yield files
                continue
            for name, kind in files:
                path = os.path.join(sub, name)
                if name.startswith(".") or kind == _DIR:
                    _skip(self.skipped, path)
                else:
                    yield from self._entry(path, kind, single=True)
        for name, kind in listing:
            path = os.path.join(root, name)
            if name in MAILDIR_PARTS:
                continue
            if name.startswith(".") and kind == _DIR:
                yield from self.walk(path)  # Maildir++ folder (.Junk, .Sent, ...)
            elif name == "tmp" and kind == _DIR:
                inner = _list(path)
                if not isinstance(inner, SourceProblem):
                    for tmp_name, _kind in inner:
                        _skip(self.skipped, os.path.join(path, tmp_name))
            else:  # dovecot index files, maildirfolder marker, ...
                _skip(self.skipped, path)


def _special(path: str, info: os.stat_result | None = None) -> SourceProblem:
    """A problem for a fifo, socket or device met while walking (reading one could block)."""
    try:
        mode = (info or os.lstat(path)).st_mode
    except OSError as exc:
        return SourceProblem(display_name(path), "unreadable", f"{exc.strerror or exc}")
    kind = _SPECIAL.get(stat.S_IFMT(mode), "special file")
    return SourceProblem(
        display_name(path), "not-a-file", f"a {kind}, not a file; name it on its own to read it"
    )


def display_name(path: str) -> str:
    """``path`` as valid UTF-8 text for reports and the store.

    File names are bytes on POSIX; Python hands undecodable ones over with lone surrogates
    (PEP 383), which no database or JSON encoder accepts. Escape those bytes as ``\\xNN``; the
    original string is still what we open.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace")
    return path


def _skip(skipped: list[str] | None, path: str) -> None:
    if skipped is not None:
        skipped.append(display_name(path))


def _list(directory: str) -> list[tuple[str, str]] | SourceProblem:
    """Sorted (name, kind) pairs; kind from the directory entry, without a stat where possible."""
    try:
        with os.scandir(directory) as it:
            pairs = [(entry.name, _kind(entry)) for entry in it]
    except OSError as exc:
        return SourceProblem(
            display_name(directory),
            "unreadable",
            f"directory: {exc.strerror or exc}; check permissions",
        )
    pairs.sort()
    return pairs


def _kind(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return _LINK
        if entry.is_dir(follow_symlinks=False):
            return _DIR
        if entry.is_file(follow_symlinks=False):
            return _FILE
    except OSError:
        pass
    return _OTHER
