"""The documents screen: the filterable list, the selected document's preview and its recent
runs, and `x` to execute it in the background."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Markdown, Static

from emdx.format import duration, one_line, sanitize
from emdx.tui import data
from emdx.tui.messages import DocumentsLoaded, PreviewLoaded, RunStarted
from emdx.tui.screens.shared import cell, refresh_interval
from emdx.tui.workers import cancelled, post, reporting


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
            post(self, DocumentsLoaded(query, rows))

    @on(DocumentsLoaded)
    def show_documents(self, message: DocumentsLoaded) -> None:
        if message.query != self.query_one("#doc-filter", Input).value:
            return  # an older, slower search: the current query's results are on their way
        table = self.query_one("#docs", DataTable)
        table.clear()
        for row in message.rows:
            table.add_row(
                str(row.id), cell(row.title), cell(row.tags), cell(row.project), key=str(row.id)
            )
        if not message.rows:
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
            post(self, PreviewLoaded(doc_id, doc.content, runs))

    @on(PreviewLoaded)
    def show_preview(self, message: PreviewLoaded) -> None:
        self.query_one("#preview", Markdown).update(sanitize(message.content[:20_000]))
        lines = [
            one_line(
                f"#{r.id} {r.status.value} {duration(r.duration_s)} exit "
                f"{'-' if r.exit_code is None else r.exit_code}"
            )
            for r in message.runs
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
            post(self, RunStarted(doc_id, data.start(doc_id)))

    @on(RunStarted)
    def run_started(self, message: RunStarted) -> None:
        ex = message.execution
        self.app.notify(
            f"execution #{ex.id} {ex.status.value} for document #{message.doc_id}",
            title="started",
        )
        self.load_preview(message.doc_id)

    def action_focus_filter(self) -> None:
        self.query_one("#doc-filter", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#docs", DataTable).focus()
