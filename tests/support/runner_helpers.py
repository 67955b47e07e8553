"""Helpers and fixtures for the supervisor tests: a Service per test, its runs, reaping (the
shared helpers are in tests/support/testkit.py).

Supervisors are real detached processes (`python -m emdx.runner ID`) that inherit the environment
of whoever starts them, so the settings here go into `os.environ` (monkeypatch) and reach both the
in-process service and the `cli` fixture's subprocesses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from testkit import RunWaits, assert_run_gone, fake_agent_env

from emdx.models import Execution
from emdx.service import Service


class Runs(RunWaits):
    """Helpers bound to one test's Service."""

    def __init__(self, service: Service, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.service = service

    def doc(self, content: str, title: str = "test doc") -> int:
        return self.service.save_document(content, title=title, detect=False).id

    def get(self, execution_id: int) -> Execution:
        return self.service.store.executions.get(execution_id)

    def assert_all_gone(
        self,
        row: Execution,
        extra: Sequence[tuple[int, float]] = (),
        timeout: float = 15,
    ) -> None:
        """Supervisor, agent, listed processes and every marked process of the run are gone."""
        assert_run_gone(row, extra, timeout)


@pytest.fixture(autouse=True)
def runner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_agent_env(monkeypatch)


@pytest.fixture
def runs(service: Service, tmp_path: Path) -> Runs:
    return Runs(service, tmp_path)
