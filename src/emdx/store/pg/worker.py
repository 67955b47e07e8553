"""Team mode's worker runtime (`PgJobQueue.serve`): procrastinate's worker, made to ride out the
team's database going away — restarted, failed over, a flapping network — instead of falling
over and stopping the runs it runs (their agents need no database to go on).

What procrastinate 3.10 does on its own, and what is changed here:
- A side task (heartbeat, LISTEN) that raises is meant to stop the worker, but its monitor
  stops watching as soon as *any* side task returns — and the periodic deferrer returns at once
  when the app has no periodic task (emdx has none). So the first failed heartbeat query ended
  the heartbeat for good while the worker went on taking jobs: the "wedged" worker (alive, its
  heartbeat stopped, its runs judged lost). procrastinate issue #1597; fixed here in
  `fixes.Worker._monitor_side_tasks` (as in its open pull request #1605).
- The heartbeat, the LISTEN connection, fetching and finishing jobs each failed (and ended the
  worker) on the first connection error. Here a beat that cannot reach the database is tried
  again at the next one; LISTEN reconnects until it can; a fetch that fails is "no job now"; a
  job's end is written when the database is back. The pool reconnects within seconds of the
  database's return (its backoff is capped), tests every idle connection once one is found dead
  (it tried them one by one with a doubling pause), and a connect never hangs longer than
  `CONNECT_TIMEOUT_S`.
- A heartbeat also restores the worker's registration if another worker pruned it as stalled
  meanwhile (procrastinate prunes on every worker start), and it keeps the team's pulse (see
  `queue.PULSE_SQL`): nobody is judged lost merely because everyone was cut off.
The watchdog stays as the backstop: a worker whose heartbeat does not reach a database that
answers registers again."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
import procrastinate.exceptions
import psycopg

from emdx.store.api import Job
from emdx.store.pg.connection import display_url
from emdx.store.pg.fixes import CONNECT_TIMEOUT_S, Connector, Pool, Worker
from emdx.store.pg.queue import CONNECT_GRACE_S, MISSED_BEATS, PULSE_SQL, TASK

Handler = Callable[[Job], Awaitable[None]]
Say = Callable[[str], None]

# How long the watchdog lets a heartbeat stay stale while the database answers (it may still be
# reconnecting) before it calls the worker wedged.
WEDGE_GRACE_S = 10.0
# Jobs this worker holds ("doing") without running them are looked for every this many beats.
HELD_CHECK_BEATS = 5

BEAT_SQL = (
    "WITH beat AS (INSERT INTO procrastinate_workers (id, last_heartbeat) "
    "OVERRIDING SYSTEM VALUE VALUES (%(worker_id)s, now()) "
    "ON CONFLICT (id) DO UPDATE SET last_heartbeat = now() RETURNING (xmax = 0) AS restored), "
    f"pulse AS ({PULSE_SQL} RETURNING 1) "
    "SELECT (SELECT restored FROM beat) AS restored, (SELECT COUNT(*) FROM pulse) AS pulsed"
)
RELINK_SQL = (
    "UPDATE procrastinate_jobs SET worker_id = %(worker_id)s "
    "WHERE id = ANY(%(jobs)s) AND status = 'doing' AND worker_id IS NULL"
)
HELD_SQL = "SELECT id FROM procrastinate_jobs WHERE worker_id = %(worker_id)s AND status = 'doing'"
END_HELD_SQL = "SELECT procrastinate_finish_job_v1(%(job_id)s, 'failed', false)"


class _Link:
    """What the worker's parts know of its link to the database."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, say: Say, stale_s: float) -> None:
        self.loop = loop
        self.stale_s = stale_s
        self.url = url
        self.say = say
        self.beaten = loop.time()
        self.failing_since: float | None = None
        self.running: Callable[[], set[int]] = set
        """The jobs the current registration runs."""

    def reached(self) -> None:
        now = self.loop.time()
        since = self.beaten if self.failing_since is None else min(self.failing_since, self.beaten)
        if self.failing_since is not None or now - self.beaten > self.stale_s:
            self.say(
                f"the worker's heartbeat reaches the database again after {now - since:.0f}s; "
                "the worker kept its runs"
            )
        self.failing_since = None
        self.beaten = now

    def failed(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = self.loop.time()
            self.say(
                f"the worker cannot reach {display_url(self.url)} ({_one_line(exc)}): "
                "its runs go on; trying again each beat"
            )

    async def answers(self) -> bool:
        """Whether the database takes a new connection and answers now."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
            )
        except (psycopg.Error, OSError):
            return False
        try:
            await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError):
            return False
        finally:
            await conn.close()


async def serve(
    url: str,
    name: str,
    queues: list[str],
    concurrency: int,
    heartbeat_s: float,
    handler: Handler,
    on_registered: Callable[[int], None],
    periodic: Callable[[], None] | None,
    say: Say,
) -> None:
    """See `PgJobQueue.serve`."""
    # procrastinate and the pool log their own tracebacks; the worker says what matters once.
    logging.getLogger("procrastinate").setLevel(logging.CRITICAL)
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    connector = Connector(
        conninfo=url,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
        reconnect_timeout=365 * 86400.0,  # never give up: the database comes back
        pool_factory=Pool,
    )
    app = procrastinate.App(connector=connector)
    holder: dict[str, int] = {}
    stopping = asyncio.Event()

    @app.task(name=TASK, pass_context=True)
    async def run(context: Any, execution_id: int, run_key: str) -> None:
        while "worker" not in holder:  # a job fetched before on_registered returned
            await asyncio.sleep(0.01)
        job_id = context.job.id

        def why() -> str | None:
            reason = context.abort_reason()
            if reason is not None and reason.value != "shutdown":
                return str(reason.value)  # `exec kill`
            if stopping.is_set():
                # Asked to stop (SIGTERM/SIGINT), whether or not procrastinate has passed the
                # shutdown on to this job yet: a run being prepared is left to the others.
                return "shutdown"
            if reason is not None:
                return "lost"  # the worker fell over (its registration, the database)
            return None

        await handler(Job(int(job_id), int(execution_id), str(run_key), holder["worker"], why))

    loop = asyncio.get_running_loop()
    link = _Link(loop, url, say, MISSED_BEATS * heartbeat_s + 2.0)
    _tolerate_outages(app.job_manager, link, heartbeat_s)
    current: list[Any] = []

    def unretrieved(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A job's bookkeeping that failed in procrastinate (its job ended meanwhile): one line.
        failure = context.get("exception")
        say(f"worker: {_one_line(failure) if failure else context.get('message', '?')}")

    loop.set_exception_handler(unretrieved)

    def stop() -> None:
        if not stopping.is_set():
            say("worker: stopping (its runs are stopped, its queued ones left to the others)")
        stopping.set()
        for worker in current:
            worker.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    while not stopping.is_set():
        try:
            async with app.open_async():
                await _serve_once(
                    app, name, queues, concurrency, heartbeat_s, holder, on_registered,
                    periodic, current, link,
                )  # fmt: skip
        except (OSError, psycopg.Error, procrastinate.exceptions.ProcrastinateException) as exc:
            # psycopg's own: the pool's PoolTimeout when it opens while the database is away
            # (which ended the worker, traceback and all).
            if stopping.is_set():
                break
            say(f"the worker lost {display_url(url)} ({_one_line(exc)}): registering again")
        else:
            if stopping.is_set():
                break
            say("the worker stopped on its own: registering again")
        current.clear()
        await asyncio.sleep(max(1.0, heartbeat_s))


def _tolerate_outages(manager: Any, link: _Link, heartbeat_s: float) -> None:
    """The job manager's calls that ended the worker on a connection error, made to wait."""
    fetch_job = manager.fetch_job
    finish_job = manager.finish_job
    connector = manager.connector

    async def beat(worker_id: int) -> None:
        try:
            row = await connector.execute_query_one_async(query=BEAT_SQL, worker_id=worker_id)
        except procrastinate.exceptions.ConnectorException as exc:
            link.failed(exc)  # tried again at the next beat: the side task must not end
            return
        if row["restored"]:
            # Pruned as stalled while cut off (by a worker that started meanwhile): the same
            # registration again, and the jobs it runs linked to it again.
            link.say(f"the worker's registration #{worker_id} was pruned meanwhile: restored")
            jobs = sorted(link.running())
            if jobs:
                try:
                    await connector.execute_query_async(
                        query=RELINK_SQL, worker_id=worker_id, jobs=jobs
                    )
                except procrastinate.exceptions.ConnectorException as exc:
                    link.failed(exc)
                    return
        link.reached()

    async def fetch(queues: Any, worker_id: int) -> Any:
        try:
            return await fetch_job(queues=queues, worker_id=worker_id)
        except procrastinate.exceptions.ConnectorException as exc:
            # No job now (one its lost answer gave us is ended by `_end_held`).
            link.failed(exc)
            await asyncio.sleep(heartbeat_s)
            return None

    async def finish(job: Any, status: Any, delete_job: bool) -> None:
        while True:
            try:
                await finish_job(job=job, status=status, delete_job=delete_job)
                return
            except procrastinate.exceptions.ConnectorException as exc:
                if 'not in "doing"' in str(exc.__cause__):
                    return  # its earlier try went through, only its answer was lost
                link.failed(exc)
                await asyncio.sleep(max(0.5, heartbeat_s))

    for attribute, value in (
        ("update_heartbeat", beat),
        ("fetch_job", fetch),
        ("finish_job", finish),
    ):
        setattr(manager, attribute, value)


async def _serve_once(
    app: Any,
    name: str,
    queues: list[str],
    concurrency: int,
    heartbeat_s: float,
    holder: dict[str, int],
    on_registered: Callable[[int], None],
    periodic: Callable[[], None] | None,
    current: list[Any],
    link: _Link,
) -> None:
    """One registration of the worker, until it stops (asked to, or fallen over)."""
    worker = Worker(
        app,
        queues=queues,
        name=name,
        concurrency=concurrency,
        update_heartbeat_interval=heartbeat_s,
        stalled_worker_timeout=MISSED_BEATS * heartbeat_s,
        abort_job_polling_interval=max(0.5, heartbeat_s),
        fetch_job_polling_interval=max(0.5, heartbeat_s),
        shutdown_graceful_timeout=0.0,
        install_signal_handlers=False,
    )
    current.append(worker)

    def running() -> set[int]:
        return {int(c.job.id) for c in worker._running_jobs.values() if c.job.id}

    link.running = running
    loop = asyncio.get_running_loop()
    limit = MISSED_BEATS * heartbeat_s + 2.0
    link.beaten = loop.time()
    task = asyncio.create_task(worker.run())  # type: ignore[no-untyped-call]
    while worker.worker_id is None and not task.done():
        if loop.time() - link.beaten > limit + CONNECT_GRACE_S:
            link.say("the worker could not register with the database: trying again")
            await _give_up(worker, task)
            return
        await asyncio.sleep(0.01)
    if worker.worker_id is not None:
        holder["worker"] = worker.worker_id
        link.beaten = loop.time()
        await asyncio.to_thread(on_registered, worker.worker_id)
    beat = asyncio.create_task(_every(heartbeat_s, periodic)) if periodic else None
    answered_at: float | None = None
    beats = 0
    suspects: set[int] = set()
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=heartbeat_s)
            beats += 1
            if task.done():
                break
            if beats % HELD_CHECK_BEATS == 0 and worker.worker_id is not None:
                suspects = await _end_held(app, worker.worker_id, running, suspects)
            if loop.time() - link.beaten <= limit:
                answered_at = None
                continue
            # The heartbeat is stale: the database away (ride it out), or the worker wedged
            # (its heartbeat does not reach a database that answers): the backstop.
            if not await link.answers():
                answered_at = None
                continue
            answered_at = answered_at or loop.time()
            if loop.time() - answered_at > limit + WEDGE_GRACE_S:
                link.say(
                    f"the worker's heartbeat has not reached the database for "
                    f"{loop.time() - link.beaten:.0f}s though it answers: registering again"
                )
                await _give_up(worker, task)
                return
        task.result()
    finally:
        if beat is not None:
            beat.cancel()


async def _end_held(
    app: Any, worker_id: int, running: Callable[[], set[int]], suspects: set[int]
) -> set[int]:
    """Jobs this worker holds without running them — a fetch whose answer the database lost:
    ended (failed) once seen twice, so that the sweep queues their runs again (they never
    started). Returns the ones seen once."""
    try:
        rows = await app.connector.execute_query_all_async(query=HELD_SQL, worker_id=worker_id)
    except procrastinate.exceptions.ConnectorException:
        return suspects
    held = {int(r["id"]) for r in rows} - running()
    for job_id in held & suspects:
        try:
            await app.connector.execute_query_async(query=END_HELD_SQL, job_id=job_id)
        except procrastinate.exceptions.ConnectorException:
            continue
    return held - suspects


async def _give_up(worker: Any, task: asyncio.Task[Any]) -> None:
    """Stop a worker instance (its running jobs are aborted, so their runs are stopped); one
    that does not stop in time is cancelled and left behind."""
    worker.stop()
    done, _ = await asyncio.wait({task}, timeout=10.0)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)


def _one_line(exc: BaseException) -> str:
    # procrastinate's ConnectorException says nothing itself: the psycopg error it wraps does.
    text = " ".join(str(exc.__cause__ or exc).split())
    return text[:300] or type(exc).__name__


async def _every(interval_s: float, call: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(call)
