"""Execution rows on PostgreSQL: the same compare-and-set contract as `store.executions`, and
the run log's entries (`execution_events`) that let any host read and follow a run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from emdx import jsonio
from emdx.errors import NotFoundError, RunKeyTaken
from emdx.models import (
    ACTIVE_STATUSES,
    ALLOWED,
    ExecOptions,
    Execution,
    ExecutionStatus,
    parse_time,
    to_iso,
)
from emdx.store.executions import TRANSITION_FIELDS, UPDATABLE, Claim
from emdx.store.pg.connection import SURROGATE, Connection
from emdx.store.pg.documents import in_range, sql_limit
from emdx.store.pg.stats import execution_stats
from emdx.store.rows import TIME_COLUMNS, execution_of

# Serialises slot claims of every host: count and claim must be one step, or two hosts each
# seeing one free slot would both take it.
SLOT_LOCK = 0x656D_6478_0002

_TIME_COLUMNS = TIME_COLUMNS


def _iso(value: str | datetime | None) -> str | None:
    """A time read back: the connection loads TIMESTAMPTZ as ISO text already."""
    if value is None or isinstance(value, str):
        return value
    return to_iso(value)


def _time(value: object) -> datetime | None:
    """A time argument (ISO-8601 text, as the SQLite store takes, or a datetime) as a value for
    a TIMESTAMPTZ column; a text that is no time is a programming error."""
    if value is None or isinstance(value, datetime):
        return value
    moment = parse_time(str(value))
    if moment is None:
        raise ValueError(f"not an ISO-8601 time: {value!r}")
    return moment


def _json(value: Any) -> str:
    """JSON text that decodes to `value` exactly: a lone surrogate (which the connection would
    store as U+FFFD) is written as its escape."""
    text = jsonio.dumps(value, ensure_ascii=False)
    return jsonio.dumps(value) if SURROGATE.search(text) else text


def _json_text(value: Any) -> Any:
    return _json(value) if isinstance(value, dict) else value


def _encoded(fields: dict[str, Any]) -> dict[str, Any]:
    """Column values as PostgreSQL takes them: times parsed, `details` as JSON text, numbers
    as `jsonio.column_value` (64-bit integers, finite floats)."""
    out = {}
    for name, value in fields.items():
        if name in _TIME_COLUMNS:
            value = _time(value)
        elif name == "details":
            value = _json_text(value)
        elif name == "branch_created" and value is not None:
            value = bool(value)
        out[name] = jsonio.column_value(value)
    return out


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return jsonio.loads(text)
    except ValueError:
        return None


def _execution(row: dict[str, Any]) -> Execution:
    return execution_of(row, _iso)


def _where(execution_id: int, key: str | None) -> tuple[str, tuple[object, ...]]:
    if key is None:
        return "id = %s", (execution_id,)
    return "id = %s AND run_key = %s", (execution_id, key)


class PgExecutionStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def create(
        self,
        *,
        run_key: str,
        doc_id: int | None,
        doc_title: str,
        exec_type: str,
        options: ExecOptions,
        parent_execution_id: int | None = None,
        creator: tuple[int, float | None] | None = None,
        host: str | None = None,
    ) -> int:
        """A new row in `preparing`, recording its creator (pid, start time; in team mode on
        `host`, where alone that identity can be judged)."""
        creator_pid, creator_started = creator if creator is not None else (None, None)
        with self._db.write() as conn:
            row = conn.execute(
                """INSERT INTO executions (run_key, doc_id, doc_title, exec_type, status,
                       created_at, options, parent_execution_id, creator_pid,
                       creator_started_at, host)
                   VALUES (%s, %s, %s, %s, 'preparing', now(), %s, %s, %s, %s, %s)
                   ON CONFLICT (run_key) DO NOTHING RETURNING id""",
                (
                    run_key,
                    doc_id,
                    doc_title,
                    exec_type,
                    json.dumps(options.to_dict()),
                    parent_execution_id,
                    creator_pid,
                    creator_started,
                    host,
                ),
            ).fetchone()
        if row is None:
            raise RunKeyTaken(f"run key {run_key} is taken")
        return int(row["id"])

    def _one(self, sql: str, params: tuple[object, ...]) -> Execution | None:
        with self._db.read() as conn:
            row = conn.execute(sql, params).fetchone()
        return _execution(row) if row is not None else None

    def _many(self, sql: str, params: Sequence[object] = ()) -> list[Execution]:
        with self._db.read() as conn:
            return [_execution(r) for r in conn.execute(sql, params)]

    def get(self, execution_id: int) -> Execution:
        found = None
        if in_range(execution_id):
            found = self._one("SELECT * FROM executions WHERE id = %s", (execution_id,))
        if found is None:
            raise NotFoundError(f"execution {execution_id} not found")
        return found

    def by_key(self, run_key: str) -> Execution | None:
        return self._one("SELECT * FROM executions WHERE run_key = %s", (run_key,))

    def resolve(self, ref: str | int) -> Execution:
        """An execution by numeric id or, for migrated rows, by its old text id."""
        text = str(ref).strip()
        if text.isdigit():
            return self.get(int(text))
        found = self._one("SELECT * FROM executions WHERE old_id = %s", (text,))
        if found is None:
            raise NotFoundError(f"execution {text!r} not found")
        return found

    def list_executions(
        self,
        statuses: Sequence[str] | None = None,
        limit: int | None = 50,
        doc_id: int | None = None,
    ) -> list[Execution]:
        where: list[str] = []
        params: list[object] = []
        if statuses:
            where.append("status = ANY(%s)")
            params.append(list(statuses))
        if doc_id is not None:
            if not in_range(doc_id):
                return []
            where.append("doc_id = %s")
            params.append(doc_id)
        sql = "SELECT * FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        bounded = sql_limit(limit)
        if bounded is not None:
            sql += " LIMIT %s"
            params.append(bounded)
        return self._many(sql, params)

    def update(
        self,
        execution_id: int,
        *,
        key: str | None = None,
        only_supervised: bool = False,
        queued_job: int | None = None,
        **fields: Any,
    ) -> bool:
        """Set progress or bookkeeping fields (never the status: see `transition`). With `key`,
        only the row of that run key; with `only_supervised`, only while it is running or
        waiting. True when written."""
        if not fields:
            return False
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if not in_range(execution_id):
            return False
        fields = _encoded(fields)
        assignments = ", ".join(f"{name} = %s" for name in fields)
        where, params = _where(execution_id, key)
        if only_supervised:
            where += " AND status IN ('running', 'waiting')"
        if queued_job is not None:
            # A team worker's writes before its claim: only while the run waits for its job.
            where += " AND status = 'queued' AND job_id = %s"
            params = (*params, queued_job)
        with self._db.write() as conn:
            cur = conn.execute(
                f"UPDATE executions SET {assignments} WHERE {where}",
                (*fields.values(), *params),
            )
            return cur.rowcount == 1

    def transition(
        self,
        execution_id: int,
        from_statuses: Sequence[ExecutionStatus],
        to_status: ExecutionStatus,
        *,
        key: str | None = None,
        **fields: Any,
    ) -> bool:
        """Compare-and-set: move to `to_status` only if the row is in one of `from_statuses`.

        The one status writer, checked against `ALLOWED`. Under READ COMMITTED a concurrent
        writer of the same row makes this UPDATE wait and then re-check its WHERE on the row
        as committed, so of two callers racing from the same state exactly one wins."""
        illegal = [s for s in from_statuses if to_status not in ALLOWED.get(s, frozenset())]
        if illegal:
            raise ValueError(f"illegal transition {illegal[0].value} → {to_status.value}")
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise ValueError(f"not settable: {sorted(unknown)}")
        if not in_range(execution_id):
            return False
        fields = _encoded(fields)
        columns = ["status = %s", *(f"{name} = %s" for name in fields)]
        if to_status.is_final and "completed_at" not in fields:
            columns.append("completed_at = now()")  # the server's clock: every host's
        where, params = _where(execution_id, key)
        with self._db.write() as conn:
            cur = conn.execute(
                f"UPDATE executions SET {', '.join(columns)} WHERE {where} AND status = ANY(%s)",
                (
                    to_status.value,
                    *fields.values(),
                    *params,
                    [s.value for s in from_statuses],
                ),
            )
            return cur.rowcount == 1

    def finish(
        self,
        execution_id: int,
        status: ExecutionStatus,
        exit_code: int | None,
        reason: str,
        *,
        key: str | None = None,
        **fields: Any,
    ) -> bool:
        """Write a final state unless the row already has one (compare-and-set)."""
        return self.transition(
            execution_id,
            tuple(s for s in ACTIVE_STATUSES if status in ALLOWED[s]),
            status,
            key=key,
            exit_code=exit_code,
            reason=reason,
            **fields,
        )

    def by_session(self, session_id: str) -> list[Execution]:
        return self._many(
            "SELECT * FROM executions WHERE session_id = %s ORDER BY id", (session_id,)
        )

    def delete(self, execution_id: int) -> bool:
        """Remove a row that never started (the undo of a start that failed half way)."""
        if not in_range(execution_id):
            return False
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM executions WHERE id = %s AND status IN ('preparing', 'queued')",
                (execution_id,),
            )
            return cur.rowcount == 1

    def beat(self, execution_id: int, at: str, uptime_s: float | None, key: str) -> bool:
        """Record a heartbeat (and the supervisor's boot-clock uptime); only a row its
        supervisor owns takes one."""
        if not in_range(execution_id):
            return False
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE executions SET heartbeat_at = %s, uptime_s = %s WHERE id = %s "
                "AND run_key = %s AND status IN ('running', 'waiting')",
                (_time(at), uptime_s, execution_id, key),
            )
            return cur.rowcount == 1

    def queued(self) -> list[Execution]:
        """Queued runs, oldest first."""
        return self._many("SELECT * FROM executions WHERE status = 'queued' ORDER BY id")

    def claim_slot(
        self,
        execution_id: int,
        max_parallel: int,
        from_status: ExecutionStatus,
        job: int | None = None,
    ) -> Claim:
        """Atomically move a run from `from_status` (preparing or queued) to running, if fewer
        than `max_parallel` runs hold a slot — on every host at once (an advisory lock held to
        COMMIT makes count-then-claim one step across connections)."""
        if ExecutionStatus.RUNNING not in ALLOWED.get(from_status, frozenset()):
            raise ValueError(f"illegal transition {from_status.value} → running")
        if not in_range(execution_id):
            return "gone"
        with self._db.write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SLOT_LOCK,))
            # Each statement reads what was committed before it (READ COMMITTED), so this
            # count includes every claim that held the lock before us.
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM executions WHERE status IN ('running', 'waiting') "
                "AND run_key IS NOT NULL"
            ).fetchone()
            if row is not None and int(row["n"]) >= max_parallel:
                return "full"
            # With `job`: only the job the row is queued under (a stale one claims nothing).
            cur = conn.execute(
                "UPDATE executions SET status = 'running', started_at = now() "
                "WHERE id = %s AND status = %s AND (%s::bigint IS NULL OR job_id = %s)",
                (execution_id, from_status.value, job, job),
            )
            return "claimed" if cur.rowcount == 1 else "gone"

    def usage_limit_until(self, now: str) -> str | None:
        """The latest reset time of a usage limit a run is waiting out, if one is active."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT MAX(waiting_until) AS until FROM executions WHERE status = 'waiting' "
                "AND waiting_reason = 'usage_limit' AND waiting_until > %s",
                (_time(now),),
            ).fetchone()
        return _iso(row["until"]) if row else None

    def spent_since(self, since: str) -> float:
        """The cost of the runs created since `since` (ISO-8601 UTC)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(cost_usd), 0) AS spent FROM executions WHERE created_at >= %s",
                (_time(since),),
            ).fetchone()
        return float(row["spent"] or 0.0) if row else 0.0

    def slots_in_use(self) -> int:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM executions WHERE status IN ('running', 'waiting') "
                "AND run_key IS NOT NULL"
            ).fetchone()
        return int(row["n"]) if row else 0

    def active(self) -> list[Execution]:
        """Every row not in a final state (preparing, queued, running, waiting), newest first."""
        return self._many(
            "SELECT * FROM executions WHERE status IN "
            "('preparing', 'queued', 'running', 'waiting') ORDER BY id DESC"
        )

    def owing_post_actions(self) -> list[Execution]:
        return self._many("SELECT * FROM executions WHERE post_actions = 'pending' ORDER BY id")

    def stats_rows(self, since_iso: str, sample: int = 10_000) -> dict[str, Any]:
        """Aggregates for `exec stats` (see `pg.stats`)."""
        return execution_stats(self._db, _time(since_iso), sample)
