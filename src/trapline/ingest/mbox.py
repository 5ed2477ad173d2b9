"""Split a stream of bytes into messages at mbox ``From `` separator lines, in flat memory.

An mbox (RFC 4155) is messages laid end to end, each introduced by a postmark line
``From <envelope-sender> <asctime date>`` that sits at the start of the file or after a blank
line. We accept a separator only when it matches a strict postmark pattern, so a body line such as
``From the desk of ...`` never splits a message, whatever the writer did about quoting.

Which bytes a message gets (the usual convention, as Python's :mod:`mailbox` and mutt do):
the text after the postmark line up to, not including, the blank line that precedes the next
postmark (CRLF or LF, whichever the file uses). The postmark line itself is not part of the
message: it was written by the local delivery agent, not sent by the spammer.

Where mutt and Python's :mod:`mailbox` agree, we agree: a strict postmark line splits even when
the writer left no blank line before it (the message before it then ends at the postmark). Where
they disagree (Python splits at any ``From `` line, mutt only at a valid postmark) we keep the
line inside the message and mark the message ``mbox-suspected-merge``, as we do both messages
around a separator without its blank line: the reader can see which bounds are in doubt.

Quoting: we undo mboxrd quoting (``>From `` -> ``From ``, ``>>From `` -> ``>From ``; one ``>``
removed from any line matching ``^>+From ``). For an mboxrd file this restores the exact bytes
that were delivered. For an mboxo file it restores every line that was ``From `` on arrival, and
only mangles a line that arrived as ``>From `` (a quoted reply of a postmark; rare in spam). The
file cannot tell us which dialect it is, and mboxrd unquoting is right for the common cases, so the
same spam read from an mbox and caught by the SMTP trap gets the same id. ``unquote=False`` keeps
the bytes exactly as they sit in the file.

``mode="auto"`` is for files whose name does not say mbox: such a file is an mbox only when it
starts with ``From `` AND a second valid separator follows. Otherwise the whole input is ONE
message and is returned byte for byte, postmark line included (the SpamAssassin corpus stores one
message per file that way). ``mode="mbox"`` trusts the name: the first line is a separator even
when it is not a strict postmark, and a file with no separator at all is one message.

Content-Length headers (mboxcl/mboxcl2) are not trusted: spam forges them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Literal

from trapline.model import RawMessage, SourceProblem

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20  # bigger "messages" are junk or attacks; say so, skip them
MAX_POSTMARK = 1000  # a postmark line longer than this is body text, not a separator
_NEEDLE = b"\nFrom "

# RFC 4155 §2 / asctime(3): "From sender Day Mon dd hh:mm[:ss] [zone] yyyy [extra]". The sender may
# be empty ("From  Sun ...") and some writers add a zone or "remote from host"; all allowed.
_POSTMARK = re.compile(
    rb"From \S*[ \t]+"
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?[ \t]+"
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[ \t]+\d{1,2},?[ \t]+"
    rb"\d{1,2}:\d{2}(?::\d{2})?[ \t]+"
    rb"(?:(?:[A-Za-z]{1,5}|[+-]\d{4})[ \t]+)?"
    rb"\d{4}\b.*\Z",
    re.DOTALL,
)
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
# Defect on a message whose bounds the file leaves in doubt: it holds an unquoted "From " line
# that is not a postmark, or a neighbouring postmark had no blank line before it.
SUSPECTED_MERGE = "mbox-suspected-merge"

Mode = Literal["auto", "mbox"]


def is_postmark(line: bytes) -> bool:
    """Whether ``line`` (without its line ending) is a strict mbox ``From `` separator."""
    return len(line) <= MAX_POSTMARK and _POSTMARK.match(line.rstrip(b"\r")) is not None


def unquote_mboxrd(data: bytes) -> bytes:
    """Remove one ``>`` from every line matching ``^>+From `` (mboxrd, as in qmail's mbox(5))."""
    if b">From " not in data:
        return data
    return _QUOTED_FROM.sub(rb"\1", data)


def split_mbox(
    chunks: Iterable[bytes],
    source: str,
    *,
    mode: Mode = "auto",
    unquote: bool = True,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Iterator[RawMessage | SourceProblem]:
    """Messages in ``chunks`` as they are found; see the module docstring for the rules.

    Sources are ``source`` for a whole-input message and ``source#N`` (0-based) for mbox items.
    Memory stays within about one message plus one chunk. Exceptions raised by ``chunks``
    (truncated archive, read error) propagate after the messages completed before them.
    """
    return _Splitter(source, mode, unquote, max_message_bytes).run(iter(chunks))


class _Splitter:
    """State for one input; a class only to keep ``run`` readable."""

    def __init__(self, source: str, mode: Mode, unquote: bool, limit: int) -> None:
        self.source = source
        self.mode = mode
        self.unquote = unquote
        self.limit = limit
        self.buf = bytearray()
        self.index = 0  # next mbox item number
        self.seps = 0  # separators found after the first line
        self.dropped = 0  # bytes of the current message discarded because it is too large
        self.suspect = False  # the current message's bounds may be wrong (see SUSPECTED_MERGE)

    def run(self, chunks: Iterator[bytes]) -> Iterator[RawMessage | SourceProblem]:
        buf = self.buf
        # Read until the first line is complete (or EOF) to see whether it is a postmark.
        eof = False
        while b"\n" not in buf and len(buf) <= MAX_POSTMARK:
            chunk = next(chunks, None)
            if chunk is None:
                eof = True
                break
            buf += chunk
        if not buf:
            yield SourceProblem(self.source, "empty-file", "the input holds no bytes")
            return
        # A first line longer than any postmark is not one (a 10 MB single-line file, say);
        # the bound also makes the answer independent of how the input was chunked.
        first_eol = buf.find(b"\n")
        starts_with_from = buf.startswith(b"From ") and 0 <= first_eol <= MAX_POSTMARK
        if self.mode == "auto" and not starts_with_from:
            yield from self._whole(chunks, eof)
            return
        # msg_start: where the current message's content begins (after its postmark line).
        # (msg_start 0: a named mbox without a leading postmark starts with a preamble message.)
        msg_start = first_eol + 1 if starts_with_from else 0
        scan = msg_start
        while True:
            i = buf.find(_NEEDLE, scan)
            if i < 0:
                scan = max(scan, len(buf) - len(_NEEDLE) + 1)
                if len(buf) - msg_start > self.limit:
                    cut = max(msg_start, scan - 2)
                    self.dropped += cut - msg_start
                    del buf[:cut]
                    scan -= cut
                    msg_start = 0
                if eof:
                    break
                chunk = next(chunks, None)
                if chunk is None:
                    eof = True
                else:
                    buf += chunk
                continue
            j = i + 1  # start of the candidate postmark line
            blank = _blank_line_before(buf, i, msg_start)
            end = buf.find(b"\n", j)
            if end < 0:
                if len(buf) - j <= MAX_POSTMARK and not eof:
                    chunk = next(chunks, None)
                    if chunk is None:
                        eof = True
                    else:
                        buf += chunk
                    continue
                scan = j
                continue
            if not is_postmark(bytes(buf[j:end])):
                # Python's mailbox would split here and mutt would not; keep the line, but an
                # unquoted "From " line is what two run-together messages look like.
                self.suspect = True
                scan = j
                continue
            # A real separator: the message ends before the blank line, or, when the writer left
            # none (mutt and Python's mailbox both split there too), at the postmark itself.
            if not blank:
                self.suspect = True
            content_end = i + 1 - blank
            self.seps += 1  # in auto mode, a second postmark is what makes the input an mbox
            content = _copy(buf, msg_start, content_end)
            if self.seps > 1 or starts_with_from or content.strip():
                yield from self._emit(content)  # (a blank preamble before the first one is not)
            self.suspect = not blank  # the next message's start is as uncertain as this end
            del buf[: end + 1]
            msg_start = scan = 0
        yield from self._finish(msg_start, starts_with_from)

    def _emit(self, content: bytes) -> Iterator[RawMessage | SourceProblem]:
        """One mbox item (its content already cut out of the buffer)."""
        name = f"{self.source}#{self.index}"
        self.index += 1
        size = self.dropped + len(content)
        self.dropped = 0
        if size > self.limit:
            yield SourceProblem(name, "too-large", f"{size} bytes > limit {self.limit}; skipped")
            return
        suspect, self.suspect = self.suspect, False
        if not content:
            yield SourceProblem(name, "empty-message", "nothing between two From lines")
            return
        data = unquote_mboxrd(content) if self.unquote else content
        yield RawMessage(data, name, defects=(SUSPECTED_MERGE,) if suspect else ())

    def _finish(
        self, msg_start: int, starts_with_from: bool
    ) -> Iterator[RawMessage | SourceProblem]:
        """The last message at EOF."""
        buf = self.buf
        if self.seps == 0 and (self.mode == "auto" or not starts_with_from):
            # auto mode with one postmark only, or a named mbox without any separator: the
            # whole input is one message, byte for byte.
            yield from self._whole_from_buffer()
            return
        content = _copy(buf, msg_start, len(buf))
        # The blank line written before the next postmark is absent at EOF, but most writers
        # end the file with one; drop it as the separator it is meant to be (Python's mailbox
        # does the same).
        if content.endswith(b"\r\n\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n\n"):
            content = content[:-1]
        yield from self._emit(content)

    def _whole_from_buffer(self) -> Iterator[RawMessage | SourceProblem]:
        size = self.dropped + len(self.buf)
        if size > self.limit:
            yield SourceProblem(
                self.source, "too-large", f"{size} bytes > limit {self.limit}; skipped"
            )
            return
        yield RawMessage(bytes(self.buf), self.source)

    def _whole(self, chunks: Iterator[bytes], eof: bool) -> Iterator[RawMessage | SourceProblem]:
        """Not an mbox: read everything as one message (bounded by the size limit)."""
        buf = self.buf
        while not eof:
            chunk = next(chunks, None)
            if chunk is None:
                break
            if self.dropped or len(buf) + len(chunk) > self.limit:  # too large: count only
                self.dropped += len(buf) + len(chunk)
                buf.clear()
                continue
            buf += chunk
        yield from self._whole_from_buffer()


def _copy(buf: bytearray, start: int, end: int) -> bytes:
    """``bytes(buf[start:end])`` with one copy instead of two (no intermediate bytearray)."""
    with memoryview(buf) as view:
        return bytes(view[start:end])


def _blank_line_before(buf: bytearray, i: int, msg_start: int) -> int:
    """Length of the blank line ending at ``buf[i]`` (1 for LF, 2 for CRLF), else 0.

    ``buf[i]`` is the newline that ends the line before a candidate postmark. That line is blank
    when it begins right after another newline (or at the message's start).
    """
    if i >= msg_start and (i == 0 or buf[i - 1] == 0x0A):
        return 1
    if i - 1 >= msg_start and buf[i - 1] == 0x0D and (i - 1 == 0 or buf[i - 2] == 0x0A):
        return 2
    return 0
