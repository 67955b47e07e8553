"""Helpers for the TUI tests: polling inside a Pilot and screen text (the fake agent, polling
and the reaper for the supervisors a test started are in tests/support/testkit.py).

Supervisors are real detached processes (`python -m emdx.runner ID`) that inherit `os.environ`,
so the settings go into the environment with monkeypatch (see conftest.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from testkit import REPO, Deadline
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import RichLog

VENV_PYTHON = REPO / ".venv" / "bin" / "python"

T = TypeVar("T")

# What a snapshot test does before the screenshot (pytest-textual-snapshot's `run_before`).
RunBefore = Callable[[Pilot[None]], Awaitable[None]]


class SnapCompare(Protocol):
    """pytest-textual-snapshot's `snap_compare` fixture: True when the screenshot matches."""

    def __call__(
        self,
        app: App[None],
        press: Iterable[str] = ...,
        terminal_size: tuple[int, int] = ...,
        run_before: RunBefore | None = ...,
    ) -> bool: ...


async def pilot_wait(
    pilot: Pilot[None],
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    message: str = "",
    step: float = 0.1,
) -> T:
    """Like `wait_until`, but lets the app run (`pilot.pause`) between polls.

    Blocking calls in `predicate` (SQLite reads) are short; the app's own work is in threads.
    """
    deadline = Deadline(timeout, message or str(predicate))
    while not (value := deadline.poll(predicate)):
        await pilot.pause(step)
    return value


def screen_text(app: App[None]) -> str:
    """What the terminal shows for the active screen, as plain text lines.

    Textual has no public "screen as text" call; the compositor's strips are what
    `export_screenshot` renders too.
    """
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


def log_lines(app: App[None]) -> list[str]:
    """The text lines of the executions screen's `#run-log` RichLog."""
    log = app.screen.query_one("#run-log", RichLog)
    return [strip.text.rstrip() for strip in log.lines]
