"""Team mode's worker (DESIGN §9): `emdx worker` on each host takes the team's queued runs from
procrastinate and runs each with the *same* supervisor as a local run (`python -m emdx.runner
ID`), waiting for it; an abort (`exec kill` on any host) stops it the local way.

A job is a run's turn, not the run: a job whose run depends on an unfinished one, or that a
usage limit or the daily budget holds, is deferred again a few seconds later and ends, so no
worker slot waits on another run. A run is never started twice: the row moves queued → running
by compare-and-set, whatever procrastinate delivers. The worker's supervisors die with it (a
parent-death signal), as they would with its host; the next worker on the host sweeps what they
left, and any host records their runs `host_lost` once the worker's heartbeat stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from emdx import paths, settings, system
from emdx.errors import EmdxError, EnvironmentProblem, InvalidStateError, NotFoundError
from emdx.models import Execution
from emdx.reasons import Reason
from emdx.service import cleanup, repair, unclaimed
from emdx.service.kill import kill_execution, note_run, record_host_lost, stop_processes
from emdx.service.liveness import Verdict, default_probe, judge
from emdx.service.preparing import CLAIMED_RETRY_S, Preparation, WorkerConfig, check_host
from emdx.store import Job, JobQueueAPI, Store
from emdx.store.connection import retry_transient
from emdx.system import spawn

# How often a waiting job looks at its row (a run declared lost while the worker was frozen).
ROW_CHECK_S = 1.0


def serve(store: Store, config: WorkerConfig, say: Callable[[str], None]) -> None:
    """Run the worker until SIGINT/SIGTERM (which stop the runs it is running: `killed`)."""
    queue = store.queue
    if queue is None:
        raise InvalidStateError(
            "`emdx worker` serves a team: set EMDX_DATABASE_URL to the team's PostgreSQL database"
        )
    # A host that cannot run a run takes none (it would fail every run of the queue).
    try:
        check_host(bool(config.repos))
    except EnvironmentProblem as exc:
        exc.message = f"this host cannot run the team's runs: {exc.message}"
        raise
    # This host's leftovers first: runs of an earlier worker here whose supervisor is gone,
    # and processes marked as theirs.
    for action in cleanup.processes(store):
        say(f"start-up sweep: {action.target}: {action.detail}")
    with contextlib.suppress(EmdxError):
        live = queue.live_workers()
        for action in unclaimed.sweep(store, config.host, config.repos.values(), live):
            say(f"start-up sweep: {action.target}: {action.detail} ({action.result})")
    worker = _Worker(store, queue, config, say)

    queues = [*config.queues, *config.repos]
    try:
        queue.serve(
            name=config.name,
            queues=queues,
            concurrency=config.concurrency,
            heartbeat_s=config.heartbeat_s,
            handler=worker.handle,
            on_registered=worker.registered,
            periodic=worker.sweep,
            say=say,
        )
    finally:
        if worker.worker_id is not None:
            with contextlib.suppress(EmdxError):
                queue.worker_stopped(worker.worker_id)


class _Worker(Preparation):
    """One worker's jobs: each run's turn prepared (`Preparation`), then its supervisor started,
    waited for, and stopped on an abort."""

    def __init__(
        self, store: Store, queue: JobQueueAPI, config: WorkerConfig, say: Callable[[str], None]
    ) -> None:
        self.store = store
        self.queue = queue
        self.config = config
        self.say = say
        self.worker_id: int | None = None
        self.cannot: str | None = None  # why this host cannot run runs now, as last said
        self.left: set[str | None] = set()  # the runs whose log says so

    def registered(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.queue.register_worker(
            worker_id,
            name=self.config.name,
            host=self.config.host,
            pid=os.getpid(),
            queues=[*self.config.queues, *self.config.repos],
            repos=[str(p) for p in self.config.repos.values()],
            concurrency=self.config.concurrency,
            heartbeat_s=self.config.heartbeat_s,
        )
        self.say(
            f"worker {self.config.name} (#{worker_id}) on {self.config.host}: "
            f"queues {', '.join(self.config.queues)}, concurrency {self.config.concurrency}"
        )

    def sweep(self) -> None:
        """Every heartbeat: the sweep every command does (runs of lost hosts among them)."""
        with contextlib.suppress(EmdxError):
            for line in repair.sweep(self.store, f"worker {self.config.name}").describe():
                self.say(line)

    # -- one job ------------------------------------------------------------------------

    async def handle(self, job: Job) -> None:
        # The start runs to its end whatever happens meanwhile (an abort cancels this task at
        # any await): a run half started must still be stopped, and its supervisor reaped.
        starting = asyncio.ensure_future(self._start(job))
        try:
            started = await asyncio.shield(starting)
        except asyncio.CancelledError:
            started = await starting
            if started is not None:
                await self._stop_and_reap(*started, job.abort_reason())
            raise
        if started is None:
            return
        execution, pid, since = started
        try:
            await self._wait(execution, pid, since)
        except asyncio.CancelledError:
            await self._stop_and_reap(execution, pid, since, job.abort_reason())
            raise
        await asyncio.to_thread(self._after, execution.id)

    async def _start(self, job: Job) -> tuple[Execution, int, float | None] | None:
        """Prepare, claim and spawn the run's supervisor; None when it is not to start now."""
        prepared = await asyncio.to_thread(self._prepare, job)
        if prepared is None:
            return None
        execution, env = prepared
        key = execution.run_key or ""
        try:
            # On this (the event loop's) thread: the parent-death signal follows the thread
            # that started the child.
            pid, started = spawn.supervisor(
                execution.id, env, paths.runner_err_path(key), paths.emdx_home(), True
            )
        except (OSError, EmdxError) as exc:
            await asyncio.to_thread(self._failed, execution, f"could not start: {exc}")
            return None
        with contextlib.suppress(EmdxError):
            await asyncio.to_thread(
                self.store.executions.update,
                execution.id,
                key=key,
                pid=pid,
                pid_started_at=started,
            )
        self.say(f"execution #{execution.id}: started (supervisor {pid})")
        return execution, pid, started

    async def _stop_and_reap(
        self, execution: Execution, pid: int, started: float | None, why: str | None
    ) -> None:
        """An abort (`exec kill` on some host) or this worker stopping: stop the run the local
        way, then collect its supervisor (our child)."""
        if why == "shutdown":
            who = f"stopped with worker {self.config.name} (the user stopped the worker)"
        elif why == "lost":
            who = (
                f"worker {self.config.name} on {self.config.host} lost its registration with "
                "the team (it registers again): nothing could stop this run from another host"
            )
        else:
            who = f"stopped by worker {self.config.name} (`exec kill` asked, from any host)"
        self.say(f"execution #{execution.id}: {who}")
        await asyncio.to_thread(self._stop, execution.id, pid, started, who, why == "lost")
        while not system.reap(pid):
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self._after, execution.id)

    async def _wait(self, execution: Execution, pid: int, started: float | None) -> None:
        """Until the supervisor exits; a row declared host_lost meanwhile (this worker was
        frozen or cut off) stops it: the run is over, and nothing may still act for it."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + ROW_CHECK_S
        while not system.reap(pid):
            if loop.time() >= next_check:
                next_check = loop.time() + ROW_CHECK_S
                ended = await asyncio.to_thread(self._ended, execution.id)
                if ended and system.same_process(pid, started):
                    self.say(f"execution #{execution.id}: declared lost; stopping its supervisor")
                    system.send_signal(pid, started or 0.0, signal.SIGTERM)
            await asyncio.sleep(0.1)

    def _ended(self, execution_id: int) -> bool:
        """The row was declared lost, or is gone (a database that does not answer says
        nothing; any other final state is the supervisor's own, which is finishing)."""
        try:
            return self.store.executions.get(execution_id).reason == Reason.HOST_LOST
        except NotFoundError:
            return True
        except EmdxError:
            return False

    def _stop(
        self, execution_id: int, pid: int, started: float | None, who: str, lost: bool
    ) -> None:
        """Stop the run: a kill (`killed`) — or, when this worker lost its registration (the
        run's job with it), the host's loss as any other host would record it (host_lost),
        then its processes."""
        if lost:
            with contextlib.suppress(EmdxError):
                row = self.store.executions.get(execution_id)
                retry_transient(
                    lambda: record_host_lost(self.store, row, f"worker {self.config.name}", who),
                    CLAIMED_RETRY_S,
                )
                stop_processes(row, settings.kill_grace())
        else:
            with contextlib.suppress(EmdxError):
                note_run(self.store, self.store.executions.get(execution_id), who, "🛑")
            with contextlib.suppress(EmdxError):
                kill_execution(self.store, execution_id, who=who)
        # Whatever the row says (a database that does not answer): its supervisor goes (a row
        # it could not finish is finished once it is reaped: `_after`).
        if system.same_process(pid, started):
            system.kill_identified([(pid, started or 0.0)], settings.kill_grace())

    def _after(self, execution_id: int) -> None:
        """The supervisor exited: a row it did not finish is repaired here, where its
        processes and outcome file are."""
        with contextlib.suppress(EmdxError):
            row = self.store.executions.get(execution_id)
            if row.status.is_active and judge(row, default_probe(self.store)).verdict in (
                Verdict.ZOMBIE,
                Verdict.STARTING,
            ):
                repair.repair_zombie(self.store, row, f"worker {self.config.name}")
            row = self.store.executions.get(execution_id)
            self.say(f"execution #{execution_id}: {row.status.value} ({row.reason})")
