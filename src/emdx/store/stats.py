"""Aggregates over the executions table for `exec stats` (SQLite): counts by status, recent
counts, cost and token totals per type, and a sample of run durations."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emdx.reasons import Reason
from emdx.store.connection import read


def execution_stats(
    conn: sqlite3.Connection, path: Path, since_iso: str, sample: int = 10_000
) -> dict[str, Any]:
    """Aggregates for `exec stats`: counts, recent counts, cost and token totals, durations.

    Durations leave out rows repaired as `stuck`: rows of earlier releases whose end is the
    moment a cleanup found them (months later, maybe), not when their run ended."""

    def rows(sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        return read(conn, path, sql, params)

    by_status = {
        r[0]: int(r[1]) for r in rows("SELECT status, COUNT(*) FROM executions GROUP BY status")
    }
    recent = {
        r[0]: int(r[1])
        for r in rows(
            "SELECT status, COUNT(*) FROM executions WHERE created_at >= ? GROUP BY status",
            (since_iso,),
        )
    }
    per_type = [
        dict(r)
        for r in rows(
            """SELECT exec_type, COUNT(*) AS runs, COALESCE(SUM(cost_usd), 0) AS cost_usd,
                  COALESCE(SUM(input_tokens), 0) AS input_tokens,
                  COALESCE(SUM(output_tokens), 0) AS output_tokens
           FROM executions GROUP BY exec_type ORDER BY runs DESC"""
        )
    ]
    durations = [
        float(r[0])
        for r in rows(
            """SELECT (julianday(completed_at) - julianday(started_at)) * 86400.0
           FROM executions
           WHERE status IN ('completed', 'failed', 'killed') AND completed_at IS NOT NULL
             AND started_at IS NOT NULL AND COALESCE(reason, '') != ?
           ORDER BY id DESC LIMIT ?""",
            (Reason.STUCK.value, sample),
        )
        if r[0] is not None and r[0] >= 0
    ]
    return {
        "by_status": by_status,
        "recent": recent,
        "per_type": per_type,
        "durations": durations,
    }
