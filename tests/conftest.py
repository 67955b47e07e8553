"""Every test runs with its own EMDX_HOME, HOME and CLAUDE_CONFIG_DIR in temp dirs."""

from __future__ import annotations

import sys
from pathlib import Path

# Test helpers (tests/support: testkit.py and each suite's <suite>_helpers.py):
# `from testkit import …` in every suite.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from collections.abc import Iterator

import pytest
from testkit import Cli, run_emdx


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    # Never run inside the emdx checkout: a gameplan started there would add worktrees and
    # exec-* branches to this repository. Tests that want a repo make one under tmp_path.
    work = tmp_path / "default-cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    emdx_home = tmp_path / "emdx-home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EMDX_HOME", str(emdx_home))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    monkeypatch.delenv("CLAUDECODE", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("EMDX_CLAUDE_BIN", raising=False)
    # A developer's team-mode setting must not send every test to a shared database.
    monkeypatch.delenv("EMDX_DATABASE_URL", raising=False)
    monkeypatch.delenv("EMDX_DATABASE_URL_FD", raising=False)
    yield emdx_home


@pytest.fixture
def cli() -> Cli:
    """`cli("save", "--tags", "note", input="...")` → CliResult(code, stdout, stderr)."""
    return run_emdx
