"""Fixtures for the fault-injection suite.

Supervisors are real detached processes (`python -m emdx.runner ID`) that inherit `os.environ`,
so the fast timings go there (monkeypatch) and reach the in-process service, the `cli` fixture's
subprocesses, the supervisors and the fake agents alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_helpers import Tracker, World
from testkit import fake_agent_env, new_service, recorded_identities


@pytest.fixture(autouse=True)
def fault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_agent_env(monkeypatch)


@pytest.fixture
def tracker(isolated_env: Path) -> Iterator[Tracker]:
    """Kills every process the test started (and every process of its runs), then undoes
    its mounts: always, also when the test failed."""
    track = Tracker(root=str(isolated_env.parent))
    try:
        yield track
    finally:
        track.teardown()


@pytest.fixture
def world(isolated_env: Path, tmp_path: Path, tracker: Tracker) -> Iterator[World]:
    service = new_service()
    w = World(service, tmp_path, tracker)
    w.populate()
    try:
        yield w
    finally:
        # Rows may name processes the reaper's EMDX_HOME scan cannot see (environ unreadable);
        # a test may have corrupted the database on purpose (then there are none to read).
        tracker.add(*recorded_identities(service))
        service.close()
