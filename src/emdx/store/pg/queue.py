"""Team mode's dispatch on the team's database (DESIGN §9): procrastinate's job queue — its
schema, its SQL functions (`procrastinate_*_v1`, its stable interface) and its worker — not a
queue of our own.

A run is one procrastinate job of the task `emdx.run` whose arguments name the execution (id and
run key); the job is deferred in the same transaction that queues the row, so no row waits
without a job. The prompt a worker starts the run with travels in `execution_prompts`, since the
worker's host has none of the submitting host's files. What each worker said of itself when it
started (name, host, queues, repositories, heartbeat interval) is in `emdx_workers`; its
liveness is procrastinate's worker heartbeat, judged by that worker's own interval.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from emdx.errors import InvalidStateError, StoreError
from emdx.models import ALLOWED, ExecutionEvent, ExecutionStatus, WorkerInfo
from emdx.store.api import DEFAULT_QUEUE, Job
from emdx.store.pg.connection import Connection
from emdx.store.pg.events import PgEventLog

TASK = "emdx.run"
# A worker whose heartbeat is this many intervals old is lost (circus: interval × misses).
MISSED_BEATS = 3
# How long a (re)starting worker may take to reach the database and register.
CONNECT_GRACE_S = 30.0
# After the team's database was out of everyone's reach, how long (past its own heartbeat limit)
# a worker may take to reach it again before it is judged lost.
REJOIN_S = 15.0
# The team's pulse: every worker's heartbeat and every judge touch it. A pulse after a silence
# longer than the shortest worker heartbeat limit means the database was out of everyone's
# reach (restarted, failed over, cut off): `silent_from`..`resumed_at` records the silence, and
# no worker that was alive when it began is judged lost until it has had the time to reach the
# database again.
_SILENCE = (
    f"pulse_at < now() - make_interval(secs => {MISSED_BEATS} * (SELECT "
    "COALESCE(MIN(heartbeat_s), 10.0) FROM emdx_workers WHERE stopped_at IS NULL))"
)
PULSE_SQL = (
    f"UPDATE emdx_pulse SET pulse_at = now(), "
    f"resumed_at = CASE WHEN {_SILENCE} THEN now() ELSE resumed_at END, "
    f"silent_from = CASE WHEN {_SILENCE} THEN pulse_at ELSE silent_from END"
)


def _alive(p: str = "p", w: str = "w") -> str:
    """SQL: whether the worker of `p` (procrastinate_workers, either row may be missing) and
    `w` (emdx_workers) is alive: its heartbeat is fresh by its own interval (circus: interval ×
    misses), or — not stopped — the team's database came back from an outage too recently for it
    to have beaten since (its registration may even have been pruned meanwhile: it restores it)."""
    limit = f"make_interval(secs => {MISSED_BEATS} * COALESCE({w}.heartbeat_s, 10.0))"
    return (
        f"COALESCE({p}.last_heartbeat > now() - {limit} OR ({w}.stopped_at IS NULL AND "
        f"EXISTS (SELECT 1 FROM emdx_pulse t WHERE t.resumed_at > now() - {limit} - "
        f"make_interval(secs => {REJOIN_S}) AND "
        f"COALESCE({p}.last_heartbeat, t.silent_from) >= t.silent_from - {limit})), false)"
    )


Handler = Callable[[Job], Awaitable[None]]


class PgJobQueue:
    def __init__(self, db: Connection) -> None:
        self._db = db
        self._events = PgEventLog(db)

    # -- the run log, for every host ----------------------------------------------------

    def append_events(self, run_key: str, entries: Sequence[Mapping[str, Any] | str]) -> int:
        return self._events.append_events(run_key, entries)

    def events_since(
        self, execution_id: int, after_seq: int = 0, limit: int = 1000
    ) -> list[ExecutionEvent]:
        return self._events.events_since(execution_id, after_seq, limit)

    # -- runs ---------------------------------------------------------------------------

    def defer(
        self,
        execution_id: int,
        run_key: str,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay_s: float = 0.0,
        prompt: bytes | None = None,
        from_status: ExecutionStatus | None = None,
    ) -> int:
        """A job for the run (and its prompt, the first time), recorded on the row in the same
        transaction — which also moves the row from `from_status` to queued when given, so
        that no row is queued without a job; returns the job id. The queueing lock (the run
        key) refuses a second waiting job for the same run."""
        args = json.dumps({"execution_id": execution_id, "run_key": run_key})
        with self._db.write() as conn:
            if from_status is not None:
                if ExecutionStatus.QUEUED not in ALLOWED.get(from_status, frozenset()):
                    raise ValueError(f"illegal transition {from_status.value} → queued")
                cur = conn.execute(
                    "UPDATE executions SET status = 'queued' WHERE id = %s AND run_key = %s "
                    "AND status = %s",
                    (execution_id, run_key, from_status.value),
                )
                if cur.rowcount != 1:
                    raise InvalidStateError(f"execution {execution_id} is not {from_status.value}")
            if prompt is not None:
                conn.execute(
                    "INSERT INTO execution_prompts (execution_id, prompt) VALUES (%s, %s) "
                    "ON CONFLICT (execution_id) DO UPDATE SET prompt = EXCLUDED.prompt",
                    (execution_id, prompt),
                )
            row = conn.execute(
                """SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(
                       %s, %s, %s, NULL, %s, %s::jsonb,
                       now() + make_interval(secs => %s))::procrastinate_job_to_defer_v1]))
                   AS id""",
                (queue, TASK, priority, run_key, args, max(0.0, delay_s)),
            ).fetchone()
            if row is None:
                raise StoreError(f"could not queue execution {execution_id}")
            job_id = int(row["id"])
            conn.execute("UPDATE executions SET job_id = %s WHERE id = %s", (job_id, execution_id))
        return job_id

    def prompt(self, execution_id: int) -> bytes | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT prompt FROM execution_prompts WHERE execution_id = %s", (execution_id,)
            ).fetchone()
        return bytes(row["prompt"]) if row else None

    def request_abort(self, job_id: int) -> bool:
        """Ask the worker running the job to stop it (procrastinate's abort, over NOTIFY); a job
        still waiting is cancelled. False when the job is neither waiting nor running."""
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT procrastinate_cancel_job_v1(%s, true, false) AS id", (job_id,)
            ).fetchone()
        return row is not None and row["id"] is not None

    def orphaned_queued(self) -> list[int]:
        """Queued runs whose job will never start them: it ended (its task gave up on a
        database error), vanished, or is held by a worker that is lost (taken, then the worker
        died before it started the run). Such a job is ended here; the run, which never started,
        needs a new one."""
        with self._db.write() as conn:
            rows = conn.execute(
                f"""SELECT e.id, j.id AS job, j.status AS job_status
                    FROM executions e
                    LEFT JOIN procrastinate_jobs j ON j.id = e.job_id
                    LEFT JOIN procrastinate_workers p ON p.id = j.worker_id
                    LEFT JOIN emdx_workers w ON w.worker_id = j.worker_id
                    WHERE e.status = 'queued' AND e.job_id IS NOT NULL AND (
                        j.id IS NULL
                        OR j.status IN ('succeeded', 'failed', 'aborted', 'cancelled')
                        OR (j.status = 'doing' AND NOT {_alive()}))
                    ORDER BY e.id"""
            ).fetchall()
            for row in rows:
                if row["job_status"] == "doing":
                    conn.execute(
                        "SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (row["job"],)
                    )
        return [int(r["id"]) for r in rows]

    def clock_offset_s(self) -> float:
        """The database server's clock minus this host's, in seconds: heartbeats of team runs
        are stamped by the server, and judged by it."""
        with self._db.read() as conn:
            row = conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp()) AS t").fetchone()
        return float(row["t"]) - time.time() if row else 0.0

    # -- workers ------------------------------------------------------------------------

    def register_worker(
        self,
        worker_id: int,
        *,
        name: str,
        host: str,
        pid: int,
        queues: Sequence[str],
        repos: Sequence[str],
        concurrency: int,
        heartbeat_s: float,
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                """INSERT INTO emdx_workers
                       (worker_id, name, host, pid, queues, repos, concurrency, heartbeat_s)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    worker_id,
                    name,
                    host,
                    pid,
                    json.dumps(list(queues)),
                    json.dumps(list(repos)),
                    concurrency,
                    heartbeat_s,
                ),
            )

    def worker_stopped(self, worker_id: int) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE emdx_workers SET stopped_at = now() WHERE worker_id = %s", (worker_id,)
            )

    def live_workers(self) -> dict[int, tuple[str, ...]]:
        """The workers whose heartbeat is fresh (by each one's own interval) and the queues
        each takes (none yet for one that has not said who it is)."""
        with self._db.write() as conn:
            conn.execute(PULSE_SQL)  # this judge reached the database: the team's pulse
            rows = conn.execute(
                f"""SELECT COALESCE(p.id, w.worker_id) AS id, w.queues
                    FROM procrastinate_workers p
                    FULL JOIN emdx_workers w ON w.worker_id = p.id
                    WHERE {_alive()}"""
            ).fetchall()
        return {int(r["id"]): tuple(json.loads(r["queues"])) if r["queues"] else () for r in rows}

    def workers_here(self, host: str) -> dict[int, int]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"""SELECT w.worker_id, w.pid FROM emdx_workers w
                    LEFT JOIN procrastinate_workers p ON p.id = w.worker_id
                    WHERE w.host = %s AND {_alive()}""",
                (host,),
            ).fetchall()
        return {int(r["worker_id"]): int(r["pid"]) for r in rows}

    def workers(self, include_gone: bool = False) -> list[WorkerInfo]:
        """Every worker that said who it is, newest first: alive, or (with `include_gone`)
        stopped and lost ones too."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"""SELECT w.*, p.last_heartbeat,
                        EXTRACT(EPOCH FROM now() - p.last_heartbeat) AS age_s,
                        {_alive()} AS alive,
                        (SELECT COUNT(*) FROM executions e WHERE e.worker_id = w.worker_id
                            AND e.status IN ('running', 'waiting')) AS running
                    FROM emdx_workers w
                    LEFT JOIN procrastinate_workers p ON p.id = w.worker_id
                    ORDER BY w.worker_id DESC"""
            ).fetchall()
        found = []
        for r in rows:
            alive = bool(r["alive"])
            if not alive and not include_gone:
                continue
            found.append(
                WorkerInfo(
                    worker_id=int(r["worker_id"]),
                    name=str(r["name"]),
                    host=str(r["host"]),
                    pid=int(r["pid"]),
                    queues=tuple(json.loads(r["queues"])),
                    repos=tuple(json.loads(r["repos"])),
                    concurrency=int(r["concurrency"]),
                    heartbeat_s=float(r["heartbeat_s"]),
                    heartbeat_age_s=None if r["age_s"] is None else float(r["age_s"]),
                    alive=alive,
                    stopped=r["stopped_at"] is not None,
                    running=int(r["running"]),
                )
            )
        return found

    # -- the worker ---------------------------------------------------------------------

    def serve(
        self,
        *,
        name: str,
        queues: Sequence[str],
        concurrency: int,
        heartbeat_s: float,
        handler: Handler,
        on_registered: Callable[[int], None],
        periodic: Callable[[], None] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        """Run a procrastinate worker until SIGINT/SIGTERM: each job of `queues` runs
        `handler` (at most `concurrency` at once); an abort cancels the handler's task, which
        stops its run before it returns. `on_registered(worker_id)` is called once the worker
        is in the database, before it takes a job (again after the worker fell over and
        registered anew: a stalled registration is pruned by the other workers);
        `periodic()` every heartbeat (in a thread); `say` is told of each fall."""
        from emdx.store.pg import worker

        asyncio.run(
            worker.serve(
                self._db.url,
                name,
                list(queues),
                concurrency,
                heartbeat_s,
                handler,
                on_registered,
                periodic,
                say,
            )
        )
