"""The executions screen: the runs (refreshed every second, filterable by status), the selected
run's log as it grows, and `k` / `r` to kill (asks first) or retry the selected run."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from emdx.format import duration, log_line, money, one_line
from emdx.models import Execution
from emdx.service import LogTail
from emdx.tui import data
from emdx.tui.messages import LogOpened, RunKilled, RunRetried, RunsLoaded
from emdx.tui.modals import ConfirmScreen
from emdx.tui.screens.shared import cell, refresh_interval, status_text
from emdx.tui.workers import cancelled, post, reporting


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
            post(self, RunsLoaded(filter_index, runs, tail, entries))

    @on(RunsLoaded)
    def show_runs(self, message: RunsLoaded) -> None:
        if message.tail is self.tail:
            log = self.query_one("#run-log", RichLog)
            for entry in message.entries:
                log.write(log_line(entry))
        if message.filter_index != self.filter_index:
            return  # a refresh for the previous filter finished late; a newer one follows
        table = self.query_one("#runs", DataTable)
        keep = self.selected
        # Rebuilding moves the cursor to row 0; without this the log pane would jump to the top
        # run and back on every refresh.
        with self.prevent(DataTable.RowHighlighted):
            self._fill_table(table, message.runs)
            listed = [ex.id for ex in message.runs]
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
            post(self, LogOpened(execution_id, tail, entries))

    @on(LogOpened)
    def show_log(self, message: LogOpened) -> None:
        if message.execution_id != self.selected:
            return
        self.tail = message.tail
        log = self.query_one("#run-log", RichLog)
        log.clear()
        log.write(f"— execution #{message.execution_id} —")
        for entry in message.entries:
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
            post(self, RunKilled(data.kill(execution_id)))

    @on(RunKilled)
    def run_killed(self, message: RunKilled) -> None:
        ex = message.result.execution
        text = (
            f"execution #{ex.id} already {ex.status.value}"
            if message.result.already_final
            else f"execution #{ex.id} {ex.status.value} (exit {ex.exit_code})"
        )
        self.app.notify(text, title="kill")
        self.refresh_runs()

    def action_retry(self) -> None:
        if self.selected is not None:
            self.retry_run(self.selected)

    @work(thread=True, group="retry")
    def retry_run(self, execution_id: int) -> None:
        with reporting(self.app, title="cannot retry"):
            post(self, RunRetried(execution_id, data.retry(execution_id)))

    @on(RunRetried)
    def run_retried(self, message: RunRetried) -> None:
        ex = message.execution
        self.app.notify(
            f"execution #{ex.id} {ex.status.value}", title=f"retry of #{message.retried_id}"
        )
        self.refresh_runs()
