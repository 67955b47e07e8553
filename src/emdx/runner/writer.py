"""The supervisor's one writer to its row, off the output pump: coalesced progress and heartbeats.

The pump hands over the latest progress fields (`progress()`, never blocking) and goes back to
the agent's output; this thread writes them, and a heartbeat with the supervisor's boot-clock
uptime every interval, each in a short `BEGIN IMMEDIATE` transaction on its own connection. A
locked or full database delays the row, never the log or the agent; a failed write is noted and
retried at the next tick, never fatal.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emdx import paths, runlog
from emdx.errors import EmdxError, NotFoundError
from emdx.models import now_iso, percentile, to_iso
from emdx.store import Store, open_store
from emdx.system.clock import boot_clock

PROGRESS_EVERY_S = 0.5
# Team mode: at most this much of the log is shipped to the team's copy per tick.
SHIP_MAX_BYTES = 2 * 1024 * 1024

# Team mode: the server's clock is read again every this many beats (between two reads, time
# goes on by this host's boot clock: a step of its wall clock changes nothing).
OFFSET_EVERY_BEATS = 30
# Entries written from outside the supervisor (`runlog.note_entry`: source "emdx", right after
# the time and level, which no agent controls) reach the team's copy from their writer.
OUTSIDE_NOTE = b'"source": "emdx"'
OUTSIDE_NOTE_WITHIN = 100

Note = Callable[[str, str, str], None]


class LogShipper:
    """Team mode: the run's log file, complete line by complete line, into the team's copy
    (`execution_events`) that any host reads and follows. Only ever reads the file the
    supervisor writes (opened as a regular file, never through a link)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.offset = 0
        self.failures = 0
        self.skipping = False

    def ship(self, store: Store, budget: int = SHIP_MAX_BYTES) -> int:
        """Ship what was appended since the last call (at most `budget` bytes); returns the
        entries shipped. A failed append is retried from the same place next time."""
        queue = store.queue
        if queue is None:
            return 0
        try:
            with paths.open_for_reading(self.path) as handle:
                handle.seek(self.offset)
                chunk = handle.read(budget)
        except (OSError, EmdxError):
            return 0
        if self.skipping:
            # The rest of an entry too big to ship: only the host's log file has it.
            cut = chunk.find(b"\n")
            self.offset += len(chunk) if cut < 0 else cut + 1
            if cut < 0:
                return 0
            self.skipping = False
            return 1 + self.ship(store, budget)
        end = chunk.rfind(b"\n")
        if end < 0:
            if len(chunk) < budget:
                return 0  # the entry is still being written
            self.skipping = True
            self.offset += len(chunk)
            note = runlog.note_entry(
                f"a log entry over {budget} bytes is only in the log file on its host", "✂️"
            )
            with contextlib.suppress(EmdxError):
                queue.append_events(self.key, [note])
            return 1
        lines = [
            line.decode("utf-8", "replace")
            for line in chunk[: end + 1].splitlines()
            if line and OUTSIDE_NOTE not in line[:OUTSIDE_NOTE_WITHIN]
        ]
        try:
            if lines:
                queue.append_events(self.key, lines)
        except EmdxError:
            self.failures += 1
            return 0
        self.offset += end + 1
        return len(lines)

    def ship_rest(self, store: Store) -> None:
        """Everything left (the supervisor's last entries), in bounded steps."""
        while self.ship(store) > 0:
            pass


class RowWriter:
    def __init__(
        self,
        db: Path | str,
        execution_id: int,
        key: str,
        interval_s: float,
        uptime: Callable[[], float],
        note: Note,
        log_path: Path | None = None,
        on_row_gone: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        # Called once (with why) when the row was finished from outside while we run: a kill
        # that gave up on us, a repair, a host declared lost while its worker was frozen.
        self.on_row_gone = on_row_gone
        self._gone = False
        # Team mode: the server's clock (epoch seconds) at a moment of this host's monotonic
        # clock, as last read.
        self._server_at: tuple[float, float] | None = None
        self.shipper = LogShipper(log_path, key) if log_path is not None else None
        self.id = execution_id
        self.key = key
        self.interval_s = interval_s
        self.uptime = uptime
        self.note = note
        self.beat_ms: list[float] = []
        self.beat_failures = 0
        self._reached_at = time.monotonic()
        self._failing = False
        self._beat_began: float | None = None
        self.write_failures = 0
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="row-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def progress(self, urgent: bool = False, **fields: Any) -> None:
        """Queue fields for the row (the latest value of each wins); `urgent` writes them now
        (an agent pid, which a kill from outside needs)."""
        with self._lock:
            self._pending.update(fields)
        if urgent:
            self._wake.set()

    def stop(self, timeout: float = 5.0) -> dict[str, Any]:
        """Stop the thread (its last write done, if it can be within `timeout`); returns the
        fields it could not write, for the final write to carry."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            left, self._pending = self._pending, {}
        return left

    def unreached_since(self) -> float | None:
        """Since when (monotonic) the database has taken no heartbeat, while beats fail or one
        hangs (a connect that nothing answers); None while it takes them."""
        began = self._beat_began
        if self._failing or (began is not None and time.monotonic() - began > self.interval_s):
            return self._reached_at
        return None

    def report(self) -> dict[str, float | int]:
        beats = sorted(self.beat_ms)

        def pct(p: float) -> float:
            return round(percentile(beats, p) or 0.0, 2)

        return {
            "beats": len(beats),
            "failures": self.beat_failures,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": round(beats[-1], 2) if beats else 0,
        }

    def _run(self) -> None:
        try:
            store = open_store(self.db)
        except EmdxError as exc:
            self.note(f"the row writer cannot open the database: {exc}", "error", "💔")
            return
        try:
            next_beat = time.monotonic() + self.interval_s
            while True:
                now = time.monotonic()
                self._wake.wait(max(0.0, min(PROGRESS_EVERY_S, next_beat - now)))
                self._wake.clear()
                self._flush(store)
                if self.shipper is not None:
                    self.shipper.ship(store)
                if self._stop.is_set():
                    return
                if time.monotonic() >= next_beat:
                    self._beat(store)
                    next_beat = time.monotonic() + self.interval_s
        finally:
            store.close()

    def _flush(self, store: Store) -> None:
        with self._lock:
            fields, self._pending = self._pending, {}
        if not fields:
            return
        try:
            store.executions.update(self.id, key=self.key, only_supervised=True, **fields)
        except EmdxError as exc:
            self.write_failures += 1
            with self._lock:
                # Newer values queued meanwhile win over the ones that failed.
                self._pending = {**fields, **self._pending}
            if self.write_failures == 1 or self.write_failures % 20 == 0:
                self.note(f"progress write failed (will retry): {exc}", "warning", "💾")

    def _beat(self, store: Store) -> None:
        began = time.perf_counter()
        self._beat_began = time.monotonic()
        try:
            taken = store.executions.beat(
                self.id, self.now(store), round(self.uptime(), 3), self.key
            )
            self.beat_ms.append((time.perf_counter() - began) * 1000)
            if self._failing:
                gap = time.monotonic() - self._reached_at
                self.note(f"heartbeats reach the database again after {gap:.0f}s", "info", "💓")
            self._failing = False
            self._reached_at = time.monotonic()
            if not taken:
                self._check_row(store)
        except EmdxError as exc:
            # Never fatal: a missed beat only makes the run look unresponsive for a while (in
            # team mode, an outage the run rides out: said once, not at every beat).
            self.beat_failures += 1
            if not self._failing:
                self._failing = True
                self.note(f"heartbeat write failed (will retry): {exc}", "warning", "💔")
        finally:
            self._beat_began = None

    def now(self, store: Store) -> str:
        """The heartbeat's time: this host's clock; in team mode the database server's (read
        as an offset now and then), so that every host judges heartbeats by one clock."""
        queue = store.queue
        if queue is None:
            return now_iso()
        if self._server_at is None or len(self.beat_ms) % OFFSET_EVERY_BEATS == 0:
            with contextlib.suppress(EmdxError):
                offset = queue.clock_offset_s()
                self._server_at = (time.time() + offset, boot_clock())
        return self.clock()

    def clock(self) -> str:
        """Now on the heartbeats' clock, as an ISO time (see `epoch`)."""
        return to_iso(datetime.fromtimestamp(self.epoch(), UTC))

    def epoch(self, boot: float | None = None) -> float:
        """The heartbeats' clock (epoch seconds) now, or at the moment `boot` of this host's
        boot clock — never asking the database (a final state is recorded at once, whether or
        not the server answers): the server's as last read, moved on by this host's boot clock
        (a step of its wall clock moves nothing); before the server was ever read, or outside
        team mode, this host's."""
        at = boot_clock() if boot is None else boot
        if self._server_at is None:
            return time.time() - (boot_clock() - at)
        server, then = self._server_at
        return server + at - then

    def _check_row(self, store: Store) -> None:
        """A beat no row took: is ours finished (or gone)? Then nothing may go on acting for
        it — the supervisor is told once."""
        if self._gone or self.on_row_gone is None:
            return
        try:
            row = store.executions.get(self.id)
        except NotFoundError:
            why = "its row is gone"
        else:
            if row.run_key == self.key and not row.status.is_final:
                return
            why = (
                f"its row was finished from outside ({row.status.value}, {row.reason})"
                if row.run_key == self.key
                else "its row now belongs to another run"
            )
        self._gone = True
        self.on_row_gone(why)
