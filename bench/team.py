"""Team mode with real workers (issue 14): three `emdx worker` processes as hosts on one
PostgreSQL database, the fake agent, runs submitted through the service from a fourth home.

Figures, printed, never asserted:
- submit-to-start latency (row created → claimed by a worker), p50/p95, vs the same figure for
  a local SQLite start in the same run (target: ≤ 1 s p50, LISTEN/NOTIFY);
- 200 runs dispatched over 3 workers: completed, lost, run twice, per-worker spread, wall time;
- host-loss detection: a worker SIGKILLed mid-run → its run `host_lost` (vs 3 × the heartbeat).
(`exec list` on PostgreSQL at 100k rows: bench/pg_store.py.)

PostgreSQL: EMDX_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres); a database
`emdx_bench_<random>` is created and dropped.

Usage: python bench/team.py [--quick]        (--quick: 40 runs instead of 200)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
FAKE = REPO / "tests" / "support" / "fake_claude.py"
HEARTBEAT_S = 1.0


def report(name: str, value: str, baseline: str = "", target: str = "") -> None:
    print(f"  {name:<46} {value:>18}  {baseline:<30} {target}", flush=True)


@contextlib.contextmanager
def database() -> Iterator[str]:
    import psycopg

    server = os.environ.get("EMDX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"emdx_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    parts = urlsplit(server)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def host_env(root: Path, host: str, url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMDX_")}
    env.update(
        EMDX_HOME=str(root / host),
        EMDX_HOST=host,
        HOME=str(root),
        EMDX_CLAUDE_BIN=str(FAKE),
        EMDX_HEARTBEAT_SECONDS=str(HEARTBEAT_S),
        EMDX_WORKER_HEARTBEAT_SECONDS=str(HEARTBEAT_S),
        EMDX_MAX_PARALLEL="500",
        PYTHONPATH=str(REPO / "src"),
    )
    if url:
        env["EMDX_DATABASE_URL"] = url
    return env


def start_worker(root: Path, url: str, host: str, concurrency: int) -> subprocess.Popen[bytes]:
    out = open(root / f"{host}.out", "wb")  # noqa: SIM115 (the worker's whole life)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emdx", "worker", "--name", host, "-c", str(concurrency)],
        env=host_env(root, host, url),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while f"worker {host} (#" not in (root / f"{host}.out").read_text(errors="replace"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"bench: worker {host} did not start")
        time.sleep(0.1)
    return proc


@contextlib.contextmanager
def as_host(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def submit(count: int, text: str) -> list[int]:
    from emdx.service import Service

    with Service() as service:
        doc = service.save_document("bench", text).id
        return [service.start_execution(doc).id for _ in range(count)]


def wait_all(ids: list[int], timeout: float) -> list[object]:
    from emdx.service import Service

    deadline = time.monotonic() + timeout
    with Service() as service:
        while True:
            rows = [service.get_execution(i) for i in ids]
            if all(r.status.is_final for r in rows) or time.monotonic() > deadline:
                return rows  # type: ignore[return-value]
            time.sleep(0.2)


def latency_ms(rows: list[object]) -> list[float]:
    from emdx.models import parse_time

    out = []
    for row in rows:
        created, started = parse_time(row.created_at), parse_time(row.started_at)  # type: ignore[attr-defined]
        if created and started:
            out.append((started - created).total_seconds() * 1000)
    return sorted(out)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)
    return 0


def run(quick: bool) -> None:
    """The figures (see the module's docstring); `report` prints each (bench/run.py collects)."""
    runs = 40 if quick else 200
    root = Path(tempfile.mkdtemp(prefix="emdx-bench-team-"))
    workers: list[subprocess.Popen[bytes]] = []
    print(f"team mode: 3 workers × concurrency 4, fake agent, heartbeat {HEARTBEAT_S:g}s")
    try:
        # Baseline: the same submit → start on one machine (SQLite, the supervisor spawned
        # by the submitting process).
        with as_host(host_env(root, "local", None)):
            local = latency_ms(wait_all(submit(20, "# bench\n"), 120))
        with database() as url:
            workers = [start_worker(root, url, f"box-{n}", 4) for n in (1, 2, 3)]
            laptop = host_env(root, "laptop", url)
            with as_host(laptop):
                one_by_one = []
                for _ in range(20):  # each alone: the latency of an idle team
                    one_by_one += wait_all(submit(1, "# bench\n"), 60)
                idle = latency_ms(one_by_one)
                report(
                    "submit → start, idle team (p50 / p95)",
                    f"{pct(idle, 50):.0f} / {pct(idle, 95):.0f} ms",
                    f"local SQLite: {pct(local, 50):.0f} / {pct(local, 95):.0f} ms",
                    "≤ 1000 ms p50",
                )
                began = time.monotonic()
                ids = submit(runs, "# bench\nFAKE:sleep=0.2\n")
                rows = wait_all(ids, 600)
                wall = time.monotonic() - began
                done = [r for r in rows if r.status.value == "completed"]  # type: ignore[attr-defined]
                twice = [r for r in rows if r.attempt != 1]  # type: ignore[attr-defined]
                spread: dict[str, int] = {}
                for row in rows:
                    spread[str(row.host)] = spread.get(str(row.host), 0) + 1  # type: ignore[attr-defined]
                busy = latency_ms(rows)
                report(
                    f"{runs} runs over 3 workers: completed / lost / twice",
                    f"{len(done)} / {runs - len(done)} / {len(twice)}",
                    ", ".join(f"{h} {n}" for h, n in sorted(spread.items())),
                    "0 lost, 0 double-run",
                )
                report(
                    f"{runs} runs: wall time, submit → start p50",
                    f"{wall:.1f} s, {pct(busy, 50):.0f} ms",
                    f"{runs / wall:.1f} runs/s",
                )
                # Host loss: the next run goes to some worker; kill that one.
                (victim_id,) = submit(1, "# long\nFAKE:sleep=60\n")
                victim = wait_all_started(victim_id)
                index = int(str(victim.host).rsplit("-", 1)[1]) - 1  # type: ignore[attr-defined]
                workers[index].send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                (lost,) = wait_all([victim_id], 120)
                found = time.monotonic() - killed_at
                report(
                    "host loss: worker SIGKILLed → host_lost",
                    f"{found:.1f} s ({lost.reason})",  # type: ignore[attr-defined]
                    f"3 × heartbeat = {3 * HEARTBEAT_S:g} s",
                )
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(15)
                if proc.poll() is None:
                    proc.kill()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def wait_all_started(execution_id: int, timeout: float = 60) -> object:
    from emdx.service import Service

    deadline = time.monotonic() + timeout
    with Service() as service:
        while time.monotonic() < deadline:
            row = service.get_execution(execution_id)
            if row.agent_pid and row.host:
                return row
            time.sleep(0.1)
    raise SystemExit("bench: the host-loss run never started")


if __name__ == "__main__":
    sys.exit(main())
