"""The TUI's modal screens: the yes/no question before a kill, and the keys help."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown

from emdx.format import sanitize


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no question; `y` confirms, `n` or escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(sanitize(self.question), markup=False)
            yield Label("[b]y[/b] yes   [b]n[/b] no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


HELP = """\
# emdx — keys

| key | where | what |
|---|---|---|
| `d` | anywhere | documents screen |
| `e` | anywhere | executions screen |
| `/` | documents | filter (full-text search as you type) |
| `x` | documents | execute the selected document in the background |
| `k` | executions | kill the selected run (asks first) |
| `r` | executions | retry the selected run |
| `f` | executions | cycle the status filter |
| `?` | anywhere | this help |
| `q` | anywhere | quit (running executions keep running) |
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Markdown(HELP)
            yield Label("escape to close")

    def action_close(self) -> None:
        self.dismiss(None)
