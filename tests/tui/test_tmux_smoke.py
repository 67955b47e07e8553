"""`emdx gui` in a real terminal: tmux runs it, we read the screen with capture-pane and type.

tmux is required (CI installs it): without it this test fails, it does not skip. Each test uses a
private tmux server (`-L <unique socket>`, no config file) that is killed at teardown.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import wait_until
from tui_helpers import VENV_PYTHON

from emdx.service import Service


class Tmux:
    def __init__(self, binary: str, socket: str) -> None:
        self.binary = binary
        self.socket = socket

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=check,
        )

    def require(self) -> None:
        if not self.binary:
            pytest.fail(
                "tmux is not installed: the terminal smoke test of `emdx gui` needs it "
                "(apt-get install tmux); CI installs it",
                pytrace=False,
            )

    def capture(self, session: str) -> str:
        done = self("capture-pane", "-p", "-t", session, check=False)
        return done.stdout if done.returncode == 0 else ""

    def wait_for(self, session: str, wanted: list[str], timeout: float) -> str:
        """The pane text once it contains every string of `wanted`."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.capture(session)
            if all(w in text for w in wanted):
                return text
            if time.monotonic() >= deadline:
                raise AssertionError(f"{wanted} not on screen after {timeout}s; pane:\n{text}")
            time.sleep(0.2)

    def alive(self, session: str) -> bool:
        return self("has-session", "-t", session, check=False).returncode == 0


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A private tmux server (killed at teardown). A missing tmux is the test's failure (not a
    setup error, not a skip): the check is in `Tmux.require`, called by the test."""
    server = Tmux(shutil.which("tmux") or "", f"emdx-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield server
    finally:
        if server.binary:
            server("kill-server", check=False)


def test_gui_in_tmux(tmux: Tmux, service: Service, tmp_path: Path) -> None:
    tmux.require()
    title = "Smoke test document"
    service.save_document("# Smoke test document\n\nhello from tmux\n", title=title, detect=False)
    exit_file = tmp_path / "gui-exit-code"
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    env = {
        "EMDX_HOME": os.environ["EMDX_HOME"],
        "HOME": os.environ["HOME"],
        "CLAUDE_CONFIG_DIR": os.environ["CLAUDE_CONFIG_DIR"],
        "EMDX_CLAUDE_BIN": os.environ["EMDX_CLAUDE_BIN"],
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "tmux-256color",
    }
    command = (
        "env -i "
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        + f" {shlex.quote(str(python))} -m emdx gui; echo $? > {shlex.quote(str(exit_file))}"
    )
    session = "gui"
    tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "40", command)

    screen = tmux.wait_for(session, [title, "hello from tmux"], 20)
    assert "filter: full-text search" in screen

    tmux("send-keys", "-t", session, "e")
    screen = tmux.wait_for(session, ["status: all", "heartbeat"], 10)
    assert "Kill" in screen

    tmux("send-keys", "-t", session, "q")
    wait_until(
        lambda: not tmux.alive(session),
        10,
        interval=0.2,
        message="the tmux session to end after q",
    )
    assert exit_file.read_text().strip() == "0"
