"""Aggregates over the executions table for `exec stats` (PostgreSQL): counts by status, recent
counts, cost and token totals per type, and a sample of run durations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from emdx.store.pg.connection import Connection
from emdx.store.pg.documents import sql_limit


def execution_stats(db: Connection, since: datetime | None, sample: int = 10_000) -> dict[str, Any]:
    """Aggregates for `exec stats`: counts, recent counts, cost and token totals, durations."""
    with db.read() as conn:
        by_status = {
            r["status"]: int(r["n"])
            for r in conn.execute("SELECT status, COUNT(*) AS n FROM executions GROUP BY status")
        }
        recent = {
            r["status"]: int(r["n"])
            for r in conn.execute(
                "SELECT status, COUNT(*) AS n FROM executions WHERE created_at >= %s "
                "GROUP BY status",
                (since,),
            )
        }
        per_type = [
            {
                "exec_type": r["exec_type"],
                "runs": int(r["runs"]),
                "cost_usd": float(r["cost_usd"]),
                "input_tokens": int(r["input_tokens"]),
                "output_tokens": int(r["output_tokens"]),
            }
            for r in conn.execute(
                """SELECT exec_type, COUNT(*) AS runs, COALESCE(SUM(cost_usd), 0) AS cost_usd,
                      COALESCE(SUM(input_tokens), 0) AS input_tokens,
                      COALESCE(SUM(output_tokens), 0) AS output_tokens
                   FROM executions GROUP BY exec_type ORDER BY runs DESC"""
            )
        ]
        durations = [
            float(r["s"])
            for r in conn.execute(
                """SELECT EXTRACT(EPOCH FROM completed_at - started_at) AS s
                   FROM executions
                   WHERE status IN ('completed', 'failed', 'killed')
                     AND completed_at IS NOT NULL AND started_at IS NOT NULL
                   ORDER BY id DESC LIMIT %s""",
                (sql_limit(sample),),
            )
            if r["s"] is not None and r["s"] >= 0
        ]
    return {
        "by_status": by_status,
        "recent": recent,
        "per_type": per_type,
        "durations": durations,
    }
