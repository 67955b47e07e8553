"""Execution rows: creation, lookup, progress, heartbeats and compare-and-set final states."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from emdx import jsonio
from emdx.errors import NotFoundError, RunKeyTaken
from emdx.models import (
    ACTIVE_STATUSES,
    ALLOWED,
    MAX_INT,
    ExecOptions,
    Execution,
    ExecutionStatus,
    now_iso,
    storable,
)
from emdx.store.connection import read, read_one, write_transaction
from emdx.store.rows import execution_of
from emdx.store.stats import execution_stats

# Columns that may change without a change of status. Status, and what goes with a change of
# status (reason, exit code, start and end times), is written by `transition` only.
UPDATABLE = frozenset(
    {
        "heartbeat_at",
        "pid",
        "pid_started_at",
        "agent_pid",
        "agent_started_at",
        "working_dir",
        "branch",
        "log_file",
        "session_id",
        "model",
        "num_turns",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "last_event_at",
        "event_count",
        "malformed_count",
        "output_doc_id",
        "repo",
        "branch_created",
        "heartbeat_s",
        "uptime_s",
        "post_actions",
        "resets_at",
        "cache_read_tokens",
        "cache_creation_tokens",
        "claude_code_version",
        "details",
        "host",
        "worker_id",
        "job_id",
        "kill_asked",
    }
)
TRANSITION_FIELDS = UPDATABLE | {
    "reason",
    "exit_code",
    "started_at",
    "completed_at",
    "waiting_until",
    "waiting_reason",
    "attempt",
}
Claim = Literal["claimed", "full", "gone"]


def _execution(row: sqlite3.Row) -> Execution:
    return execution_of(row)


def _encoded(fields: dict[str, Any]) -> dict[str, Any]:
    """Column values as SQLite takes them: `details` as JSON text, integers clamped to 64 bits
    and non-finite floats as NULL (sums of what an agent reported must never make a row
    unwritable)."""
    encoded: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict) and name == "details":
            value = jsonio.dumps(value, ensure_ascii=False)
        encoded[name] = jsonio.column_value(value)
    return encoded


def _where(execution_id: int, key: str | None) -> tuple[str, tuple[object, ...]]:
    if not storable(execution_id):
        return "0", ()  # no row has an id SQLite cannot hold
    if key is None:
        return "id = ?", (execution_id,)
    return "id = ? AND run_key = ?", (execution_id, key)


class ExecutionStore:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

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
        with write_transaction(self._conn, self._path) as conn:
            # Under the write lock: nobody inserts the same key between the look and the insert.
            if conn.execute("SELECT 1 FROM executions WHERE run_key = ?", (run_key,)).fetchone():
                raise RunKeyTaken(f"run key {run_key} is taken")
            cur = conn.execute(
                """INSERT INTO executions (run_key, doc_id, doc_title, exec_type, status,
                       created_at, options, parent_execution_id, creator_pid,
                       creator_started_at, host)
                   VALUES (?, ?, ?, ?, 'preparing', ?, ?, ?, ?, ?, ?)""",
                (
                    run_key,
                    doc_id,
                    doc_title,
                    exec_type,
                    now_iso(),
                    json.dumps(options.to_dict()),
                    parent_execution_id,
                    creator_pid,
                    creator_started,
                    host,
                ),
            )
            return int(cur.lastrowid or 0)

    def get(self, execution_id: int) -> Execution:
        row = None
        if storable(execution_id):
            sql = "SELECT * FROM executions WHERE id = ?"
            row = read_one(self._conn, self._path, sql, (execution_id,))
        if row is None:
            raise NotFoundError(f"execution {execution_id} not found")
        return _execution(row)

    def by_key(self, run_key: str) -> Execution | None:
        sql = "SELECT * FROM executions WHERE run_key = ?"
        row = read_one(self._conn, self._path, sql, (run_key,))
        return _execution(row) if row is not None else None

    def resolve(self, ref: str | int) -> Execution:
        """An execution by numeric id or, for migrated rows, by its old text id."""
        text = str(ref).strip()
        if text.isdigit():
            return self.get(int(text))
        sql = "SELECT * FROM executions WHERE old_id = ?"
        row = read_one(self._conn, self._path, sql, (text,))
        if row is None:
            raise NotFoundError(f"execution {text!r} not found")
        return _execution(row)

    def list_executions(
        self,
        statuses: Sequence[str] | None = None,
        limit: int | None = 50,
        doc_id: int | None = None,
    ) -> list[Execution]:
        where: list[str] = []
        params: list[object] = []
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if doc_id is not None:
            where.append("doc_id = ?")
            params.append(doc_id)
        sql = "SELECT * FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(min(limit, MAX_INT))
        return [_execution(r) for r in read(self._conn, self._path, sql, params)]

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
        only the row of that run key (a supervisor never writes into a row that a restored
        backup gave another run's id); with `only_supervised`, only while it is running or
        waiting (a late progress write never lands on a final row). True when written."""
        if not fields:
            return False
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        fields = _encoded(fields)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        where, params = _where(execution_id, key)
        if only_supervised:
            where += " AND status IN ('running', 'waiting')"
        if queued_job is not None:
            # A team worker's writes before its claim: only while the run waits for its job.
            where += " AND status = 'queued' AND job_id = ?"
            params = (*params, queued_job)
        with write_transaction(self._conn, self._path) as conn:
            cur = conn.execute(
                f"UPDATE executions SET {assignments} WHERE {where}", (*fields.values(), *params)
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

        The one status writer (a move outside `ALLOWED` is a programming error), so that a
        runner and a reaper (health, cleanup, kill) can never both finish the same row.
        """
        illegal = [s for s in from_statuses if to_status not in ALLOWED.get(s, frozenset())]
        if illegal:
            raise ValueError(f"illegal transition {illegal[0].value} → {to_status.value}")
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise ValueError(f"not settable: {sorted(unknown)}")
        if to_status.is_final:
            fields.setdefault("completed_at", now_iso())
        fields = _encoded(fields)
        columns = ["status = ?", *(f"{name} = ?" for name in fields)]
        marks = ",".join("?" * len(from_statuses))
        where, params = _where(execution_id, key)
        with write_transaction(self._conn, self._path) as conn:
            cur = conn.execute(
                f"UPDATE executions SET {', '.join(columns)} WHERE {where} AND status IN ({marks})",
                (
                    to_status.value,
                    *fields.values(),
                    *params,
                    *(s.value for s in from_statuses),
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
        sql = "SELECT * FROM executions WHERE session_id = ? ORDER BY id"
        rows = read(self._conn, self._path, sql, (session_id,))
        return [_execution(r) for r in rows]

    def delete(self, execution_id: int) -> bool:
        """Remove a row that never started (the undo of a start that failed half way)."""
        with write_transaction(self._conn, self._path) as conn:
            cur = conn.execute(
                "DELETE FROM executions WHERE id = ? AND status IN ('preparing', 'queued')",
                (execution_id,),
            )
            return cur.rowcount == 1

    def beat(self, execution_id: int, at: str, uptime_s: float | None, key: str) -> bool:
        """Record a heartbeat (and the supervisor's boot-clock uptime); only a row its
        supervisor owns takes one."""
        with write_transaction(self._conn, self._path) as conn:
            cur = conn.execute(
                "UPDATE executions SET heartbeat_at = ?, uptime_s = ? WHERE id = ? "
                "AND run_key = ? AND status IN ('running', 'waiting')",
                (at, uptime_s, execution_id, key),
            )
            return cur.rowcount == 1

    def queued(self) -> list[Execution]:
        """Queued runs, oldest first."""
        sql = "SELECT * FROM executions WHERE status = 'queued' ORDER BY id"
        rows = read(self._conn, self._path, sql)
        return [_execution(r) for r in rows]

    def claim_slot(
        self,
        execution_id: int,
        max_parallel: int,
        from_status: ExecutionStatus,
        job: int | None = None,
    ) -> Claim:
        """Atomically move a run from `from_status` (preparing or queued) to running, if fewer
        than `max_parallel` runs hold a slot."""
        if ExecutionStatus.RUNNING not in ALLOWED.get(from_status, frozenset()):
            raise ValueError(f"illegal transition {from_status.value} → running")
        with write_transaction(self._conn, self._path) as conn:
            # Rows of earlier releases stuck in `running` have no supervisor: they hold no slot.
            holding = conn.execute(
                "SELECT COUNT(*) FROM executions WHERE status IN ('running', 'waiting') "
                "AND run_key IS NOT NULL"
            ).fetchone()[0]
            if holding >= max_parallel:
                return "full"
            # With `job`: only the job the row is queued under (team mode's; unused here).
            cur = conn.execute(
                "UPDATE executions SET status = 'running', started_at = ? "
                "WHERE id = ? AND status = ? AND (? IS NULL OR job_id = ?)",
                (now_iso(), execution_id, from_status.value, job, job),
            )
            return "claimed" if cur.rowcount == 1 else "gone"

    def usage_limit_until(self, now: str) -> str | None:
        """The latest reset time of a usage limit a run is waiting out, if one is active."""
        row = self._conn.execute(
            "SELECT MAX(waiting_until) FROM executions WHERE status = 'waiting' "
            "AND waiting_reason = 'usage_limit' AND waiting_until > ?",
            (now,),
        ).fetchone()
        return str(row[0]) if row and row[0] else None

    def spent_since(self, since: str) -> float:
        """The cost of the runs created since `since` (ISO-8601 UTC)."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM executions WHERE created_at >= ?", (since,)
        ).fetchone()
        return float(row[0] or 0.0)

    def slots_in_use(self) -> int:
        sql = (
            "SELECT COUNT(*) FROM executions WHERE status IN ('running', 'waiting') "
            "AND run_key IS NOT NULL"
        )
        return int(read(self._conn, self._path, sql)[0][0])

    def active(self) -> list[Execution]:
        """Every row not in a final state (preparing, queued, running, waiting), newest first."""
        sql = (
            "SELECT * FROM executions WHERE status IN "
            "('preparing', 'queued', 'running', 'waiting') ORDER BY id DESC"
        )
        rows = read(self._conn, self._path, sql)
        return [_execution(r) for r in rows]

    def owing_post_actions(self) -> list[Execution]:
        sql = "SELECT * FROM executions WHERE post_actions = 'pending' ORDER BY id"
        rows = read(self._conn, self._path, sql)
        return [_execution(r) for r in rows]

    def stats_rows(self, since_iso: str, sample: int = 10_000) -> dict[str, Any]:
        """Aggregates for `exec stats` (see `stats.execution_stats`)."""
        return execution_stats(self._conn, self._path, since_iso, sample)
