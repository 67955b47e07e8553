"""Fixtures for the TUI tests: the fake agent with fast timings, a Service on this test's
EMDX_HOME, UTC local time, and a reaper for every process a test's runs started."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_helpers import FAKE_CLAUDE, env_of, kill_test_processes, seed_execution_ids

from emdx import paths, system
from emdx.service import Service


@pytest.fixture(autouse=True)
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake agent and short timings; supervisors the TUI starts inherit os.environ."""
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(FAKE_CLAUDE))
    monkeypatch.setenv("EMDX_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "1")
    monkeypatch.setenv("EMDX_RESULT_EXIT_GRACE_SECONDS", "2")
    monkeypatch.delenv("EMDX_MAX_PARALLEL", raising=False)
    monkeypatch.delenv("EMDX_EXECUTION_ID", raising=False)
    monkeypatch.delenv("EMDX_DB", raising=False)


@pytest.fixture(autouse=True)
def reap_leftovers(isolated_env: Path) -> Iterator[None]:
    """Whatever a test's runs started is SIGKILLed when the test ends."""
    yield
    kill_test_processes(str(isolated_env.parent), [])


@pytest.fixture
def service(isolated_env: Path) -> Iterator[Service]:
    """A Service on this test's database (created, execution ids seeded high); at teardown every
    process of every run in it is killed."""
    svc = Service()
    svc.store  # noqa: B018 - creates and migrates the database
    seed_execution_ids(paths.db_path())
    root = str(isolated_env.parent) + "/"
    try:
        yield svc
    finally:
        extra: list[tuple[int, float]] = []
        with contextlib.suppress(Exception):
            for row in svc.store.executions.list_executions(None, None):
                if row.pid and row.pid_started_at:
                    extra.append((row.pid, row.pid_started_at))
                if row.agent_pid and row.agent_started_at:
                    extra.append((row.agent_pid, row.agent_started_at))
                for pid, started in system.marked_processes(row.id):
                    if env_of(pid).get("EMDX_HOME", "").startswith(root):
                        extra.append((pid, started))
        kill_test_processes(str(isolated_env.parent), extra)
        svc.close()


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time is UTC in this process (log lines show local HH:MM:SS); restored afterwards."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()
