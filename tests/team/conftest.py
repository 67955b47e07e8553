"""Fixtures of the team-mode suite (see team_helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from team_helpers import Team, fake_agent_env, team_database


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    """A team database, hosts with the fake agent; every process killed at the end."""
    with team_database() as url:
        made = Team(url, tmp_path, fake_agent_env(tmp_path))
        try:
            yield made
        finally:
            made.stop()
