"""Helpers and fixtures for the supervisor tests: the fake agent, fast timings, polling, reaping.

Supervisors are real detached processes (`python -m emdx.runner ID`) that inherit the environment
of whoever starts them, so the settings here go into `os.environ` (monkeypatch) and reach both the
in-process service and the `cli` fixture's subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from emdx import paths, system
from emdx.models import Execution
from emdx.service import Service

REPO = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def env_of(pid: int) -> dict[str, str]:
    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return {}


def seed_execution_ids(db: Path, last_id: int | None = None) -> int:
    """Make this database hand out execution ids from a random high base.

    Every test has its own EMDX_HOME whose ids would start at 1; runs are found again by the
    `EMDX_EXECUTION_ID=<id>` marker in their environment. Distinct ids keep concurrent test
    sessions on this machine apart even if a marker check ever ignores the data dir (it did once,
    see test_marker_is_not_shared_across_homes).
    """
    base = last_id if last_id is not None else random.randrange(10**6, 2**31 - 10**6)
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'executions'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('executions', ?)", (base,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return base


def run_processes(execution_id: int) -> list[tuple[int, float]]:
    """`system.marked_processes(id)` limited to this test's EMDX_HOME (ids repeat across tests)."""
    home = os.environ["EMDX_HOME"]
    return [
        (pid, started)
        for pid, started in system.marked_processes(execution_id)
        if env_of(pid).get("EMDX_HOME") == home
    ]


def read_pidfile(path: Path, count: int = 1, timeout: float = 20) -> list[tuple[int, float]]:
    """Wait until the fake wrote `count` pids to `path`; return their identities while alive."""

    def ready() -> list[int] | None:
        try:
            pids = [int(p) for p in path.read_text().split()]
        except (OSError, ValueError):
            return None
        return pids if len(pids) >= count else None

    pids = wait_until(ready, timeout, message=f"pidfile {path}")
    found = system.identify(pids)
    assert len(found) == len(pids), f"processes {pids} already gone when read"
    return found


class Runs:
    """Helpers bound to one test's Service."""

    def __init__(self, service: Service, tmp_path: Path) -> None:
        self.service = service
        self.tmp_path = tmp_path
        self._n = 0

    def doc(self, content: str, title: str = "test doc") -> int:
        return self.service.save_document(content, title=title, detect=False).id

    def pidfile(self) -> Path:
        self._n += 1
        return self.tmp_path / f"pids-{self._n}"

    def get(self, execution_id: int) -> Execution:
        return self.service.store.executions.get(execution_id)

    def wait_status(self, execution_id: int, statuses: set[str], timeout: float = 30) -> Execution:
        def check() -> Execution | None:
            row = self.get(execution_id)
            return row if row.status.value in statuses else None

        try:
            return wait_until(check, timeout, message=f"execution {execution_id} in {statuses}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose(execution_id)}") from None

    def diagnose(self, execution_id: int) -> str:
        """The row, the supervisor's stderr and the end of the run log, for failure messages."""
        row = self.get(execution_id)
        err = paths.logs_dir() / f"{execution_id}.runner.err"
        stderr = err.read_text(errors="replace")[-2000:] if err.exists() else "(none)"
        log = paths.run_log_path(execution_id)
        tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
        alive = system.same_process(row.pid, row.pid_started_at)
        return (
            f"row: status={row.status.value} exit={row.exit_code} reason={row.reason} "
            f"pid={row.pid} (alive={alive}) agent_pid={row.agent_pid}\n"
            f"runner stderr: {stderr}\nlog tail:\n" + "\n".join(t[:300] for t in tail)
        )

    def wait_final(self, execution_id: int, timeout: float = 30) -> Execution:
        return self.wait_status(execution_id, {"completed", "failed", "killed"}, timeout)

    def wait_running_agent(self, execution_id: int, timeout: float = 20) -> Execution:
        def check() -> Execution | None:
            row = self.get(execution_id)
            if row.status.is_final:
                raise AssertionError(f"execution {execution_id} ended early: {row}")
            return row if row.agent_pid and row.agent_started_at else None

        return wait_until(check, timeout, message=f"agent of execution {execution_id}")

    def assert_all_gone(
        self,
        row: Execution,
        extra: Sequence[tuple[int, float]] = (),
        timeout: float = 15,
    ) -> None:
        """Supervisor, agent, listed processes and every marked process of the run are gone."""
        targets = list(extra)
        if row.pid:
            assert row.pid_started_at is not None, "supervisor start time not recorded"
            targets.append((row.pid, row.pid_started_at))
        if row.agent_pid:
            assert row.agent_started_at is not None, "agent start time not recorded"
            targets.append((row.agent_pid, row.agent_started_at))

        def gone() -> bool:
            return not any(system.same_process(p, s) for p, s in targets)

        wait_until(gone, timeout, message=f"processes of execution {row.id} to exit")
        wait_until(lambda: not run_processes(row.id), timeout, message="marked processes")


@pytest.fixture(autouse=True)
def runner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(FAKE_CLAUDE))
    monkeypatch.setenv("EMDX_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "1")
    monkeypatch.setenv("EMDX_RESULT_EXIT_GRACE_SECONDS", "2")
    monkeypatch.delenv("EMDX_MAX_PARALLEL", raising=False)
    monkeypatch.delenv("EMDX_EXECUTION_ID", raising=False)


def _kill_test_processes(root: str, extra: list[tuple[int, float]]) -> None:
    """SIGKILL every process of this test's runs: marked ones whose EMDX_HOME is under the test's
    tmp dir, and the known pids."""
    victims = [(p, s) for p, s in extra if system.same_process(p, s)]
    prefix = root.rstrip("/") + "/"
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        env = env_of(proc.pid)
        if env.get("EMDX_HOME", "").startswith(prefix) and "EMDX_EXECUTION_ID" in env:
            with contextlib.suppress(psutil.Error):
                victims.append((proc.pid, system.process_start_time(proc.pid) or 0.0))
    for pid, started in victims:
        if system.same_process(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    system.wait_gone(victims, 5.0)


@pytest.fixture
def service(isolated_env: Path) -> Iterator[Service]:
    svc = Service()
    root = str(isolated_env.parent) + "/"
    svc.store  # noqa: B018 - creates and migrates the database
    seed_execution_ids(paths.db_path())
    try:
        yield svc
    finally:
        extra: list[tuple[int, float]] = []
        ids: list[int] = []
        with contextlib.suppress(Exception):
            for row in svc.store.executions.list_executions(None, None):
                ids.append(row.id)
                if row.pid and row.pid_started_at:
                    extra.append((row.pid, row.pid_started_at))
                if row.agent_pid and row.agent_started_at:
                    extra.append((row.agent_pid, row.agent_started_at))
        for execution_id in ids:
            for pid, started in system.marked_processes(execution_id):
                if env_of(pid).get("EMDX_HOME", "").startswith(root):
                    extra.append((pid, started))
        _kill_test_processes(str(isolated_env.parent), extra)
        svc.close()


@pytest.fixture
def runs(service: Service, tmp_path: Path) -> Runs:
    return Runs(service, tmp_path)


@pytest.fixture(autouse=True)
def reap_leftovers(isolated_env: Path) -> Iterator[None]:
    """Whatever a test started (CLI runs included) is killed when it ends."""
    yield
    _kill_test_processes(str(isolated_env.parent), [])


def result_payload(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The fake agent's result text (prompt size, sha256, argv) from a run's log entries."""
    results = [e for e in entries if e.get("type") == "result"]
    assert results, "no result entry in the log"
    return dict(json.loads(results[-1]["raw"]["result"]))
