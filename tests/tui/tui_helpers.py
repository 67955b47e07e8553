"""Helpers for the TUI tests: the fake agent, polling (sync and inside a Pilot), screen text and a
reaper for the supervisors a test started.

Supervisors are real detached processes (`python -m emdx.runner ID`) that inherit `os.environ`,
so the settings go into the environment with monkeypatch (see conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from emdx import system

REPO = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

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


async def pilot_wait(
    pilot: Any,
    predicate: Callable[[], T],
    timeout: float = 10.0,
    message: str = "",
    step: float = 0.1,
) -> T:
    """Like `wait_until`, but lets the app run (`pilot.pause`) between polls.

    Blocking calls in `predicate` (SQLite reads) are short; the app's own work is in threads.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        await pilot.pause(step)


def screen_text(app: Any) -> str:
    """What the terminal shows for the active screen, as plain text lines.

    Textual has no public "screen as text" call; the compositor's strips are what
    `export_screenshot` renders too.
    """
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


def log_lines(app: Any) -> list[str]:
    """The text lines of the executions screen's `#run-log` RichLog."""
    log = app.screen.query_one("#run-log")
    return [strip.text.rstrip() for strip in log.lines]


def seed_execution_ids(db: Path) -> int:
    """Make this database hand out execution ids from a random high base, so that concurrent test
    sessions on one machine never share an EMDX_EXECUTION_ID marker (as tests/runner does)."""
    base = random.randrange(10**6, 2**31 - 10**6)
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'executions'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('executions', ?)", (base,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return base


def env_of(pid: int) -> dict[str, str]:
    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return {}


def read_pidfile(path: Path, count: int, timeout: float = 20) -> list[tuple[int, float]]:
    """Wait until the fake agent wrote `count` pids to `path`; their (pid, start time)."""

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


def kill_test_processes(root: str, extra: list[tuple[int, float]]) -> None:
    """SIGKILL the processes of this test's runs: those marked with an EMDX_HOME under `root`
    (the test's tmp dir), and the known (pid, start time) identities still alive."""
    victims = [(p, s) for p, s in extra if system.same_process(p, s)]
    prefix = root.rstrip("/") + "/"
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        env = env_of(proc.pid)
        if env.get("EMDX_HOME", "").startswith(prefix) and system.MARKER in env:
            with contextlib.suppress(psutil.Error):
                victims.append((proc.pid, system.process_start_time(proc.pid) or 0.0))
    for pid, started in victims:
        if system.same_process(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    system.wait_gone(victims, 5.0)
