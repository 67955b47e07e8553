"""The one liveness judge: how a run looks from outside its supervisor (DESIGN §2–§5).

`judge(execution)` is a function of the row and of what a `Probe` reports about processes and
clocks, so that it can be unit-tested with a fake probe. Health, stats, show, follow, `exec
running`, cleanup and the sweep every command runs all ask it, and act on its verdict.

Ages are measured on the boot clock where possible: a supervisor's start time (from /proc) and
the uptime it reports with each heartbeat are both boot-relative, so a stepped wall clock can
neither make a live run look dead nor a frozen one look fresh.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from emdx import settings, system
from emdx.models import Execution, ExecutionStatus, parse_time, utc_now
from emdx.store import Store
from emdx.store.api import DEFAULT_QUEUE

DEFAULT_HEARTBEAT_S = 10.0
# Heartbeats a run may miss before it is unresponsive (circus's watchdog: interval × misses).
MISSED_BEATS = 3
# A claimed row may wait this long for its supervisor to record itself.
STARTUP_GRACE_S = 30.0
# Team mode: a run another host left `preparing` this long was abandoned there.
REMOTE_PREPARE_GRACE_S = 120.0
# Past its --timeout by this much (plus the kill grace) and unresponsive: the supervisor failed
# to enforce it, so emdx stops the run itself.
OVERDUE_MARGIN_S = 60.0


class Verdict(enum.StrEnum):
    """What the judge concluded about one run."""

    PREPARING = "preparing"
    """Its start is still making its directory; the creating process is alive."""
    ABANDONED = "abandoned"
    """A `preparing` row whose creator died: the start is undone by the next command."""
    QUEUED = "queued"
    """Waiting for a free slot or for the run it depends on."""
    STARTING = "starting"
    """Claimed, its supervisor not recorded yet (it is being spawned)."""
    HEALTHY = "healthy"
    """The supervisor is alive (pid and start time) and its heartbeat is fresh."""
    WAITING = "waiting"
    """The supervisor is alive and waiting (a usage limit, a retry backoff)."""
    UNRESPONSIVE = "unresponsive"
    """The supervisor is alive but its heartbeat is stale (frozen, or the database locked)."""
    OVERDUE = "overdue"
    """Unresponsive and past its --timeout: emdx stops it (reason `overdue`)."""
    ZOMBIE = "zombie"
    """The row says running but its supervisor is gone: finished as the supervisor left it
    (its outcome file) or failed/137/runner_lost."""
    UNSERVED = "unserved"
    """Team mode: queued, and no live worker takes its queue."""
    HOST_LOST = "host_lost"
    """Team mode: a run of another host whose worker's heartbeat stopped (killed, frozen, cut
    off): failed/137/host_lost, never retried (an agent run is not idempotent)."""
    STUCK = "stuck"
    """A running row of an earlier release (no supervisor identity): `cleanup executions`."""
    FINISHED = "finished"
    """A final state."""

    @property
    def healthy(self) -> bool:
        return self in _HEALTHY

    @property
    def needs_repair(self) -> bool:
        """Something any command that looks at runs should fix now."""
        return self in (Verdict.ABANDONED, Verdict.ZOMBIE, Verdict.HOST_LOST)


_HEALTHY = frozenset(
    {
        Verdict.PREPARING,
        Verdict.QUEUED,
        Verdict.STARTING,
        Verdict.HEALTHY,
        Verdict.WAITING,
        Verdict.FINISHED,
    }
)


def _local_marked(run_key: str) -> bool:
    return bool(system.marked_processes(run_key))


@dataclass(frozen=True)
class Probe:
    """What the judge may ask the world; tests pass fakes."""

    alive: Callable[[int | None, float | None], bool] = system.same_process
    boot_now: Callable[[], float] = system.boot_clock
    wall_now: Callable[[], datetime] = utc_now
    marked: Callable[[str], bool] = _local_marked
    kill_grace_s: float = 10.0
    host: str = ""
    """This host's name (team mode): a run recorded on another host is judged remotely."""
    alive_workers: frozenset[int] | None = None
    """Team mode: the workers whose heartbeat is fresh; None outside team mode."""
    served_queues: frozenset[str] | None = None
    """Team mode: the queues a live worker takes; None outside team mode."""
    gone_here: frozenset[int] = frozenset()
    """Team mode: workers of this host that count as alive (a fresh heartbeat, the grace after
    an outage) though their process is gone: lost, as this host can see."""


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    runner_alive: bool
    heartbeat_age_s: float | None
    detail: str = ""


def heartbeat_limit(execution: Execution) -> float:
    """How old the run's heartbeat may be, from the run's own interval (not the reader's)."""
    return MISSED_BEATS * (execution.heartbeat_s or DEFAULT_HEARTBEAT_S)


def _wall_age(moment: str | None, now: datetime) -> float | None:
    parsed = parse_time(moment)
    return None if parsed is None else max(0.0, (now - parsed).total_seconds())


def heartbeat_age(execution: Execution, probe: Probe, runner_alive: bool) -> float | None:
    """Seconds since the last heartbeat: on the boot clock when the supervisor is alive here
    and reported its uptime, else by the wall clock."""
    if runner_alive and execution.uptime_s is not None and execution.pid_started_at is not None:
        return max(0.0, probe.boot_now() - execution.pid_started_at - execution.uptime_s)
    return _wall_age(execution.heartbeat_at, probe.wall_now())


def judge(execution: Execution, probe: Probe | None = None) -> Judgement:
    """The verdict on one run (see `Verdict`)."""
    probe = probe or Probe()
    status = execution.status
    remote = execution.host is not None and execution.host != probe.host
    # Another host's pid names nothing here (and may name an unrelated process).
    runner = not remote and probe.alive(execution.pid, execution.pid_started_at)
    if status.is_final:
        return Judgement(Verdict.FINISHED, runner, None)
    if execution.run_key is None:
        if status is ExecutionStatus.QUEUED:
            return Judgement(Verdict.QUEUED, False, None)
        return Judgement(Verdict.STUCK, False, None, "a row of an earlier emdx release")
    if status is ExecutionStatus.PREPARING:
        if remote:
            # Its creator is on another host: only age can tell (a start takes milliseconds).
            age = _wall_age(execution.created_at, probe.wall_now())
            if age is not None and age > REMOTE_PREPARE_GRACE_S:
                return Judgement(
                    Verdict.ABANDONED, False, None, f"left preparing on {execution.host}"
                )
            return Judgement(Verdict.PREPARING, False, None)
        if probe.alive(execution.creator_pid, execution.creator_started_at):
            return Judgement(Verdict.PREPARING, False, None)
        return Judgement(Verdict.ABANDONED, False, None, "the process starting it is gone")
    if status is ExecutionStatus.QUEUED:
        if probe.alive_workers is not None and not probe.alive_workers:
            return Judgement(Verdict.UNSERVED, False, None, "no worker of the team is alive")
        wanted = execution.options.queue or DEFAULT_QUEUE
        if probe.served_queues is not None and wanted not in probe.served_queues:
            return Judgement(Verdict.UNSERVED, False, None, f"no live worker takes queue {wanted}")
        return Judgement(Verdict.QUEUED, False, None)
    if remote:
        return _judge_remote(execution, probe)
    # running or waiting
    age = heartbeat_age(execution, probe, runner)
    limit = heartbeat_limit(execution)
    if runner:
        assert execution.pid_started_at is not None
        uptime = max(0.0, probe.boot_now() - execution.pid_started_at)
        if age is None:
            age = uptime  # no beat yet: as old as the supervisor
        if age <= limit:
            verdict = Verdict.WAITING if status is ExecutionStatus.WAITING else Verdict.HEALTHY
            return Judgement(verdict, True, age)
        timeout = execution.options.timeout_s
        if timeout is not None and uptime > timeout + probe.kill_grace_s + OVERDUE_MARGIN_S:
            detail = f"up {uptime:.0f}s, past its {timeout:g}s timeout, heartbeat {age:.0f}s old"
            return Judgement(Verdict.OVERDUE, True, age, detail)
        return Judgement(Verdict.UNRESPONSIVE, True, age, f"heartbeat {age:.0f}s old")
    if execution.pid is not None and execution.pid_started_at is not None:
        return Judgement(Verdict.ZOMBIE, False, age, "its supervisor is gone")
    lost = lost_worker(execution, probe)
    if lost is not None:  # claimed by a worker of this host that died before it started it
        return Judgement(Verdict.ZOMBIE, False, None, f"its supervisor never started: {lost}")
    claimed = _wall_age(execution.started_at or execution.created_at, probe.wall_now()) or 0.0
    if claimed < STARTUP_GRACE_S or probe.marked(execution.run_key):
        return Judgement(Verdict.STARTING, False, None)
    return Judgement(Verdict.ZOMBIE, False, None, "its supervisor never started")


def lost_worker(execution: Execution, probe: Probe) -> str | None:
    """Team mode: "worker N on HOST lost" when the worker that took the run is not alive (its
    heartbeat stopped, or it stopped), else None."""
    if probe.alive_workers is None or execution.worker_id is None:
        return None
    if execution.worker_id in probe.gone_here:
        return f"worker {execution.worker_id} on {execution.host} lost (its process is gone)"
    if execution.worker_id in probe.alive_workers:
        return None
    return f"worker {execution.worker_id} on {execution.host} lost"


def _judge_remote(execution: Execution, probe: Probe) -> Judgement:
    """A running run of another host: its processes are not ours to see, so its worker's
    heartbeat says whether the host is there, and the run's own heartbeat whether it is
    responsive (on the wall clock: the other host's boot clock is not ours)."""
    age = _wall_age(execution.heartbeat_at, probe.wall_now())
    lost = lost_worker(execution, probe)
    if lost is not None:
        return Judgement(Verdict.HOST_LOST, False, age, lost)
    if age is not None and age <= heartbeat_limit(execution):
        verdict = (
            Verdict.WAITING if execution.status is ExecutionStatus.WAITING else Verdict.HEALTHY
        )
        return Judgement(verdict, False, age, f"on {execution.host}")
    if age is None:
        return Judgement(Verdict.STARTING, False, None, f"on {execution.host}")
    return Judgement(
        Verdict.UNRESPONSIVE, False, age, f"on {execution.host}, heartbeat {age:.0f}s old"
    )


def default_probe(store: Store | None = None) -> Probe:
    """The real world's probe; in team mode (a `store` with a job queue) it knows this host's
    name and which workers are alive."""
    queue = store.queue if store is not None else None
    if queue is None:
        return Probe(kill_grace_s=settings.kill_grace())  # no row names a host
    # The team's heartbeats are the database server's times: judged by its clock too.
    offset = timedelta(seconds=queue.clock_offset_s())
    live = queue.live_workers()
    host = settings.host_name()
    here = queue.workers_here(host)
    return Probe(
        kill_grace_s=settings.kill_grace(),
        host=host,
        alive_workers=frozenset(live),
        gone_here=frozenset(w for w, pid in here.items() if system.process_start_time(pid) is None),
        served_queues=frozenset(name for queues in live.values() for name in queues),
        wall_now=lambda: utc_now() + offset,
    )
