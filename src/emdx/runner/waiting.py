"""The supervisor's wait between two agent processes of one execution: the row in `waiting`
(the row writer keeps heartbeating, no agent runs) until a usage limit resets or a retry backoff
ends, then `running` again as the next attempt."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from emdx.models import ExecutionStatus
from emdx.runner import clock
from emdx.runner.finish import Note
from emdx.runner.policy import Wait
from emdx.store import Store
from emdx.system.clock import boot_clock

POLL_S = 0.2


def wait_out(
    store: Store,
    execution_id: int,
    key: str,
    wait: Wait,
    fields: dict[str, Any],
    *,
    attempt: int,
    session: str,
    stop_signal: Callable[[], int | None],
    note: Note,
    now: Callable[[], float] = time.time,
) -> int | None:
    """`waiting` until `wait.until`, with `fields` written with the move; the number of the
    next attempt once the row is `running` again, or None when a signal stopped the wait (the
    run is then killed) or the row was finished from outside. The wait is as long as it was
    when it began, counted on the boot clock (a step of the wall clock neither stretches nor
    cuts it); its end is written on `now`'s clock (the heartbeats', in team mode the server's)."""
    left = max(0.0, wait.until - time.time())
    deadline = boot_clock() + left
    until = now() + left
    moved = store.executions.transition(
        execution_id,
        (ExecutionStatus.RUNNING,),
        ExecutionStatus.WAITING,
        key=key,
        waiting_until=clock.iso(until),
        waiting_reason=wait.reason,
        **fields,
    )
    if not moved:
        return None
    note(
        f"{wait.why}: waiting until {clock.time_of_day(until)} ({clock.span(left)}), then "
        f"resuming session {session} (attempt {attempt + 1})",
        "warning",
        "⏳",
    )
    while boot_clock() < deadline:
        signum = stop_signal()
        if signum is not None:
            name = signal.Signals(signum).name
            note(f"received {name} while waiting: stopping", "warning", "🛑")
            return None
        time.sleep(min(POLL_S, max(0.0, deadline - boot_clock())))
    moved = store.executions.transition(
        execution_id,
        (ExecutionStatus.WAITING,),
        ExecutionStatus.RUNNING,
        key=key,
        waiting_until=None,
        waiting_reason=None,
        attempt=attempt + 1,
    )
    if not moved:
        return None
    note(f"resuming session {session} (attempt {attempt + 1})", "info", "▶️")
    return attempt + 1
