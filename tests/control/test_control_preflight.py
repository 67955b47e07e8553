"""The pre-flight before a start (issue 11 items 17, 18): it runs the agent (`--version`), says
exactly what is wrong with a binary that cannot run, and remembers a binary that passed."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from control_helpers import Ctl
from testkit import FAKE_CLAUDE

from emdx import paths


def _stub(tmp: Path) -> Path:
    """What `npm install --ignore-scripts` leaves as `claude`: ~500 bytes of text with the x
    bit and no `#!` line, which exec refuses (ENOEXEC)."""
    path = tmp / "stub" / "claude"
    path.parent.mkdir()
    path.write_text("This is a placeholder; the postinstall script links the real binary.\n" * 7)
    path.chmod(0o755)
    return path


def _fails(tmp: Path) -> Path:
    path = tmp / "fails" / "claude"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\necho 'claude: broken install' >&2\nexit 3\n")
    path.chmod(0o755)
    return path


def _directory(tmp: Path) -> Path:
    path = tmp / "a-directory"
    path.mkdir()
    return path


def _not_executable(tmp: Path) -> Path:
    path = tmp / "plain" / "claude"
    path.parent.mkdir()
    path.write_bytes(FAKE_CLAUDE.read_bytes())
    path.chmod(0o644)
    return path


BAD = {
    "stub": (_stub, "Exec format error"),
    "fails": (_fails, "--version exited 3: claude: broken install"),
    "directory": (_directory, "is a directory"),
    "not-executable": (_not_executable, "is not executable"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_an_agent_that_cannot_run_is_refused_before_any_row(
    ctl: Ctl, tmp_path: Path, kind: str
) -> None:
    """Item 18: `check-env` said ❌ for a binary that cannot run but `execute` ran it anyway
    (item 17: a directory or a file without the x bit was "not found"). Pre-flight runs
    `claude --version`: such a binary is refused, exit 126 like a shell, before a row exists."""
    make, reason = BAD[kind]
    binary = make(tmp_path)
    env = {"EMDX_CLAUDE_BIN": str(binary)}
    doc = ctl.doc("never runs\nFAKE:events=1\n")

    for mode in ("--background", "--no-smart"):
        result = ctl.emdx("claude", "execute", str(doc), mode, env=env)
        assert (result.code, result.stdout) == (126, ""), result
        [line] = result.stderr.splitlines()
        assert line.startswith("emdx: error: Claude Code cannot run: "), line
        assert str(binary) in line and reason in line, line
        assert "not found" not in line

    assert ctl.rows() == []
    assert list(paths.runs_dir().iterdir()) == []
    assert not list(paths.logs_dir().glob("*"))
    assert not paths.agent_check_path().exists()

    report = ctl.emdx("claude", "check-env", env=env)
    assert report.code == 1
    claude = next(line for line in report.stdout.splitlines() if " claude" in line)
    assert claude.startswith("❌ claude: ") and reason in claude, report.stdout


def _counting_agent(tmp: Path, counter: Path, version_exit: int = 0) -> Path:
    """The fake agent behind a wrapper that notes every `--version` it answers."""
    path = tmp / "counting" / "claude"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then\n'
        f"  echo run >> '{counter}'\n"
        '  echo "2.1.332 (Claude Code, counted)"\n'
        f"  exit {version_exit}\n"
        "fi\n"
        f"exec '{sys.executable}' '{FAKE_CLAUDE}' \"$@\"\n"
    )
    path.chmod(0o755)
    return path


def test_a_binary_that_passed_is_not_run_again_until_it_changes(
    ctl: Ctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 18: the check costs a run of the agent (about a second for the real CLI), and
    `execute --background` has a latency budget: a success is kept in EMDX_HOME, keyed by the
    binary's resolved path, size, mtime and inode; a changed binary is checked again."""
    counter = tmp_path / "version-runs"
    agent = _counting_agent(tmp_path, counter)
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(agent))

    def checks() -> int:
        return len(counter.read_text().split()) if counter.exists() else 0

    first = ctl.run("one\nFAKE:events=1\n", "--no-smart")
    second = ctl.run("two\nFAKE:events=1\n", "--no-smart")
    assert checks() == 1
    cache = paths.agent_check_path()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert "counted" in cache.read_text()
    for execution_id in (first, second):
        assert ctl.wait_final(execution_id).status.value == "completed"

    # Changed in place (size and mtime): checked again, once.
    with agent.open("a") as handle:
        handle.write("# reinstalled\n")
    ctl.run("three\nFAKE:events=1\n", "--no-smart")
    ctl.run("four\nFAKE:events=1\n", "--no-smart")
    assert checks() == 2

    # Replaced by one that no longer runs: refused, whatever the cache said about the old one.
    replacement = _counting_agent(tmp_path / "new", counter, version_exit=1)
    os.replace(replacement, agent)
    refused = ctl.emdx("claude", "execute", str(ctl.doc("five\n")), "--background")
    assert refused.code == 126, refused
    assert "--version exited 1" in refused.stderr
    assert checks() == 3
    assert len(ctl.rows()) == 4


def _home_is_a_file(tmp: Path) -> Path:
    home = tmp / "home-file"
    home.write_text("not a directory")
    return home


@pytest.mark.parametrize("args", [("list",), ("exec", "list"), ("claude", "execute", "1", "-b")])
def test_emdx_home_that_is_a_regular_file_says_so(
    ctl: Ctl, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Item 17: the fix hint for an EMDX_HOME that is a regular file said "make the parent
    writable"; it says the path is a file."""
    home = _home_is_a_file(tmp_path)
    result = ctl.emdx(*args, env={"EMDX_HOME": str(home)})
    assert (result.code, result.stdout) == (1, ""), result
    [line] = result.stderr.splitlines()
    assert line.startswith("emdx: error: ") and str(home) in line
    assert f"{home} is a file, not a directory" in line, line
    assert "writable" not in line
    assert home.read_text() == "not a directory"
