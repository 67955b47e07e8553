"""The one kill path: stop every process of a run (all at once, SIGTERM → grace → SIGKILL,
through `emdx.system`), and record why."""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass

from emdx import paths, runlog, settings, system
from emdx.agent.outcome import EXIT_SIGKILL, EXIT_SIGTERM
from emdx.errors import EmdxError, InvalidStateError
from emdx.models import Execution, ExecutionStatus
from emdx.reasons import Reason
from emdx.service.liveness import Verdict, default_probe, judge
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


def note_run(store: Store, execution: Execution, message: str, icon: str) -> None:
    """A line in the run's log from outside its supervisor: in its log file when the run is
    this host's, and in the team's copy of the log (any host reads it) in team mode."""
    if execution.host is None or execution.host == settings.host_name():
        runlog.append_note(execution.log_file, message, icon)
    if store.queue is not None and execution.run_key:
        with contextlib.suppress(EmdxError):
            store.queue.append_events(execution.run_key, [runlog.note_entry(message, icon)])


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
        note_run(store, execution, f"{why}: {status.value} (exit {exit_code}, {reason})", "🛑")
    return won


def record_host_lost(store: Store, execution: Execution, who: str, detail: str) -> bool:
    """Team mode: a run whose worker stopped beating is failed/137/host_lost — by whichever
    host notices first (compare-and-set); nothing runs it again (an agent run is not
    idempotent: `exec retry` is one command)."""
    won = finish_from_outside(
        store,
        execution,
        ExecutionStatus.FAILED,
        EXIT_SIGKILL,
        Reason.HOST_LOST,
        f"{detail}; {who} recorded it, not retried",
    )
    # Its job is left as procrastinate has it (`doing`, its worker gone): a worker that comes
    # back finishes it without error, and nothing retries it.
    return won


def ask_kill(store: Store, execution: Execution, who: str) -> None:
    """Write on the row who asks to kill the run, before anything is signalled or aborted: a
    sweep (on any host, in any home) that meanwhile finds its supervisor dead — of the kill,
    before it could record it — records the kill, not a lost runner (`repair_zombie`). In the
    database, not in the home, where the run's agent can write."""
    with contextlib.suppress(EmdxError):  # a kill goes on whatever the database says
        store.executions.update(
            execution.id, key=execution.run_key, only_supervised=True, kill_asked=who
        )


def is_remote(execution: Execution) -> bool:
    """A run another host's worker runs (team mode): its processes are not ours to signal."""
    return execution.host is not None and execution.host != settings.host_name()


def kill_execution(
    store: Store, ref: str | int, force: bool = False, who: str | None = None
) -> KillResult:
    """Ask the supervisor (it forwards SIGTERM, waits, SIGKILLs and records `killed`); if it is
    gone or does not finish in time, kill every process of the run here and record it. A run
    of another host is stopped by its worker (a procrastinate abort)."""
    execution = store.executions.resolve(ref)
    if execution.status.is_final:
        return KillResult(execution, already_final=True)
    who = who or f"killed by `emdx exec kill{' --force' if force else ''}`"
    if execution.status in (ExecutionStatus.PREPARING, ExecutionStatus.QUEUED):
        # No supervisor yet: nothing to signal (a start still preparing finds its row final).
        if finish_from_outside(
            store, execution, ExecutionStatus.KILLED, EXIT_SIGTERM, Reason.KILLED, who
        ):
            if store.queue is not None and execution.job_id is not None:
                with contextlib.suppress(EmdxError):
                    store.queue.request_abort(execution.job_id)  # its waiting job: cancelled
            return KillResult(store.executions.get(execution.id), already_final=False)
        execution = store.executions.get(execution.id)  # it started meanwhile
        if execution.status.is_final:
            return KillResult(execution, already_final=True)
    if is_remote(execution):
        return _kill_remote(store, execution, who)
    grace = settings.kill_grace()
    ask_kill(store, execution, who)
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


def _kill_remote(store: Store, execution: Execution, who: str) -> KillResult:
    """Abort the run's job: its worker (notified at once, or at its next poll) stops the run
    the local way and the row says `killed`. A run whose worker is lost is host_lost."""
    queue = store.queue
    judgement = judge(execution, default_probe(store))
    if judgement.verdict is Verdict.HOST_LOST or queue is None or execution.job_id is None:
        record_host_lost(store, execution, who, judgement.detail or "its worker is gone")
        return KillResult(store.executions.get(execution.id), False)
    ask_kill(store, execution, who)
    queue.request_abort(execution.job_id)
    # The worker's own kill may need all of its steps (a frozen supervisor: SIGTERM, its grace
    # and the wait for its write, then SIGKILL), after an abort it may only see at its poll.
    deadline = time.monotonic() + 2 * (settings.kill_grace() + SUPERVISOR_FINISH_S)
    deadline += 3 * settings.worker_heartbeat()
    next_judgement = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        current = store.executions.get(execution.id)
        if current.status.is_final:
            return KillResult(current, False, current.exit_code == EXIT_SIGKILL)
        if time.monotonic() >= next_judgement:
            # Its worker may be lost meanwhile (killed with its host): nobody will stop it.
            next_judgement = time.monotonic() + 1.0
            judgement = judge(current, default_probe(store))
            if judgement.verdict is Verdict.HOST_LOST:
                record_host_lost(store, current, who, judgement.detail)
                return KillResult(store.executions.get(execution.id), False)
        time.sleep(0.1)
    current = store.executions.get(execution.id)
    if current.status.is_final:
        return KillResult(current, False, current.exit_code == EXIT_SIGKILL)
    raise InvalidStateError(
        f"execution {execution.id} runs on {execution.host}: its worker did not stop it in "
        "time (the abort stays requested; try again)"
    )
