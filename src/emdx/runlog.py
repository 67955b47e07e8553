"""The run log: one JSON object a line in EMDX_HOME/logs/<id>.jsonl, size-capped; and its reader.

Entry fields: `ts` (ISO UTC), `level`, `source` (runner | agent | agent-stderr), `pid`, `type`,
`icon`, `message`, and `raw` (the agent's event as parsed). The one renderer of entries into the
readable lines that `exec show`, foreground runs and the TUI print is `format.log_line`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from emdx import jsonio, paths, settings
from emdx.errors import EmdxError
from emdx.masking import Masker
from emdx.models import now_iso

# Past the cap we still record what decides the outcome and what the runner says.
ALWAYS_KEPT = frozenset({"result", "runner", "malformed-summary"})


class LogWriter:
    """Appends entries; never raises (a full disk must not kill a run): failures are counted.

    Callers mask what they log (`emdx.masking`); the writer checks every encoded line once more
    and re-masks the decoded entry when a secret's trace is found, so a line is never
    byte-edited into invalid JSON."""

    def __init__(self, path: Path, max_bytes: int | None = None, masker: Masker | None = None):
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else settings.log_max_bytes()
        self.masker = masker if masker is not None else Masker()
        self._masking = bool(self.masker)
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self.capped = False
        self._file: IO[bytes] | None = None
        self._stamp_ms = -1
        self._stamp_text = ""
        # The pump, the stderr reader and the row writer's notes share the file.
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        try:
            # Never through a link: an agent may plant one in place of its log (or of logs/).
            fd = paths.open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self._file = os.fdopen(fd, "ab", buffering=256 * 1024)
            self.written = os.fstat(fd).st_size
        except (OSError, EmdxError):
            self._file = None
            self.write_errors += 1

    def _stamp(self) -> str:
        # Formatting a datetime per line is a measurable share of the stream's hot path; lines
        # within the same millisecond share one timestamp.
        now_ms = time.time_ns() // 1_000_000
        if now_ms != self._stamp_ms:
            self._stamp_ms, self._stamp_text = now_ms, now_iso()
        return self._stamp_text

    def _encode(self, entry: dict[str, Any], raw_json: bytes | None) -> bytes:
        line = _dumps(entry)
        if raw_json is not None:
            line = line[:-1] + b', "raw": ' + raw_json.strip() + b"}"
        # Every spelling the masker knows, in the line as written; `raw_json` as such is the
        # caller's (parse_line checks it for escapes too).
        if self._masking and self.masker.holds_variant(line):
            if raw_json is not None:
                entry = {**entry, "raw": _decoded(raw_json)}
            line = _dumps(self.masker.mask_obj(entry))
        return line

    def write(
        self,
        type_: str,
        message: str,
        *,
        level: str = "info",
        source: str = "agent",
        pid: int | None = None,
        icon: str = "",
        raw: Any = None,
        raw_json: bytes | None = None,
    ) -> None:
        """Append one entry (from any thread). `raw_json` is an event's original JSON text,
        spliced in as `raw` without decoding and re-encoding it (the stream's hot path)."""
        with self._lock:
            self._write(type_, message, level, source, pid, icon, raw, raw_json)

    def _write(
        self,
        type_: str,
        message: str,
        level: str,
        source: str,
        pid: int | None,
        icon: str,
        raw: Any,
        raw_json: bytes | None,
    ) -> None:
        if self.capped and type_ not in ALWAYS_KEPT:
            self.dropped += 1
            return
        entry: dict[str, Any] = {
            "ts": self._stamp(),
            "level": level,
            "source": source,
            "pid": pid,
            "type": type_,
            "icon": icon,
            "message": message,
        }
        if raw is not None and not self.capped:
            entry["raw"] = raw
        line = self._encode(entry, None if self.capped else raw_json) + b"\n"
        if not self.capped and self.written + len(line) > self.max_bytes:
            self.capped = True
            note = {
                "ts": now_iso(),
                "level": "warning",
                "source": "runner",
                "pid": os.getpid(),
                "type": "runner",
                "icon": "✂️",
                "message": f"log reached {self.max_bytes} bytes; further events are counted, "
                "not written (results and runner messages still are)",
            }
            self._append(jsonio.dumps(note, ensure_ascii=False).encode() + b"\n")
            if type_ not in ALWAYS_KEPT:
                self.dropped += 1
                return
            entry.pop("raw", None)
            line = self._encode(entry, None) + b"\n"
        self._append(line)

    def _append(self, line: bytes) -> None:
        if self._file is None:
            # The file may have been deleted or the disk was full: try to (re)open each time.
            self._open()
            if self._file is None:
                return
        try:
            self._file.write(line)
            self.written += len(line)
        except OSError:
            self.write_errors += 1
            self._reset()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError:
            self.write_errors += 1
            self._reset()
            return
        if not os.path.lexists(self.path):
            # Deleted under us (a cleanup, a user): recreate it so the rest of the run is visible.
            self._reset()
            self._write(
                "runner",
                "log file was deleted during the run; recreated",
                "warning",
                "runner",
                os.getpid(),
                "⚠️",
                None,
                None,
            )

    def _reset(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file = None

    def close(self) -> None:
        with self._lock:
            self._flush()
            self._reset()


def note_entry(message: str, icon: str = "🛡️") -> dict[str, Any]:
    """A log entry written from outside a run's supervisor (a kill, a repair, a cleanup)."""
    return {
        "ts": now_iso(),
        "level": "warning",
        "source": "emdx",
        "pid": os.getpid(),
        "type": "runner",
        "icon": icon,
        "message": message,
    }


def append_note(path: Path | str | None, message: str, icon: str = "🛡️") -> bool:
    """One line in a run's log from outside its supervisor (a kill, a repair, a cleanup), so
    that a log never just stops; False when it cannot be written (no log, a link, a full
    disk), which never stops what the caller is doing."""
    if not path:
        return False
    entry = note_entry(message, icon)
    try:
        fd = paths.open_private(Path(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except (OSError, EmdxError):
        return False
    try:
        os.write(fd, _dumps(entry) + b"\n")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _dumps(entry: dict[str, Any]) -> bytes:
    try:
        return jsonio.dumps(entry, ensure_ascii=False).encode("utf-8", "replace")
    except (ValueError, TypeError, RecursionError):
        # Nested deeper than the encoder goes (the parser goes further): keep the rest.
        entry = {**entry, "raw": "(too deeply nested to log)"}
        return jsonio.dumps(entry, ensure_ascii=False).encode("utf-8", "replace")


def _decoded(raw_json: bytes) -> Any:
    try:
        return jsonio.loads(raw_json)
    except ValueError:
        return raw_json.decode("utf-8", "replace")


def parse_entry(line: bytes | str) -> dict[str, Any] | None:
    try:
        data = jsonio.loads(line)
    except ValueError:
        # A line an agent appended to its own log (nested deeper than the parser goes) is not
        # an entry; readers skip it.
        return None
    return data if isinstance(data, dict) else None


READ_LINE_MAX = 64 * 1024 * 1024
"""A longer line is not an entry emdx wrote (an event line is capped well below): skipped."""
READ_SLACK = 64 * 1024 * 1024
"""How far past the size cap a log is read (the entries always kept past it)."""
POLL_MAX = 8 * 1024 * 1024


def _read_budget() -> int:
    return settings.log_max_bytes() + READ_SLACK


def _lines(handle: IO[bytes], budget: int) -> Iterator[bytes]:
    """The lines of a log as an agent may have left it: each at most READ_LINE_MAX (a longer one
    is skipped), at most `budget` bytes in all (a log is capped; a file that goes on is not one
    emdx wrote)."""
    skipping = False
    while budget > 0:
        limit = min(READ_LINE_MAX + 1, budget)
        line = handle.readline(limit)
        if not line:
            return
        budget -= len(line)
        complete = line.endswith(b"\n")
        if skipping:
            skipping = not complete
        elif not complete and len(line) > READ_LINE_MAX:
            skipping = True
        else:
            yield line


def read_entries(path: Path, last: int | None = None) -> list[dict[str, Any]]:
    """Entries of a log (the last `last` of them); a missing log — or one that is not a regular
    file (see `paths.open_for_reading`) — is an empty log."""
    try:
        return list(_entries(path, last))
    except OSError:
        return []


def iter_entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every entry of a log, one at a time, in bounded memory; OSError when there is no log to
    read (missing, a link, a FIFO…: callers say so)."""
    yield from _entries(path, None)


def _entries(path: Path, last: int | None) -> Iterator[dict[str, Any]]:
    with paths.open_for_reading(path) as handle:
        lines: Iterator[bytes] = _lines(handle, _read_budget())
        if last:
            lines = iter(deque(lines, maxlen=last))
        for line in lines:
            entry = parse_entry(line)
            if entry is not None:
                yield entry


class LogTail:
    """Incremental reader of a growing log: each `poll()` returns the entries appended since
    (at most POLL_MAX bytes a call; a line longer than READ_LINE_MAX is skipped)."""

    def __init__(self, path: Path, start_at_end: bool = False) -> None:
        self.path = path
        self.position = 0
        self._pending = b""
        self._skipping = False
        if start_at_end:
            try:
                self.position = path.stat().st_size
            except OSError:
                self.position = 0

    def poll(self) -> list[dict[str, Any]]:
        try:
            with paths.open_for_reading(self.path) as handle:
                handle.seek(self.position)
                chunk = handle.read(POLL_MAX)
        except OSError:
            return []
        if not chunk:
            return []
        self.position += len(chunk)
        *lines, pending = (self._pending + chunk).split(b"\n")
        if self._skipping and lines:
            lines, self._skipping = lines[1:], False
        if len(pending) > READ_LINE_MAX:
            pending, self._skipping = b"", True
        self._pending = b"" if self._skipping else pending
        return [e for e in (parse_entry(line) for line in lines) if e is not None]


def follow(
    path: Path,
    until: Callable[[], bool],
    poll_s: float = 0.2,
    start_at_end: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield entries as they are appended, until `until()` is true and the file is drained."""
    tail = LogTail(path, start_at_end)
    while True:
        finished = until()
        entries = tail.poll()
        if entries:
            yield from entries
            continue
        if finished:
            return
        time.sleep(poll_s)
