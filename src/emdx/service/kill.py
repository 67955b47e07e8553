"""The one kill path: stop every process of a run (all at once, SIGTERM → grace → SIGKILL,
through `emdx.system`), and record why."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from emdx import paths, runlog, settings, system
from emdx.agent.outcome import EXIT_SIGKILL, EXIT_SIGTERM
from emdx.models import Execution, ExecutionStatus
from emdx.reasons import Reason
from emdx.store import Store

Identity = tuple[int, float]

# Past the kill grace, how long the supervisor may take to record `killed` itself.
SUPERVISOR_FINISH_S = 10.0


@dataclass(frozen=True)
class KillResult:
    execution: Execution
    already_final: bool
    needed_sigkill: bool = False


def run_identities(execution: Execution) -> list[Identity]:
    """Every process of a run as (pid, start time): the supervisor first (so that it cannot
    record an outcome of its own for an agent being killed), the agent, then every process
    carrying the run's key (tools that escaped with setsid, orphans)."""
    found = []
    if execution.pid and execution.pid_started_at is not None:
        found.append((execution.pid, execution.pid_started_at))
    if execution.agent_pid and execution.agent_started_at is not None:
        found.append((execution.agent_pid, execution.agent_started_at))
    found += system.marked_processes(execution.run_key, exclude={pid for pid, _ in found})
    return found


def stop_processes(execution: Execution, grace_s: float, force: bool = False) -> bool:
    """SIGTERM every process of the run at once, wait `grace_s`, SIGKILL the rest; True when
    SIGKILL was needed. A pid whose start time changed is never signalled."""
    return system.kill_identified(run_identities(execution), grace_s, force=force)


def finish_from_outside(
    store: Store,
    execution: Execution,
    status: ExecutionStatus,
    exit_code: int,
    reason: Reason,
    why: str,
) -> bool:
    """Record a final state decided outside the supervisor (compare-and-set: a supervisor that
    finishes at the same moment wins cleanly), and say so in the run's log."""
    won = store.executions.finish(execution.id, status, exit_code, reason, key=execution.run_key)
    if won:
        paths.forget_environment(execution.run_key)
        runlog.append_note(
            execution.log_file, f"{why}: {status.value} (exit {exit_code}, {reason})", "🛑"
        )
    return won


def kill_execution(store: Store, ref: str | int, force: bool = False) -> KillResult:
    """Ask the supervisor (it forwards SIGTERM, waits, SIGKILLs and records `killed`); if it is
    gone or does not finish in time, kill every process of the run here and record it."""
    execution = store.executions.resolve(ref)
    if execution.status.is_final:
        return KillResult(execution, already_final=True)
    who = f"killed by `emdx exec kill{' --force' if force else ''}`"
    if execution.status in (ExecutionStatus.PREPARING, ExecutionStatus.QUEUED):
        # No supervisor yet: nothing to signal (a start still preparing finds its row final).
        if finish_from_outside(
            store, execution, ExecutionStatus.KILLED, EXIT_SIGTERM, Reason.KILLED, who
        ):
            return KillResult(store.executions.get(execution.id), already_final=False)
        execution = store.executions.get(execution.id)  # it started meanwhile
        if execution.status.is_final:
            return KillResult(execution, already_final=True)
    grace = settings.kill_grace()
    if not force and system.same_process(execution.pid, execution.pid_started_at):
        system.signal_pid(execution.pid or 0, signal.SIGTERM)
        # Poll without repairing: a supervisor that died of our signal (before it could
        # install its handlers) is still a kill, not a lost runner.
        deadline = time.monotonic() + grace + SUPERVISOR_FINISH_S
        while time.monotonic() < deadline:
            current = store.executions.get(execution.id)
            if current.status.is_final:
                return KillResult(current, False, current.exit_code == EXIT_SIGKILL)
            if not system.same_process(current.pid, current.pid_started_at):
                break
            time.sleep(0.05)
    execution = store.executions.get(execution.id)
    needed = stop_processes(execution, grace_s=0 if force else grace, force=force)
    code = EXIT_SIGKILL if (force or needed) else EXIT_SIGTERM
    finish_from_outside(store, execution, ExecutionStatus.KILLED, code, Reason.KILLED, who)
    return KillResult(store.executions.get(execution.id), False, needed or force)
