"""Every test runs with its own EMDX_HOME, HOME and CLAUDE_CONFIG_DIR in temp dirs."""

from __future__ import annotations

import sys
from pathlib import Path

# Shared test helpers (tests/support/testkit.py): `from testkit import …` in every suite.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

REPO = Path(__file__).resolve().parent.parent


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
    yield emdx_home


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    # The bytes as written (the texts above are decoded with "replace", which hides raw bytes).
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""


def run_emdx(
    *args: str,
    input: str | bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> CliResult:
    """Run the real `emdx` entry point in a subprocess (exit codes and stderr as a user sees)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    data = input.encode() if isinstance(input, str) else input
    done = subprocess.run(
        [sys.executable, "-m", "emdx", *args],
        input=data if data is not None else b"",
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return CliResult(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
        done.stdout,
        done.stderr,
    )


@pytest.fixture
def cli() -> object:
    """`cli("save", "--tags", "note", input="...")` → CliResult(code, stdout, stderr)."""
    return run_emdx
