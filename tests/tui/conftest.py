"""Fixtures for the TUI tests: the fake agent with fast timings, a Service on this test's
EMDX_HOME, UTC local time, and a reaper for every process a test's runs started (the last two
from testkit)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from testkit import fake_agent_env, reap_leftovers, service


@pytest.fixture(autouse=True)
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake agent and short timings; supervisors the TUI starts inherit os.environ."""
    fake_agent_env(monkeypatch)


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


__all__ = ["agent_env", "reap_leftovers", "service", "utc"]
