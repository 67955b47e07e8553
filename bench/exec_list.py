"""How `emdx exec list` and `exec stats` scale with the size of the executions table.

Builds knowledge bases of 1,000 / 10,000 / 100,000 execution rows (schema from
`emdx.store.open_store`, rows bulk-inserted in one transaction), then times the real CLI against
each: `exec list`, `exec list --json` (default limit) and `exec stats --json`, median of 7 runs,
beside a `python -c pass` baseline measured in the same run.

Usage: python bench/exec_list.py [--quick]     (--quick: 1k and 10k rows, 3 runs each)
Figures are printed, never asserted. Targets: `exec list` ≤ 120 ms and `exec list --json`
≤ 80 ms median at 10k and 100k rows; list cost flat in table size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
RUNS = 7
QUICK_RUNS = 3
COMMANDS: list[tuple[str, list[str], str]] = [
    ("exec list", ["exec", "list"], "≤ 120 ms at 10k/100k"),
    ("exec list --json", ["exec", "list", "--json"], "≤ 80 ms at 10k/100k"),
    ("exec stats --json", ["exec", "stats", "--json"], ""),
]
STATUSES = ("completed",) * 7 + ("failed",) * 2 + ("killed",)
TYPES = ("generic", "note", "analysis", "gameplan", "resume")


def build_db(home: Path, rows: int, seed: int = 7) -> None:
    """A knowledge base in `home` with `rows` finished executions (and a few documents)."""
    from emdx.store import open_store

    home.mkdir(parents=True, exist_ok=True)
    os.environ["EMDX_HOME"] = str(home)
    store = open_store(home / "knowledge.db")
    try:
        conn = store.conn
        rng = random.Random(seed)
        start = datetime.now(UTC) - timedelta(days=90)
        step = timedelta(days=90) / rows
        options = json.dumps(
            {
                "tools": ["Bash", "Read", "Write"],
                "smart": True,
                "worktree": None,
                "timeout_s": None,
                "stall_timeout_s": 1800.0,
                "model": None,
                "max_turns": None,
                "after_id": None,
                "resume_session": None,
                "resume_prompt": None,
            }
        )
        conn.execute("BEGIN IMMEDIATE")
        docs = [
            conn.execute(
                "INSERT INTO documents (title, content, project, created_at, updated_at, "
                "accessed_at, access_count, is_deleted) VALUES (?, ?, 'bench', ?, ?, ?, 0, 0)",
                (f"bench document {n}", f"# bench {n}\n", *(start.isoformat(),) * 3),
            ).lastrowid
            for n in range(50)
        ]

        def row(n: int) -> tuple[object, ...]:
            began = start + step * n
            took = timedelta(seconds=rng.uniform(5, 900))
            status = rng.choice(STATUSES)
            exit_code = {"completed": 0, "failed": 1, "killed": 143}[status]
            reason = {"completed": "success", "failed": "agent_error", "killed": "killed_by_user"}
            doc = rng.choice(docs)
            return (
                f"{doc}-{n}-bench",
                doc,
                f"bench document {doc}",
                rng.choice(TYPES),
                status,
                reason[status],
                exit_code,
                began.isoformat(timespec="microseconds"),
                began.isoformat(timespec="microseconds"),
                (began + took).isoformat(timespec="microseconds"),
                (began + took).isoformat(timespec="microseconds"),
                f"/tmp/emdx-bench/runs/{n}",
                f"/tmp/emdx-bench/logs/{n}.jsonl",
                f"session-{n:08d}",
                "claude-sonnet-4-5",
                rng.randint(1, 40),
                round(rng.uniform(0.001, 2.5), 4),
                rng.randint(1_000, 400_000),
                rng.randint(100, 20_000),
                rng.randint(5, 500),
                options,
            )

        conn.executemany(
            """INSERT INTO executions (run_key, doc_id, doc_title, exec_type, status, reason,
                   exit_code, created_at, started_at, completed_at, heartbeat_at, working_dir,
                   log_file, session_id, model, num_turns, cost_usd, input_tokens,
                   output_tokens, event_count, options)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (row(n) for n in range(rows)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")
    finally:
        store.close()


def timed(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall times (ms) of `runs` runs of `cmd`, after one untimed warm-up run."""
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, check=False)
        times.append((time.perf_counter() - began) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.decode()[-500:]}")
    return times


def main(quick: bool = False) -> list[tuple[str, str, str, str]]:
    """Run the benchmark, print a table, return rows (name, value, baseline text, target)."""
    sizes = QUICK_SIZES if quick else SIZES
    runs = QUICK_RUNS if quick else RUNS
    rows: list[tuple[str, str, str, str]] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("EMDX_")}
    base_env["COLUMNS"] = "120"
    baseline = statistics.median(timed([sys.executable, "-c", "pass"], base_env, runs))
    print(
        f"exec list / stats vs table size · median of {runs} runs · python {sys.version.split()[0]}"
    )
    print(f"baseline: python -c pass {baseline:.0f} ms\n")
    print(f"{'rows':>8}  {'command':<18} {'median ms':>10} {'× baseline':>10}  target")
    medians: dict[tuple[str, int], float] = {}
    saved_home = os.environ.get("EMDX_HOME")
    with tempfile.TemporaryDirectory(prefix="emdx-bench-") as tmp:
        try:
            for size in sizes:
                home = Path(tmp) / f"home-{size}"
                began = time.perf_counter()
                build_db(home, size)
                build_s = time.perf_counter() - began
                env = {**base_env, "EMDX_HOME": str(home), "HOME": tmp}
                for name, args, target in COMMANDS:
                    med = statistics.median(timed([sys.executable, "-m", "emdx", *args], env, runs))
                    medians[(name, size)] = med
                    ratio = med / baseline
                    shown_target = target if size >= 10_000 else ""
                    print(f"{size:>8,}  {name:<18} {med:>10.0f} {ratio:>9.1f}×  {shown_target}")
                    rows.append(
                        (
                            f"{name} @ {size:,} rows (median)",
                            f"{med:.0f} ms",
                            f"python -c pass {baseline:.0f} ms (×{ratio:.1f})",
                            shown_target,
                        )
                    )
                print(f"{'':>8}  (database built in {build_s:.1f} s)")
        finally:
            if saved_home is None:
                os.environ.pop("EMDX_HOME", None)
            else:
                os.environ["EMDX_HOME"] = saved_home
    smallest, largest = sizes[0], sizes[-1]
    for name in ("exec list", "exec list --json"):
        growth = medians[(name, largest)] / medians[(name, smallest)]
        rows.append(
            (
                f"{name}: {largest:,} vs {smallest:,} rows",
                f"×{growth:.2f}",
                f"{medians[(name, smallest)]:.0f} ms at {smallest:,} rows",
                "flat (≈ ×1)",
            )
        )
        print(f"{name}: {largest:,} rows / {smallest:,} rows = ×{growth:.2f} (target: flat)")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k rows, 3 runs each")
    with contextlib.suppress(KeyboardInterrupt):
        main(quick=parser.parse_args().quick)
