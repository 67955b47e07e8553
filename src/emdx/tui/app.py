"""The Textual app: a documents screen and an executions screen over `emdx.tui.data`.

The screens (`emdx.tui.screens`) do all database and process work in thread workers, which post
their results back as typed messages (`emdx.tui.messages`), so the interface never blocks on
SQLite, psutil or a kill's grace period. Every worker body runs inside `workers.reporting`:
whatever it raises becomes a notification (the app never dies of a worker's error), and its SQL
stops when the worker is cancelled (a newer search replaces it, the app quits), so `q` always
quits at once. Every string that reaches a widget goes through `emdx.format` (sanitised; markup
escaped where the widget parses markup): titles, log lines and error messages can carry agent
text.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from emdx.tui.modals import HelpScreen
from emdx.tui.screens.documents import DocumentsScreen
from emdx.tui.screens.executions import ExecutionsScreen
from emdx.tui.screens.shared import REFRESH_S

# The screens are importable from here too (tests/security imports them from the app module).
__all__ = ["DocumentsScreen", "EmdxApp", "ExecutionsScreen", "run"]


class EmdxApp(App[None]):
    """emdx: documents and executions."""

    TITLE = "emdx"
    CSS_PATH = "app.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "switch_mode('documents')", "Documents"),
        Binding("e", "switch_mode('executions')", "Executions"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]
    MODES: ClassVar[dict[str, type[Screen[None]]]] = {  # type: ignore[assignment]
        "documents": DocumentsScreen,
        "executions": ExecutionsScreen,
    }

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        """`refresh_s` is how often live views refresh; 0 turns the timers off (frozen views
        for snapshot tests: a refresh landing mid-capture would make them flaky)."""
        super().__init__()
        self.refresh_s = refresh_s

    def on_mount(self) -> None:
        self.switch_mode("documents")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())


def run() -> None:
    EmdxApp().run()
