"""The store on PostgreSQL beside SQLite, in the same run (team mode, issue 14).

Figures, printed, never asserted:
- `list_executions(limit=50)` (what `emdx exec list` reads) at 100,000 execution rows, in process,
  median of repeated calls, PostgreSQL vs SQLite (target: PG ≤ 1.5× SQLite);
- `search` on a 16 MiB document on PostgreSQL (bounded snippet; target ≤ 200 ms like `find`);
- `append_events` of 100-entry batches (the supervisor's log shipping), entries per second.

Rows are bulk-inserted (SQLite executemany, PostgreSQL COPY) with the same values on both.
PostgreSQL: EMDX_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres); a database
`emdx_bench_<random>` is created and dropped.

Usage: python bench/pg_store.py [--quick]     (--quick: 10,000 rows, fewer repetitions)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

COLUMNS = (
    "run_key, doc_id, doc_title, exec_type, status, reason, exit_code, created_at, started_at, "
    "completed_at, heartbeat_at, working_dir, log_file, session_id, model, num_turns, cost_usd, "
    "input_tokens, output_tokens, event_count, options"
)
STATUSES = ("completed", "completed", "completed", "failed", "killed")
TYPES = ("note", "analysis", "gameplan", "generic")


def rows(count: int, seed: int = 7) -> Iterator[tuple[object, ...]]:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=90)
    step = timedelta(days=90) / count
    options = json.dumps({"tools": ["Bash", "Read", "Write"], "smart": True})
    reasons = {"completed": "success", "failed": "agent_error", "killed": "killed_by_user"}
    for n in range(count):
        began = start + step * n
        ended = began + timedelta(seconds=rng.uniform(5, 900))
        status = rng.choice(STATUSES)
        yield (
            f"1-{n}-bench", 1, "bench document", rng.choice(TYPES), status, reasons[status],
            {"completed": 0, "failed": 1, "killed": 143}[status],
            began.isoformat(timespec="microseconds"), began.isoformat(timespec="microseconds"),
            ended.isoformat(timespec="microseconds"), ended.isoformat(timespec="microseconds"),
            f"/tmp/emdx-bench/runs/{n}", f"/tmp/emdx-bench/logs/{n}.jsonl", f"session-{n:08d}",
            "claude-sonnet-4-5", rng.randint(1, 40), round(rng.uniform(0.001, 2.5), 4),
            rng.randint(1_000, 400_000), rng.randint(100, 20_000), rng.randint(5, 500), options,
        )  # fmt: skip


def server_url() -> str:
    return os.environ.get("EMDX_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def pg_database() -> Iterator[str]:
    import psycopg

    name = f"emdx_bench_{secrets.token_hex(4)}"
    parts = urlsplit(server_url())
    with psycopg.connect(server_url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with psycopg.connect(server_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def median_ms(action: Callable[[], object], runs: int) -> float:
    action()  # warm: caches, prepared plans
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def build_sqlite(path: Path, count: int) -> None:
    from emdx.store import open_store

    with open_store(path) as store:
        conn = store.conn  # type: ignore[attr-defined]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO documents (title, content, created_at, updated_at, accessed_at, "
            "access_count, is_deleted) VALUES ('bench document', '# bench', ?, ?, ?, 0, 0)",
            (datetime.now(UTC).isoformat(),) * 3,
        )
        marks = ", ".join("?" * len(COLUMNS.split(",")))
        conn.executemany(f"INSERT INTO executions ({COLUMNS}) VALUES ({marks})", rows(count))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")


def build_pg(url: str, count: int) -> None:
    import psycopg

    from emdx.store import open_store

    open_store(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (title, content) VALUES ('bench document', '# b')")
        with conn.cursor() as cur, cur.copy(f"COPY executions ({COLUMNS}) FROM STDIN") as copy:
            for row in rows(count):
                copy.write_row(row)
        conn.execute("VACUUM ANALYZE executions")


def main(quick: bool = False) -> list[tuple[str, str, str, str]]:
    from emdx.models import ExecOptions
    from emdx.store import open_store

    count = 10_000 if quick else 100_000
    runs = 9 if quick else 31
    figures: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="emdx-bench-pg-") as tmp, pg_database() as url:
        os.environ["EMDX_HOME"] = str(Path(tmp) / "home")
        sqlite_path = Path(tmp) / "knowledge.db"
        build_sqlite(sqlite_path, count)
        build_pg(url, count)
        with open_store(sqlite_path) as lite, open_store(url) as pg:
            lite_ms = median_ms(lambda: lite.executions.list_executions(limit=50), runs)
            pg_ms = median_ms(lambda: pg.executions.list_executions(limit=50), runs)
            figures.append(
                (
                    f"list_executions(limit=50) at {count:,} rows, PostgreSQL",
                    f"{pg_ms:.2f} ms",
                    f"SQLite {lite_ms:.2f} ms ({pg_ms / lite_ms:.2f}×)",
                    "≤ 1.5× SQLite",
                )
            )

            filler = "lorem ipsum dolor sit amet " * (16 * 1024 * 1024 // 27 - 10)
            began = time.perf_counter()
            pg.documents.save("big", f"{filler} needle", None, [])
            save_s = time.perf_counter() - began
            find_ms = median_ms(lambda: pg.documents.search("needle"), 3 if quick else 7)
            figures.append(
                (
                    "search on a 16 MiB document, PostgreSQL",
                    f"{find_ms:.0f} ms",
                    f"(saving it: {save_s:.1f} s)",
                    "≤ 200 ms",
                )
            )

            pg.executions.create(
                run_key="events", doc_id=1, doc_title="t", exec_type="generic",
                options=ExecOptions(),
            )  # fmt: skip
            batch = [
                {"ts": datetime.now(UTC).isoformat(), "type": "assistant", "message": "x" * 200}
            ] * 100
            batches = 20 if quick else 100
            began = time.perf_counter()
            for _ in range(batches):
                pg.executions.append_events("events", batch)  # type: ignore[attr-defined]
            rate = batches * len(batch) / (time.perf_counter() - began)
            figures.append(
                ("append_events, 100-entry batches, PostgreSQL", f"{rate:,.0f} entries/s", "", "")
            )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for name, value, baseline, target in main(quick=args.quick):
        print(f"  {name:<52} {value:>16}  {baseline:<28} {target}")
