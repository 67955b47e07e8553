"""Fixtures for the fault-injection suite.

Supervisors are real detached processes (`python -m emdx.runner ID`) that inherit `os.environ`,
so the fast timings go there (monkeypatch) and reach the in-process service, the `cli` fixture's
subprocesses, the supervisors and the fake agents alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_helpers import FAKE_CLAUDE, Tracker, World, seed_execution_ids

from emdx import paths
from emdx.service import Service


@pytest.fixture(autouse=True)
def fault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(FAKE_CLAUDE))
    monkeypatch.setenv("EMDX_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "1")
    monkeypatch.setenv("EMDX_RESULT_EXIT_GRACE_SECONDS", "2")
    for name in ("EMDX_MAX_PARALLEL", "EMDX_EXECUTION_ID", "EMDX_DB", "EMDX_LOG_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tracker(isolated_env: Path) -> Iterator[Tracker]:
    """Kills every process the test started (and every process of its EMDX_HOME), then undoes
    its mounts: always, also when the test failed."""
    track = Tracker(root=str(isolated_env.parent))
    try:
        yield track
    finally:
        track.teardown()


@pytest.fixture
def world(isolated_env: Path, tmp_path: Path, tracker: Tracker) -> Iterator[World]:
    service = Service()
    service.store  # noqa: B018 - creates and migrates the database
    seed_execution_ids(paths.db_path())
    w = World(service, tmp_path, tracker)
    w.populate()
    try:
        yield w
    finally:
        # Rows may name processes the reaper's EMDX_HOME scan cannot see (environ unreadable).
        try:
            for row in service.store.executions.list_executions(None, None):
                if row.pid and row.pid_started_at:
                    tracker.add((row.pid, row.pid_started_at))
                if row.agent_pid and row.agent_started_at:
                    tracker.add((row.agent_pid, row.agent_started_at))
        except Exception:  # a test may have corrupted the database on purpose
            pass
        service.close()
