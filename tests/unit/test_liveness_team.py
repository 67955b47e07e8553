"""The liveness judge on team rows (a fake probe: no processes, no clock): a run of another host
is never judged by a local pid, its worker's heartbeat says whether its host is there."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from testkit import make_execution

from emdx.models import ExecOptions, Execution, ExecutionStatus, to_iso
from emdx.service.liveness import Probe, Verdict, judge

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _row(**overrides: object) -> Execution:
    """A run on host alpha, its worker #3, beating a second ago."""
    values: dict[str, object] = dict(
        run_key="7-key",
        status=ExecutionStatus.RUNNING,
        pid=4242,
        pid_started_at=100.0,
        heartbeat_s=1.0,
        created_at=to_iso(NOW - timedelta(seconds=5)),
        started_at=to_iso(NOW - timedelta(seconds=5)),
        heartbeat_at=to_iso(NOW - timedelta(seconds=1)),
        host="alpha",
        worker_id=3,
    )
    values.update(overrides)
    return make_execution(**values)


def _probe(alive_workers: set[int] | frozenset[int] | None = frozenset({3}), **kw: Any) -> Probe:
    def no_local_process(pid: int | None, started: float | None) -> bool:
        return True  # would say "alive" for any pid: a remote row must never ask

    return Probe(
        alive=kw.pop("alive", no_local_process),
        boot_now=lambda: 1000.0,
        wall_now=lambda: NOW,
        marked=lambda key: False,
        host=kw.pop("host", "laptop"),
        alive_workers=None if alive_workers is None else frozenset(alive_workers),
        **kw,
    )


def test_a_remote_run_is_judged_by_heartbeats_never_by_a_local_pid() -> None:
    healthy = judge(_row(), _probe())
    assert (healthy.verdict, healthy.runner_alive) == (Verdict.HEALTHY, False)
    stale = judge(_row(heartbeat_at=to_iso(NOW - timedelta(seconds=10))), _probe())
    assert stale.verdict is Verdict.UNRESPONSIVE and "alpha" in stale.detail
    lost = judge(_row(), _probe(alive_workers=set()))
    assert lost.verdict is Verdict.HOST_LOST and lost.verdict.needs_repair
    waiting = judge(_row(status=ExecutionStatus.WAITING), _probe())
    assert waiting.verdict is Verdict.WAITING


def test_a_run_of_this_host_is_judged_by_its_processes() -> None:
    def dead(pid: int | None, started: float | None) -> bool:
        return False

    mine = _row(host="laptop")
    assert judge(mine, _probe(alive=dead)).verdict is Verdict.ZOMBIE


def test_a_start_preparing_on_another_host_is_abandoned_only_when_old() -> None:
    def dead(pid: int | None, started: float | None) -> bool:
        return False  # its creator's pid names nothing here

    young = _row(status=ExecutionStatus.PREPARING, host="desk", creator_pid=1, pid=None)
    assert judge(young, _probe(alive=dead)).verdict is Verdict.PREPARING
    old = replace(young, created_at=to_iso(NOW - timedelta(minutes=10)))
    assert judge(old, _probe(alive=dead)).verdict is Verdict.ABANDONED
    here = replace(young, host="laptop")
    assert judge(here, _probe(alive=dead)).verdict is Verdict.ABANDONED


def test_queued_runs_with_no_live_worker_are_unserved() -> None:
    queued = _row(status=ExecutionStatus.QUEUED, host="desk", worker_id=None, pid=None)
    assert judge(queued, _probe()).verdict is Verdict.QUEUED
    unserved = judge(queued, _probe(alive_workers=set()))
    assert unserved.verdict is Verdict.UNSERVED and not unserved.verdict.healthy
    assert judge(queued, _probe(alive_workers=None)).verdict is Verdict.QUEUED  # SQLite mode
    served = _probe(served_queues=frozenset({"emdx"}))
    assert judge(queued, served).verdict is Verdict.QUEUED
    routed = replace(queued, options=ExecOptions(queue="gpu"))
    assert judge(routed, served).verdict is Verdict.UNSERVED  # workers alive, none takes gpu


def test_a_run_its_worker_here_claimed_and_died_before_starting_is_not_left_starting() -> None:
    """Claimed by a worker of this host (no supervisor yet) that is no longer alive: nothing
    will ever start it — repaired at once, not after the start-up grace; while its worker
    lives it is starting."""
    claimed = _row(pid=None, pid_started_at=None, heartbeat_at=None)

    def nothing_alive(pid: int | None, started: float | None) -> bool:
        return False

    here: dict[str, Any] = {"host": "alpha", "alive": nothing_alive}
    starting = judge(claimed, _probe(**here))
    assert starting.verdict is Verdict.STARTING
    lost = judge(claimed, _probe(alive_workers=set(), **here))
    assert lost.verdict is Verdict.ZOMBIE and "worker 3 on alpha lost" in lost.detail
    # Outside team mode no worker is asked about.
    alone = judge(replace(claimed, worker_id=None), _probe(alive_workers=None, **here))
    assert alone.verdict is Verdict.STARTING
