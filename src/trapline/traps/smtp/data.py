"""Receiving DATA in pieces: the end-of-data mark, dot-unstuffing and the limits, as a stream.

RFC 5321 §4.1.1.4 / §4.5.2: the message ends at a line holding a lone ``.``; a line that starts
with ``.`` had one more added by the sender, which the receiver removes. ``DataDecoder`` does
that over arbitrary pieces of the byte stream, so a message never has to be held whole: it
gives back the content of each piece (to be written to the spool file) and holds back at most
the four bytes that might still turn out to be the end mark. ``decode_plain`` says the same
thing line by line over a whole message (aiosmtpd's way); the tests hold one to the other.

``receive`` reads a session's DATA through a ``DataDecoder`` without ever reading past the end
mark (pipelined commands after it stay in the reader for the session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

END = b"\r\n.\r\n"  # a lone dot on a line, with the CRLF that ends the line before it
OK, TOO_MUCH, TOO_LONG = "ok", "too-much", "too-long"


def _partial_end(tail: bytes) -> int:
    """Length of the longest proper prefix of ``END`` that ``tail`` ends with (0 if none)."""
    for n in range(len(END) - 1, 0, -1):
        if tail.endswith(END[:n]):
            return n
    return 0


@dataclass
class DataDecoder:
    """Turns the raw DATA stream, fed in pieces of any size, into message content.

    ``size_limit`` counts raw bytes before the end mark (aiosmtpd's rule); ``line_limit`` a
    line's bytes with its CRLF. Past either limit ``state`` says which came first and no more
    content is given back, but the stream is still followed to its end mark."""

    size_limit: int | None
    line_limit: int
    received: int = 0  # raw bytes before the end mark
    state: str = OK
    done: bool = False
    _before: bytes = b"\r\n"  # the last two raw content bytes (DATA starts on a fresh line)
    _held: bytes = b""  # raw bytes that may still be the start of the end mark
    _line: int = 0  # bytes of the current line so far

    @property
    def at_risk(self) -> bool:
        """True when the end mark may begin in bytes already taken: read on byte by byte."""
        return bool(_partial_end(self._before + self._held))

    def feed(self, raw: bytes) -> bytes:
        """The content in ``raw`` (dot-unstuffed); sets ``done`` at the end mark, which must be
        the last thing fed."""
        if self.done:
            raise ValueError("DATA already ended")
        pending = self._held + raw
        joined = self._before + pending
        end = joined.find(END)
        if end >= 0:
            if end + len(END) != len(joined):
                raise ValueError("bytes fed past the end of DATA")
            content, self._held, self.done = joined[len(self._before) : end + 2], b"", True
        else:
            keep = min(_partial_end(joined), len(pending))
            content, self._held = pending[: len(pending) - keep], pending[len(pending) - keep :]
        return self._content(content)

    def _content(self, raw: bytes) -> bytes:
        before, self._before = self._before, (self._before + raw)[-2:]
        was, self.received = self.received, self.received + len(raw)
        if self.state != OK or not raw:
            return b""
        # Whichever limit the stream crosses first wins (at the same byte, the line length).
        too_long = self._too_long_at(before[-1:] + raw)
        too_much = (
            self.size_limit - was if self.size_limit and self.received > self.size_limit else None
        )
        if too_long is not None and (too_much is None or too_long <= too_much):
            self.state = TOO_LONG
        elif too_much is not None:
            self.state = TOO_MUCH
        else:  # each CRLF followed by a dot starts a line with a stuffed dot (RFC 5321 §4.5.2)
            return (before + raw).replace(b"\r\n.", b"\r\n")[len(before) :]
        return b""

    def _too_long_at(self, view: bytes) -> int | None:
        """Where in ``view[1:]`` a line first passes ``line_limit`` (None: nowhere), tracking
        the current line's length; ``view[0]`` is the byte before, for a CRLF split by a read."""
        start = 1 - self._line  # where the current line began, in view's offsets
        while len(view) - start > self.line_limit:  # only then can a line in view be too long
            cr = view.find(b"\r\n", max(start, 0))
            if cr < 0 or cr + 2 - start > self.line_limit:
                return start + self.line_limit - 1
            start = cr + 2
        last = view.rfind(b"\r\n", max(start, 0))
        self._line = len(view) - (last + 2 if last >= 0 else start)
        return None


def decode_plain(raw: bytes, size_limit: int | None, line_limit: int) -> tuple[str, bytes]:
    """(state, content) of a whole DATA stream ending in the end mark, line by line."""
    content, received, state = [], 0, OK
    for line in (line + b"\r\n" for line in raw.split(b"\r\n")[:-1]):
        if line == b".\r\n":
            break
        if state == OK:
            too_long = line_limit if len(line) > line_limit else None
            over = received + len(line) - (size_limit or 0)
            too_much = size_limit - received if size_limit and over > 0 else None
            if too_long is not None and (too_much is None or too_long <= too_much):
                state = TOO_LONG
            elif too_much is not None:
                state = TOO_MUCH
        received += len(line)
        content.append(line[1:] if line.startswith(b".") else line)
    return state, (b"".join(content) if state == OK else b"")


async def receive(
    reader: asyncio.StreamReader,
    decoder: DataDecoder,
    sink: Callable[[bytes], None],
    piece: int = 64 * 1024,
) -> None:
    """Read DATA until its end mark, giving the content to ``sink`` at most ``piece`` bytes at
    a time (plus the end mark).

    ``readuntil`` stops at the end mark, never past it; when the mark is not within the reader's
    limit it says how much is safe to take, of which we take up to ``piece``."""
    while not decoder.done:
        if decoder.at_risk:
            raw = await reader.readexactly(1)
        else:
            try:
                raw = await reader.readuntil(END)
            except asyncio.LimitOverrunError as exc:
                raw = await reader.read(min(exc.consumed, piece))
        content = decoder.feed(raw)
        if content:
            sink(content)
