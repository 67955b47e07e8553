"""The end of a run: its outcome written first to an fsync'd side file, then the final state by
compare-and-set, retried through locks, a full disk and I/O errors (a later command finishes the
row from the side file if the database never takes it)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from emdx import jsonio, paths, settings
from emdx.agent.outcome import Outcome
from emdx.errors import EmdxError, StoreError
from emdx.store import Store
from emdx.store.connection import retry_transient

Note = Callable[[str, str, str], None]


def warn(message: str) -> None:
    """A line on the supervisor's stderr (runner.err); never raises: that file may be on a full
    disk, and a failed print must not cost the run its final write."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


def record_outcome(
    store: Store,
    execution_id: int,
    key: str,
    outcome: Outcome,
    fields: dict[str, Any],
    result_text: str | None,
    note: Note,
    completed_at: str,
) -> bool:
    """True when this call recorded the final state (False: it was recorded already, the row is
    another run's now, or the database never took it — the side file has it then)."""
    record = {
        "run_key": key,
        "status": outcome.status.value,
        "exit_code": outcome.exit_code,
        "reason": str(outcome.reason),
        "completed_at": completed_at,
        "fields": fields,
        "result": result_text,
    }
    try:
        data = jsonio.dumps(record, ensure_ascii=False).encode("utf-8", "replace")
        paths.write_private(paths.final_path(key), data, sync=True)
    except (OSError, EmdxError) as exc:
        note(f"could not write the outcome file: {exc}", "warning", "💾")
        warn(f"emdx runner: could not write the outcome file: {exc}")

    def write() -> bool:
        return store.executions.finish(
            execution_id,
            outcome.status,
            outcome.exit_code,
            str(outcome.reason),
            key=key,
            completed_at=record["completed_at"],
            **fields,
        )

    failures: list[str] = []

    def retrying(exc: StoreError) -> None:
        if not failures:
            note(f"final write failed (retrying): {exc}", "warning", "💾")
            warn(f"emdx runner: final write failed (retrying): {exc}")
        failures.append(str(exc))

    try:
        won = retry_transient(write, settings.final_write_deadline(), on_retry=retrying)
    except StoreError as exc:
        message = (
            f"could not record the final state: {exc}; it is in {paths.final_path(key)} and "
            "the next emdx command records it"
        )
        note(message, "error", "❌")
        warn(f"emdx runner: {message}")
        return False
    if won:
        note(
            f"finished: {outcome.status.value}, exit {outcome.exit_code}, reason {outcome.reason}",
            "info",
            "🏁",
        )
        return True
    current = store.executions.by_key(key)
    if current is None:
        message = (
            f"execution {execution_id} now belongs to another run (a restored backup?): not "
            f"recording into it; the outcome is in {paths.final_path(key)}"
        )
        note(message, "error", "❌")
        warn(f"emdx runner: {message}")
    else:
        note(f"final state was already recorded ({current.status.value}); kept", "info", "🛡️")
    return False
