"""What the supervisor says at the end of a run about its own machinery: what the log lost (its
size cap, writes that failed) and how the heartbeats went."""

from __future__ import annotations

import os

from emdx.runlog import LogWriter
from emdx.runner.finish import Note, warn


def report_log(log: LogWriter, note: Note) -> None:
    """Say what the log lost: entries past its size cap, writes that failed (a full disk)."""
    if log.dropped:
        note(
            f"log capped at {log.max_bytes} bytes: {log.dropped} later entries not kept "
            "(EMDX_LOG_MAX_BYTES)",
            "warning",
            "✂️",
        )
    if log.write_errors:
        message = f"{log.write_errors} log write(s) failed (disk full?)"
        note(message, "warning", "💾")
        warn(f"emdx runner: {message}")


def report_heartbeats(log: LogWriter, stats: dict[str, float | int]) -> None:
    """One log entry with the row writer's heartbeat figures (`RowWriter.report`), if it beat."""
    if not stats["beats"] and not stats["failures"]:
        return
    log.write(
        "runner",
        f"heartbeats: {stats['beats']} written, "
        f"{stats['failures']} failed, p99 {stats['p99_ms']} ms",
        source="runner",
        pid=os.getpid(),
        icon="💓",
        raw=stats,
    )
