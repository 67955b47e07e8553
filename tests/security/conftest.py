"""Fixtures for the hostile-input suite: the fake agent with fast timings (supervisors inherit
`os.environ`), a Service on this test's EMDX_HOME and the reaper of every process its runs
started (from testkit)."""

from __future__ import annotations

import pytest
from testkit import fake_agent_env, reap_leftovers, service


@pytest.fixture(autouse=True)
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_agent_env(monkeypatch)


__all__ = ["agent_env", "reap_leftovers", "service"]
