"""The Textual app: a documents screen and an executions screen over `emdx.tui.data`.

All database and process work runs in thread workers; results come back to the UI thread with
`call_from_thread`, so the interface never blocks on SQLite, psutil or a kill's grace period.
Every worker body runs inside `reporting`: whatever it raises becomes a notification (the app
never dies of a worker's error), and its SQL stops when the worker is cancelled (a newer search
replaces it, the app quits), so `q` always quits at once.
Every string that reaches a widget goes through `emdx.format` (sanitised; markup escaped where the
widget parses markup): titles, log lines and error messages can carry agent text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Markdown, RichLog, Static
from textual.worker import get_current_worker

from emdx.errors import EmdxError
from emdx.format import STATUS_STYLES, duration, log_line, markup_safe, money, one_line, sanitize
from emdx.models import Execution
from emdx.service import LogTail
from emdx.tui import data

REFRESH_S = 1.0


def refresh_interval(app: App[None]) -> float:
    """How often live views refresh (EmdxApp's refresh_s; 0 = never)."""
    return float(getattr(app, "refresh_s", REFRESH_S))


def status_text(status: str) -> Text:
    return Text(one_line(status), style=STATUS_STYLES.get(status, ""))


def cell(text: str) -> str:
    """A table cell from user or agent text: one line, sanitised, markup escaped."""
    return markup_safe(one_line(text))


def notify_error(
    app: App[None], exc: BaseException, title: str = "", timeout: float | None = None
) -> None:
    """Show a worker's error as a notification (from the worker's thread). The message can quote
    agent or document text: sanitised, and not read as markup (Textual's own markup has tags,
    `[$variable]`, that no escape function covers). An error emdx did not expect is named by
    its type, so that it can be reported."""
    text = str(exc) if isinstance(exc, EmdxError) else f"unexpected {type(exc).__name__}: {exc}"
    app.call_from_thread(
        app.notify, one_line(text), title=title, severity="error", timeout=timeout, markup=False
    )


def cancelled() -> Callable[[], bool]:
    """The current thread worker's "was I cancelled?", for `emdx.tui.data`'s calls."""
    worker = get_current_worker()
    return lambda: worker.is_cancelled


@contextmanager
def reporting(app: App[None], title: str = "", timeout: float | None = None) -> Iterator[None]:
    """The body of a thread worker: any exception becomes one error notification and the app
    keeps running; a worker cancelled meanwhile says nothing (its SQL was interrupted on
    purpose, and the app may be gone)."""
    try:
        yield
    except Exception as exc:
        if get_current_worker().is_cancelled:
            return
        notify_error(app, exc, title, timeout)


def deliver(app: App[None], callback: Callable[..., Any], *args: Any) -> None:
    """`call_from_thread`, unless the worker was cancelled: a newer one replaces it, or the app
    is quitting and would never run the callback."""
    if not get_current_worker().is_cancelled:
        app.call_from_thread(callback, *args)


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


class DocumentsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x", "execute", "Execute"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: full-text search (/)", id="doc-filter")
        with Horizontal():
            table: DataTable[str] = DataTable(id="docs", cursor_type="row", zebra_stripes=True)
            yield table
            with Vertical(id="doc-side"):
                yield Markdown("", id="preview")
                yield Static("", id="doc-runs", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#docs", DataTable)
        table.add_columns("id", "title", "tags", "project")
        self.load_documents("")
        if refresh_interval(self.app) > 0:
            self.set_interval(2 * refresh_interval(self.app), self._refresh_preview)
        table.focus()

    def _refresh_preview(self) -> None:
        # Keeps the selected document's "recent executions" current while runs progress.
        doc_id = self.selected_doc() if self.app.screen is self else None
        if doc_id is not None:
            self.load_preview(doc_id)

    @on(Input.Changed, "#doc-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.load_documents(event.value)

    @work(thread=True, exclusive=True, group="documents")
    def load_documents(self, query: str) -> None:
        with reporting(self.app):
            rows = data.documents(query, cancelled=cancelled())
            deliver(self.app, self._show_documents, query, rows)

    def _show_documents(self, query: str, rows: list[data.DocumentRow]) -> None:
        if query != self.query_one("#doc-filter", Input).value:
            return  # an older, slower search: the current query's results are on their way
        table = self.query_one("#docs", DataTable)
        table.clear()
        for row in rows:
            table.add_row(
                str(row.id), cell(row.title), cell(row.tags), cell(row.project), key=str(row.id)
            )
        if not rows:
            self.query_one("#preview", Markdown).update("*no documents*")
            self.query_one("#doc-runs", Static).update("")

    @on(DataTable.RowHighlighted, "#docs")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.load_preview(int(event.row_key.value))

    @work(thread=True, exclusive=True, group="preview")
    def load_preview(self, doc_id: int) -> None:
        with reporting(self.app):
            doc, runs = data.document(doc_id, cancelled=cancelled())
            deliver(self.app, self._show_preview, doc.content, runs)

    def _show_preview(self, content: str, runs: list[Execution]) -> None:
        self.query_one("#preview", Markdown).update(sanitize(content[:20_000]))
        lines = [
            one_line(
                f"#{r.id} {r.status.value} {duration(r.duration_s)} exit "
                f"{'-' if r.exit_code is None else r.exit_code}"
            )
            for r in runs
        ]
        self.query_one("#doc-runs", Static).update(
            "recent executions:\n" + ("\n".join(lines) if lines else "none")
        )

    def selected_doc(self) -> int | None:
        table = self.query_one("#docs", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return int(key) if key is not None else None

    def action_execute(self) -> None:
        doc_id = self.selected_doc()
        if doc_id is None:
            self.app.notify("no document selected", severity="warning")
            return
        self.start_run(doc_id)

    @work(thread=True, group="start")
    def start_run(self, doc_id: int) -> None:
        with reporting(self.app, title="cannot execute", timeout=8):
            execution = data.start(doc_id)
            message = f"execution #{execution.id} {execution.status.value} for document #{doc_id}"
            self.app.call_from_thread(self.app.notify, message, title="started")
            deliver(self.app, self.load_preview, doc_id)

    def action_focus_filter(self) -> None:
        self.query_one("#doc-filter", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#docs", DataTable).focus()


class ExecutionsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "kill", "Kill"),
        Binding("r", "retry", "Retry"),
        Binding("f", "cycle_filter", "Filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_index = 0
        self.selected: int | None = None
        self.tail: LogTail | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="exec-filter")
        table: DataTable[str | Text] = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield table
        yield RichLog(id="run-log", wrap=False, markup=False, max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns(
            "id", "document", "type", "status", "duration", "cost", "heartbeat", "exit"
        )
        self._show_filter()
        self.refresh_runs()
        if refresh_interval(self.app) > 0:
            self.set_interval(refresh_interval(self.app), self.tick)
        table.focus()

    def tick(self) -> None:
        if self.app.screen is self:
            self.refresh_runs()

    def _show_filter(self) -> None:
        name = data.STATUS_FILTERS[self.filter_index][0]
        self.query_one("#exec-filter", Static).update(f"status: [b]{name}[/b]  (f to change)")

    def action_cycle_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(data.STATUS_FILTERS)
        self._show_filter()
        self.refresh_runs()

    @work(thread=True, exclusive=True, group="runs")
    def refresh_runs(self) -> None:
        filter_index = self.filter_index
        tail = self.tail
        with reporting(self.app):
            runs = data.executions(data.STATUS_FILTERS[filter_index][1], cancelled=cancelled())
            entries = tail.poll() if tail is not None else []
            deliver(self.app, self._show_runs, filter_index, runs, tail, entries)

    def _show_runs(
        self,
        filter_index: int,
        runs: list[Execution],
        tail: LogTail | None,
        entries: list[dict[str, object]],
    ) -> None:
        if tail is self.tail:
            log = self.query_one("#run-log", RichLog)
            for entry in entries:
                log.write(log_line(entry))
        if filter_index != self.filter_index:
            return  # a refresh for the previous filter finished late; a newer one follows
        table = self.query_one("#runs", DataTable)
        keep = self.selected
        # Rebuilding moves the cursor to row 0; without this the log pane would jump to the top
        # run and back on every refresh.
        with self.prevent(DataTable.RowHighlighted):
            self._fill_table(table, runs)
            listed = [ex.id for ex in runs]
            if keep in listed:
                table.move_cursor(row=listed.index(keep))
        if keep not in listed:
            self.selected = listed[0] if listed else None
            if self.selected is not None:
                self.follow_log(self.selected)
            else:
                self.tail = None
                self.query_one("#run-log", RichLog).clear()

    def _fill_table(self, table: DataTable[str | Text], runs: list[Execution]) -> None:
        table.clear()
        for ex in runs:
            beat = (
                "-"
                if ex.heartbeat_age_s is None or ex.status.is_final
                else f"{ex.heartbeat_age_s:.0f}s"
            )
            table.add_row(
                str(ex.id),
                cell(one_line(ex.doc_title)[:40]),
                cell(ex.exec_type),
                status_text(ex.status.value),
                duration(ex.duration_s),
                money(ex.cost_usd),
                beat,
                "-" if ex.exit_code is None else str(ex.exit_code),
                key=str(ex.id),
            )

    @on(DataTable.RowHighlighted, "#runs")
    def run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is None:
            return
        execution_id = int(event.row_key.value)
        if execution_id == self.selected:
            return
        self.selected = execution_id
        self.follow_log(execution_id)

    @work(thread=True, exclusive=True, group="log")
    def follow_log(self, execution_id: int) -> None:
        with reporting(self.app):
            ex = data.execution(execution_id, cancelled=cancelled())
            tail = data.log_tail(ex)
            entries = tail.poll() if tail is not None else []
            deliver(self.app, self._start_log, execution_id, tail, entries)

    def _start_log(
        self, execution_id: int, tail: LogTail | None, entries: list[dict[str, object]]
    ) -> None:
        if execution_id != self.selected:
            return
        self.tail = tail
        log = self.query_one("#run-log", RichLog)
        log.clear()
        log.write(f"— execution #{execution_id} —")
        for entry in entries:
            log.write(log_line(entry))

    def action_kill(self) -> None:
        execution_id = self.selected
        if execution_id is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.kill_run(execution_id)

        self.app.push_screen(ConfirmScreen(f"Kill execution #{execution_id}?"), answered)

    @work(thread=True, group="kill")
    def kill_run(self, execution_id: int) -> None:
        with reporting(self.app, title="kill"):
            result = data.kill(execution_id)
            ex = result.execution
            text = (
                f"execution #{ex.id} already {ex.status.value}"
                if result.already_final
                else f"execution #{ex.id} {ex.status.value} (exit {ex.exit_code})"
            )
            self.app.call_from_thread(self.app.notify, text, title="kill")
            deliver(self.app, self.refresh_runs)

    def action_retry(self) -> None:
        if self.selected is not None:
            self.retry_run(self.selected)

    @work(thread=True, group="retry")
    def retry_run(self, execution_id: int) -> None:
        with reporting(self.app, title="cannot retry"):
            ex = data.retry(execution_id)
            self.app.call_from_thread(
                self.app.notify,
                f"execution #{ex.id} {ex.status.value}",
                title=f"retry of #{execution_id}",
            )
            deliver(self.app, self.refresh_runs)


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
