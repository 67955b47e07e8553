"""Claude Code's stream-json output: framing bytes into lines, parsing events, tracking progress.

Unknown event types are kept (newer CLIs add them); malformed lines are kept and counted. Nothing
the agent prints can crash the parser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from emdx.masking import Masker

# A line longer than this is cut: the agent can print anything, the supervisor's memory is bounded.
MAX_LINE_BYTES = 16 * 1024 * 1024
# What a malformed line keeps of its text (characters, after masking).
MALFORMED_TEXT_CHARS = 2000


def line_max_bytes() -> int:
    """The per-line cap of the agent's stdout (EMDX_LINE_MAX_BYTES, default 16 MiB)."""
    try:
        value = int(os.environ.get("EMDX_LINE_MAX_BYTES", MAX_LINE_BYTES))
    except ValueError:
        return MAX_LINE_BYTES
    return value if value > 0 else MAX_LINE_BYTES


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
        data = json.loads(stripped)
    except (ValueError, RecursionError):
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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, int | float) else None


@dataclass
class Progress:
    """What the row shows while a run goes: updated from every event."""

    session_id: str | None = None
    model: str | None = None
    num_turns: int | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    event_count: int = 0
    malformed_count: int = 0
    result: dict[str, Any] | None = None
    tool_uses: dict[str, int] = field(default_factory=dict)
    _assistant_turns: int = 0
    _in_tokens: int = 0
    _out_tokens: int = 0

    def update(self, event: StreamEvent) -> None:
        self.event_count += 1
        if event.kind == "malformed":
            self.malformed_count += 1
            return
        data = event.data or {}
        session = data.get("session_id")
        if isinstance(session, str) and session:
            self.session_id = session
        if event.kind == "system" and event.subtype == "init":
            model = data.get("model")
            if isinstance(model, str):
                self.model = model
        elif event.kind == "assistant":
            self._on_assistant(data)
        elif event.is_result:
            self._on_result(data)

    def _on_assistant(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if not isinstance(message, dict):
            return
        self._assistant_turns += 1
        if self.result is None:
            self.num_turns = self._assistant_turns
        model = message.get("model")
        if isinstance(model, str) and model and not self.model:
            self.model = model
        usage = message.get("usage")
        if isinstance(usage, dict) and self.result is None:
            self._in_tokens += _int(usage.get("input_tokens")) or 0
            self._out_tokens += _int(usage.get("output_tokens")) or 0
            self.input_tokens, self.output_tokens = self._in_tokens, self._out_tokens
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                name = str(block.get("name") or "?")
                self.tool_uses[name] = self.tool_uses.get(name, 0) + 1

    def _on_result(self, data: dict[str, Any]) -> None:
        self.result = data
        self.num_turns = _int(data.get("num_turns")) or self.num_turns
        cost = _float(data.get("total_cost_usd"))
        if cost is None:
            cost = _float(data.get("cost_usd"))
        if cost is not None:
            self.cost_usd = cost
        usage = data.get("usage")
        if isinstance(usage, dict):
            tokens_in = _int(usage.get("input_tokens"))
            if tokens_in is not None:
                # Cached prompt tokens are still input the run consumed.
                tokens_in += (_int(usage.get("cache_read_input_tokens")) or 0) + (
                    _int(usage.get("cache_creation_input_tokens")) or 0
                )
                self.input_tokens = tokens_in
            tokens_out = _int(usage.get("output_tokens"))
            if tokens_out is not None:
                self.output_tokens = tokens_out

    def row_fields(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "model": self.model,
            "num_turns": self.num_turns,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "event_count": self.event_count,
            "malformed_count": self.malformed_count,
        }
