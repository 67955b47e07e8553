"""Starting supervisors: spawn one detached, and fill free slots from the queue (no daemon)."""

from __future__ import annotations

import os
import subprocess
import sys

from emdx import paths, system
from emdx.errors import EmdxError, NotFoundError
from emdx.models import Execution, ExecutionStatus, Reason
from emdx.store import Store

DEFAULT_MAX_PARALLEL = 4
DEFAULT_KILL_GRACE_S = 10.0


def kill_grace() -> float:
    """Seconds between SIGTERM and SIGKILL (EMDX_KILL_GRACE_SECONDS)."""
    try:
        value = float(os.environ.get("EMDX_KILL_GRACE_SECONDS", DEFAULT_KILL_GRACE_S))
    except ValueError:
        return DEFAULT_KILL_GRACE_S
    return value if value >= 0 else DEFAULT_KILL_GRACE_S


def max_parallel() -> int:
    try:
        return max(1, int(os.environ.get("EMDX_MAX_PARALLEL", DEFAULT_MAX_PARALLEL)))
    except ValueError:
        return DEFAULT_MAX_PARALLEL


def spawn_runner(execution_id: int) -> tuple[int, float | None]:
    """Start `python -m emdx.runner ID` in its own session; returns its pid and start time."""
    err_path = paths.logs_dir() / f"{execution_id}.runner.err"
    fd = paths.open_private(err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        env = dict(os.environ)
        env["EMDX_HOME"] = str(paths.emdx_home())
        env.update(system.run_markers(execution_id, paths.db_path()))
        proc = subprocess.Popen(
            [sys.executable, "-m", "emdx.runner", str(execution_id)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            cwd=str(paths.emdx_home()),
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    return proc.pid, system.process_start_time(proc.pid)


def start_queued(store: Store) -> list[int]:
    """Start queued runs, oldest first, while slots are free; fail those whose dependency failed.

    Called by every finishing supervisor and by the commands that repair state, so the queue
    moves without a daemon. Slots are claimed with a compare-and-set, so concurrent callers never
    start the same run twice or exceed the cap.
    """
    started: list[int] = []
    cap = max_parallel()
    for queued in store.executions.queued():
        after = queued.options.after_id
        if after is not None:
            try:
                dependency: Execution | None = store.executions.get(after)
            except NotFoundError:
                dependency = None
            if dependency is not None and dependency.status.is_active:
                continue
            if dependency is None or dependency.status is not ExecutionStatus.COMPLETED:
                store.executions.finish(
                    queued.id, ExecutionStatus.FAILED, 1, Reason.DEPENDENCY_FAILED
                )
                continue
        if not store.executions.claim_slot(queued.id, cap):
            break
        try:
            pid, started_at = spawn_runner(queued.id)
        except (OSError, EmdxError):
            store.executions.finish(queued.id, ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED)
            continue
        store.executions.update(queued.id, pid=pid, pid_started_at=started_at)
        started.append(queued.id)
    return started
