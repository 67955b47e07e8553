"""Claude Code's stream-json output: framing bytes into lines and parsing events (what they add
up to is `emdx.agent.progress`).

Unknown event types are kept (newer CLIs add them); malformed lines are kept and counted. Nothing
the agent prints can crash the parser.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from emdx import jsonio, settings
from emdx.masking import Masker

MAX_LINE_BYTES = settings.DEFAULT_LINE_MAX_BYTES
# What a malformed line keeps of its text (characters, after masking).
MALFORMED_TEXT_CHARS = 2000


def line_max_bytes() -> int:
    """The per-line cap of the agent's stdout (see `settings.line_max_bytes`)."""
    return settings.line_max_bytes()


class LineFramer:
    """Split a byte stream into `\\n`-terminated lines, holding at most MAX_LINE_BYTES of a line."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_line
        self._overflowed = False
        self.truncated = 0
        self.dropped_bytes = 0
        self.last_cut = False  # whether the line just returned lost its end to the cap

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._hold(chunk[start:])
                return
            self._hold(chunk[start:end])
            yield self._take()
            start = end + 1

    def flush(self) -> Iterator[bytes]:
        if self._parts or self._size:
            yield self._take()

    def _hold(self, piece: bytes) -> None:
        if not piece:
            return
        room = self._max - self._size
        if room <= 0:
            self._overflowed = True
            self.dropped_bytes += len(piece)
            return
        if len(piece) > room:
            self.dropped_bytes += len(piece) - room
            piece = piece[:room]
            self._overflowed = True
        self._parts.append(piece)
        self._size += len(piece)

    def _take(self) -> bytes:
        line = b"".join(self._parts)
        self.last_cut = self._overflowed
        if self._overflowed:
            self.truncated += 1
            self._overflowed = False
        self._parts = []
        self._size = 0
        return line


@dataclass(frozen=True)
class StreamEvent:
    """One line of agent output. `kind` is the event's `type`, or "malformed". `masked`: `data`
    is the line's JSON with secrets masked, no longer the line's text as printed."""

    kind: str
    subtype: str | None
    data: dict[str, Any] | None
    text: str | None = None
    masked: bool = False

    @property
    def is_result(self) -> bool:
        return self.kind == "result" and self.data is not None


def parse_line(line: bytes, masker: Masker | None = None) -> StreamEvent | None:
    """One stream-json line as an event; None for a blank line. With a `masker`, the event
    holds no secret: everything derived from it (row fields, summaries, the log) is masked."""
    stripped = line.strip()
    if not stripped:
        return None
    try:
        data = jsonio.loads(stripped)
    except ValueError:
        return _malformed(stripped, masker)
    if not isinstance(data, dict):
        return _malformed(stripped, masker)
    masked = False
    if masker is not None and masker.might_contain(stripped):
        data, masked = masker.mask_obj(data), True
    kind = data.get("type")
    subtype = data.get("subtype")
    return StreamEvent(
        kind if isinstance(kind, str) and kind else "unknown",
        subtype if isinstance(subtype, str) else None,
        data,
        masked=masked,
    )


def _malformed(stripped: bytes, masker: Masker | None) -> StreamEvent:
    if not masker:
        text = stripped[:MALFORMED_TEXT_CHARS].decode("utf-8", "replace")
        return StreamEvent("malformed", None, None, text)
    # Masked before the cut, so a secret across the cut is still whole when it is looked for;
    # the window holds every character a secret starting before the cut can span (UTF-8: at
    # most 4 bytes a character).
    window = stripped[: 4 * (MALFORMED_TEXT_CHARS + masker.longest + 1)]
    # A malformed line is often one a line cap cut: its end may start a secret.
    text = masker.mask_cut(window.decode("utf-8", "replace"), MALFORMED_TEXT_CHARS, cut=True)
    return StreamEvent("malformed", None, None, text, masked=True)
