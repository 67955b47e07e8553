"""The terminal UI driven by Textual's Pilot, against the real service, supervisor and fake agent.

pytest-asyncio is not a dependency: each test runs its scenario with `asyncio.run`. The app does
its database and process work in thread workers, so every check polls with a deadline while the
app keeps running (`pilot_wait`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testkit import Deadline, agent_of, read_pidfile, supervisor_of, wait_until
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static
from tui_helpers import log_lines, pilot_wait, screen_text

from emdx import paths, system
from emdx.models import ExecOptions, Execution, ExecutionStatus
from emdx.reasons import Reason
from emdx.service import Service
from emdx.tui import app as tui_app
from emdx.tui.app import EmdxApp
from emdx.tui.modals import ConfirmScreen, HelpScreen
from emdx.tui.screens.documents import DocumentsScreen
from emdx.tui.screens.executions import ExecutionsScreen

SIZE = (120, 40)


@dataclass
class Notice:
    message: str
    title: str
    severity: str


class RecordingApp(EmdxApp):
    """EmdxApp that also records every notification it is asked to show (`App.notify` is the one
    public entry point; the toasts themselves are checked on screen)."""

    # Textual resolves a relative CSS_PATH against the subclass's file: point at the app's.
    CSS_PATH = str(Path(tui_app.__file__).parent / str(EmdxApp.CSS_PATH))

    def __init__(self) -> None:
        super().__init__()
        self.notices: list[Notice] = []

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.notices.append(Notice(str(message), title, str(severity)))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


Scenario = Callable[[RecordingApp, Pilot[None]], Awaitable[None]]


def drive(scenario: Scenario) -> RecordingApp:
    """Run `scenario(app, pilot)` against a fresh app in a 120x40 headless terminal."""
    app = RecordingApp()

    async def main() -> None:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await scenario(app, pilot)

    asyncio.run(main())
    return app


# -- small helpers --------------------------------------------------------------------------


def table_ids(app: App[None], selector: str) -> list[int]:
    table = app.screen.query_one(selector, DataTable)
    return [int(table.get_row_at(i)[0]) for i in range(table.row_count)]


def run_cells(app: App[None]) -> dict[int, list[str]]:
    """The executions table as {id: [cell text, ...]}."""
    table = app.screen.query_one("#runs", DataTable)
    rows = {}
    for i in range(table.row_count):
        cells = [getattr(c, "plain", str(c)) for c in table.get_row_at(i)]
        rows[int(cells[0])] = cells
    return rows


def static_text(app: App[None], selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def wait_documents(pilot: Pilot[None], count: int) -> None:
    app = pilot.app
    await pilot_wait(
        pilot,
        lambda: (
            isinstance(app.screen, DocumentsScreen)
            and app.screen.query_one("#docs", DataTable).row_count == count
        ),
        message=f"{count} documents in the table",
    )


async def open_executions(pilot: Pilot[None], ids: list[int]) -> None:
    """Press `e` and wait until the runs table lists exactly `ids` (newest first)."""
    app = pilot.app
    await pilot.press("e")
    await pilot_wait(
        pilot,
        lambda: (
            isinstance(app.screen, ExecutionsScreen)
            and table_ids(app, "#runs") == sorted(ids, reverse=True)
        ),
        message=f"executions table with {ids}",
    )


def doc(service: Service, title: str, body: str) -> int:
    return service.save_document(f"# {title}\n\n{body}\n", title=title, detect=False).id


def start(service: Service, doc_id: int) -> Execution:
    return service.start_execution(doc_id, ExecOptions())


def wait_final(service: Service, execution_id: int, timeout: float = 30) -> Execution:
    def check() -> Execution | None:
        row = service.get_execution(execution_id)
        return row if row.status.is_final else None

    return wait_until(check, timeout, interval=0.1, message=f"execution {execution_id} final")


def wait_agent(service: Service, execution_id: int, timeout: float = 20) -> Execution:
    def check() -> Execution | None:
        row = service.get_execution(execution_id)
        assert not row.status.is_final, f"execution {execution_id} ended early: {row}"
        return row if row.agent_pid and row.agent_started_at and row.pid_started_at else None

    return wait_until(check, timeout, interval=0.1, message=f"agent of {execution_id}")


# -- documents screen ----------------------------------------------------------------------


def test_execute_selected_document_starts_a_run(service: Service) -> None:
    doc_id = doc(service, "Run me", "FAKE:events=3")
    other = doc(service, "Not me", "FAKE:events=1")
    seen: dict[str, Any] = {}

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 2)
        assert table_ids(app, "#docs") == [other, doc_id]
        await pilot.press("down")  # select the second (older) document
        screen = app.screen
        assert isinstance(screen, DocumentsScreen)
        await pilot_wait(pilot, lambda: screen.selected_doc() == doc_id, message="Run me selected")
        await pilot.press("x")
        rows = await pilot_wait(
            pilot, lambda: service.list_executions(None, None), message="a new execution row"
        )
        assert len(rows) == 1
        row = rows[0]
        assert row.doc_id == doc_id
        assert row.doc_title == "Run me"
        notices = await pilot_wait(
            pilot,
            lambda: [n for n in app.notices if n.title == "started"],
            message="the 'started' notification",
        )
        assert f"execution #{row.id}" in notices[0].message
        assert f"for document #{doc_id}" in notices[0].message
        assert notices[0].severity == "information"
        # the toast really is on screen, and the side pane lists the new run
        await pilot_wait(
            pilot, lambda: f"execution #{row.id}" in screen_text(app), message="toast on screen"
        )
        await pilot_wait(
            pilot,
            lambda: f"#{row.id} " in static_text(app, "#doc-runs"),
            message="the run in the document's recent executions",
        )
        seen["id"] = row.id
        assert app.is_running

    drive(scenario)
    final = wait_final(service, seen["id"])
    assert final.status is ExecutionStatus.COMPLETED, final
    assert final.exit_code == 0
    assert final.pid and final.agent_pid
    assert len(service.list_executions(None, None)) == 1


def test_execute_without_agent_binary_shows_error_and_keeps_running(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(tmp_path / "no-such-claude"))
    doc(service, "Cannot run", "FAKE:events=1")

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        await pilot.press("x")
        errors = await pilot_wait(
            pilot,
            lambda: [n for n in app.notices if n.severity == "error"],
            message="an error notification",
        )
        assert errors[0].title == "cannot execute"
        assert "not found" in errors[0].message
        assert "no-such-claude" in errors[0].message
        await pilot_wait(
            pilot, lambda: "cannot execute" in screen_text(app), message="error toast on screen"
        )
        # still alive and responsive
        assert app.is_running
        assert isinstance(app.screen, DocumentsScreen)
        await pilot.press("e")
        await pilot_wait(
            pilot, lambda: isinstance(app.screen, ExecutionsScreen), message="executions"
        )
        assert not [n for n in app.notices if n.title == "started"]

    drive(scenario)
    assert service.list_executions(None, None) == []
    assert not any(paths.runs_dir().iterdir())


def test_filter_narrows_documents_to_full_text_matches(service: Service) -> None:
    alpha = doc(service, "Alpha", "notes about apples")
    beta = doc(service, "Beta", "bananas only")
    gamma = doc(service, "Gamma", "apples and cherries")

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 3)
        assert table_ids(app, "#docs") == [gamma, beta, alpha]
        await pilot.press("slash")
        filter_input = app.screen.query_one("#doc-filter", Input)
        assert filter_input.has_focus
        # `e` is also an app key (executions): typed into the filter it must stay text
        await pilot.press(*"apples")
        assert filter_input.value == "apples"
        await pilot_wait(
            pilot,
            lambda: sorted(table_ids(app, "#docs")) == [alpha, gamma],
            message="only the apple documents",
        )
        assert isinstance(app.screen, DocumentsScreen)
        expected = {hit.document.id for hit in service.find_documents("apples")}
        assert set(table_ids(app, "#docs")) == expected
        filter_input.value = "cherries"
        await pilot_wait(pilot, lambda: table_ids(app, "#docs") == [gamma], message="only Gamma")
        filter_input.value = "durian"
        await pilot_wait(pilot, lambda: table_ids(app, "#docs") == [], message="no documents")
        await pilot_wait(
            pilot, lambda: "no documents" in screen_text(app), message="'no documents' preview"
        )
        filter_input.value = ""
        await pilot_wait(
            pilot, lambda: table_ids(app, "#docs") == [gamma, beta, alpha], message="all again"
        )
        await pilot.press("escape")
        assert app.screen.query_one("#docs", DataTable).has_focus

    drive(scenario)


# -- executions screen ---------------------------------------------------------------------


def test_executions_screen_streams_the_selected_runs_log(service: Service) -> None:
    earlier = start(service, doc(service, "Quick one", "FAKE:events=1"))
    wait_final(service, earlier.id)
    streaming = start(service, doc(service, "Streaming", "FAKE:events=20\nFAKE:interval=0.3"))
    counts: list[int] = []

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 2)
        await open_executions(pilot, [earlier.id, streaming.id])
        cells = run_cells(app)
        assert cells[earlier.id][1:4] == ["Quick one", "generic", "completed"]
        assert cells[earlier.id][7] == "0"
        assert cells[streaming.id][1] == "Streaming"
        assert cells[streaming.id][3] in ("queued", "running")
        # the newest run is highlighted, so its log is followed
        await pilot_wait(
            pilot,
            lambda: log_lines(app)[:1] == [f"— execution #{streaming.id} —"],
            message="the log header of the streaming run",
        )
        deadline = time.monotonic() + 30
        while service.get_execution(streaming.id).status.is_active:
            assert time.monotonic() < deadline, "the streaming run did not finish in 30 s"
            counts.append(len(log_lines(app)))
            await pilot.pause(0.25)
        await pilot_wait(
            pilot,
            lambda: any("step 19" in line for line in log_lines(app)),
            message="the last event in the log pane",
        )
        await pilot_wait(
            pilot,
            lambda: run_cells(app)[streaming.id][3] == "completed",
            message="the table showing completed",
        )
        lines = log_lines(app)
        steps = [line for line in lines if "step " in line]
        assert steps == sorted(set(steps), key=lambda s: int(s.rsplit(" ", 1)[1])), (
            "log lines duplicated or out of order",
            steps,
        )
        assert len(steps) == 20

    drive(scenario)
    # new lines appeared while the run was writing them: the count grew in several steps
    growth = sorted(set(counts))
    assert len(growth) >= 3, counts
    assert counts == sorted(counts), "the log pane lost lines"


def insert_run(db: Path, doc_id: int, title: str, status: str, exit_code: int | None = None) -> int:
    """A finished (or queued) row without any process, for display-only tests."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        cur = conn.execute(
            """INSERT INTO executions (run_key, doc_id, doc_title, exec_type, status, exit_code,
                   created_at, started_at, completed_at)
               VALUES (?, ?, ?, 'generic', ?, ?, '2024-01-01T00:00:00+00:00',
                   '2024-01-01T00:00:00+00:00', ?)""",
            (
                f"test-{title}-{status}",
                doc_id,
                title,
                status,
                exit_code,
                None if status == "queued" else "2024-01-01T00:00:07+00:00",
            ),
        )
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


def test_status_filter_cycles(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    # One slot, held by a live run: the queued row stays queued through the TUI's sweep
    # (whose queue pass would otherwise start it).
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1")
    holder = start(service, doc(service, "Holder", "FAKE:sleep=60"))
    doc_id = doc(service, "Filtered", "FAKE:events=1")
    db = paths.db_path()
    ids = {
        status: insert_run(db, doc_id, "Filtered", status, code)
        for status, code in (("completed", 0), ("failed", 1), ("killed", 143), ("queued", None))
    }
    ids["running"] = holder.id
    expected = [
        ("active", sorted([ids["queued"], holder.id], reverse=True)),
        ("completed", [ids["completed"]]),
        ("failed", [ids["failed"]]),
        ("killed", [ids["killed"]]),
        ("all", sorted(ids.values(), reverse=True)),
    ]

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 2)
        await open_executions(pilot, list(ids.values()))
        assert "status: all" in static_text(app, "#exec-filter")
        assert {r[3] for r in run_cells(app).values()} == {
            "completed",
            "failed",
            "killed",
            "queued",
            "running",
        }

        def filtered(name: str, wanted: list[int]) -> Callable[[], bool]:
            return lambda: (
                f"status: {name}" in static_text(app, "#exec-filter")
                and table_ids(app, "#runs") == wanted
            )

        for name, wanted in expected:
            await pilot.press("f")
            await pilot_wait(
                pilot, filtered(name, wanted), message=f"filter {name} showing {wanted}"
            )

    drive(scenario)


def test_kill_from_executions_screen(service: Service, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    doc_id = doc(
        service, "Long sleeper", f"FAKE:sleep=60\nFAKE:setsid-child\nFAKE:pidfile={pidfile}"
    )
    ex = start(service, doc_id)
    row = wait_agent(service, ex.id)
    agent, grandchild = read_pidfile(pidfile, 2)
    assert agent[0] == row.agent_pid
    assert agent[1] == pytest.approx(row.agent_started_at, abs=1.0)
    assert row.pid is not None and row.pid_started_at is not None
    supervisor = supervisor_of(row)
    processes = [supervisor, agent, grandchild]
    assert all(system.same_process(p, s) for p, s in processes)

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        await open_executions(pilot, [ex.id])
        await pilot_wait(
            pilot, lambda: run_cells(app)[ex.id][3] == "running", message="running in the table"
        )
        screen = app.screen
        assert isinstance(screen, ExecutionsScreen)
        await pilot_wait(pilot, lambda: screen.selected == ex.id, message="run selected")

        # retrying a running run is refused with an error, no new row
        await pilot.press("r")
        await pilot_wait(
            pilot,
            lambda: [n for n in app.notices if n.title == "cannot retry"],
            message="the 'cannot retry' error",
        )
        assert [r.id for r in service.list_executions(None, None)] == [ex.id]

        # `n` in the dialog does nothing
        await pilot.press("k")
        await pilot_wait(pilot, lambda: isinstance(app.screen, ConfirmScreen), message="dialog")
        assert f"Kill execution #{ex.id}?" in screen_text(app)
        await pilot.press("n")
        await pilot_wait(pilot, lambda: app.screen is screen, message="dialog closed")
        await pilot.pause(1.5)  # longer than a kill grace: nothing may have been signalled
        assert service.get_execution(ex.id).status is ExecutionStatus.RUNNING
        assert all(system.same_process(p, s) for p, s in processes)
        assert not [n for n in app.notices if n.title == "kill"]

        # escape cancels too
        await pilot.press("k")
        await pilot_wait(pilot, lambda: isinstance(app.screen, ConfirmScreen), message="dialog")
        await pilot.press("escape")
        await pilot_wait(pilot, lambda: app.screen is screen, message="dialog closed")
        assert service.get_execution(ex.id).status is ExecutionStatus.RUNNING

        # `y` kills
        await pilot.press("k")
        await pilot_wait(pilot, lambda: isinstance(app.screen, ConfirmScreen), message="dialog")
        await pilot.press("y")
        await pilot_wait(pilot, lambda: app.screen is screen, message="dialog closed")
        await pilot_wait(
            pilot,
            lambda: service.get_execution(ex.id).status is ExecutionStatus.KILLED,
            timeout=20,
            message="the row killed",
        )
        notices = await pilot_wait(
            pilot,
            lambda: [n for n in app.notices if n.title == "kill"],
            timeout=20,
            message="the kill notification",
        )
        assert f"execution #{ex.id} killed" in notices[0].message
        await pilot_wait(
            pilot, lambda: run_cells(app)[ex.id][3] == "killed", message="killed in the table"
        )

    drive(scenario)
    final = service.get_execution(ex.id)
    assert final.status is ExecutionStatus.KILLED
    assert final.reason == Reason.KILLED
    assert final.completed_at is not None
    wait_until(
        lambda: not any(system.same_process(p, s) for p, s in processes),
        10,
        message="supervisor, agent and setsid grandchild gone",
    )
    for pid, started in processes:
        # gone by identity, and no live process with that pid AND start time
        assert not system.same_process(pid, started)
        now = system.process_start_time(pid)
        assert now is None or abs(now - started) > 1, f"pid {pid} still the same process"


def test_retry_selected_finished_run(service: Service) -> None:
    first = start(service, doc(service, "Retry me", "FAKE:events=1"))
    wait_final(service, first.id)
    seen: dict[str, int] = {}

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        await open_executions(pilot, [first.id])
        screen = app.screen
        assert isinstance(screen, ExecutionsScreen)
        await pilot_wait(pilot, lambda: screen.selected == first.id, message="run selected")
        await pilot.press("r")
        rows = await pilot_wait(
            pilot,
            lambda: [r for r in service.list_executions(None, None) if r.id != first.id],
            message="the retry row",
        )
        assert len(rows) == 1
        retry = rows[0]
        assert retry.parent_execution_id == first.id
        assert retry.doc_id == first.doc_id
        notices = await pilot_wait(
            pilot,
            lambda: [n for n in app.notices if n.title == f"retry of #{first.id}"],
            message="the retry notification",
        )
        assert f"execution #{retry.id}" in notices[0].message
        await pilot_wait(
            pilot,
            lambda: table_ids(app, "#runs") == [retry.id, first.id],
            message="the retry in the table",
        )
        seen["retry"] = retry.id

    drive(scenario)
    final = wait_final(service, seen["retry"])
    assert final.status is ExecutionStatus.COMPLETED
    assert final.parent_execution_id == first.id


# -- help and quit -------------------------------------------------------------------------


def test_help_lists_the_keys_and_escape_closes_it(service: Service) -> None:
    doc(service, "Helpful", "text")

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        await pilot.press("question_mark")
        await pilot_wait(pilot, lambda: isinstance(app.screen, HelpScreen), message="help")

        def help_shown() -> str | None:
            text = screen_text(app)
            return text if "kill the selected run" in text else None

        text = await pilot_wait(pilot, help_shown, message="the help table rendered")
        for key, what in [
            ("d", "documents screen"),
            ("e", "executions screen"),
            ("/", "filter (full-text search as you type)"),
            ("x", "execute the selected document in the background"),
            ("k", "kill the selected run (asks first)"),
            ("r", "retry the selected run"),
            ("f", "cycle the status filter"),
            ("?", "this help"),
            ("q", "quit (running executions keep running)"),
        ]:
            assert any(f"│ {key} " in line and what in line for line in text.splitlines()), (
                f"help lacks {key}: {what}"
            )
        await pilot.press("escape")
        await pilot_wait(pilot, lambda: isinstance(app.screen, DocumentsScreen), message="closed")
        # `q` inside help closes help, it does not quit
        await pilot.press("question_mark")
        await pilot_wait(pilot, lambda: isinstance(app.screen, HelpScreen), message="help")
        await pilot.press("q")
        await pilot_wait(pilot, lambda: isinstance(app.screen, DocumentsScreen), message="closed")
        assert app.is_running
        # and `d` comes back from the executions screen
        await pilot.press("e")
        await pilot_wait(pilot, lambda: isinstance(app.screen, ExecutionsScreen), message="e")
        await pilot.press("d")
        await pilot_wait(pilot, lambda: isinstance(app.screen, DocumentsScreen), message="d")

    drive(scenario)


def test_quit_leaves_running_execution_running(service: Service) -> None:
    doc(service, "Outlives the UI", "FAKE:sleep=60")
    seen: dict[str, Execution] = {}

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        await pilot.press("x")
        await pilot_wait(
            pilot, lambda: [n for n in app.notices if n.title == "started"], message="started"
        )
        row = service.list_executions(None, None)[0]

        def agent_running() -> Execution | None:
            now = service.get_execution(row.id)
            return now if now.agent_pid and now.pid_started_at else None

        seen["row"] = await pilot_wait(
            pilot, agent_running, timeout=20, message="the agent running"
        )
        await pilot.press("q")
        await pilot_wait(pilot, lambda: not app.is_running, message="the app to exit")

    app = drive(scenario)
    assert app.return_code == 0
    row = seen["row"]
    assert row.pid and row.pid_started_at and row.agent_pid and row.agent_started_at
    assert system.same_process(row.pid, row.pid_started_at), "supervisor died with the app"
    assert system.same_process(row.agent_pid, row.agent_started_at), "agent died with the app"
    assert service.get_execution(row.id).status is ExecutionStatus.RUNNING
    # clean up through the service, and check it is really gone
    result = service.kill_execution(row.id)
    assert result.execution.status is ExecutionStatus.KILLED
    assert system.wait_gone([supervisor_of(row), agent_of(row)], 10)


# -- refresh behaviour ---------------------------------------------------------------------


def write_log(execution_id: int, lines: int) -> None:
    """A finished run's log of `lines` entries at its log_file path."""
    path = paths.run_log_path(str(execution_id))
    entries = [
        {
            "ts": "2024-01-01T00:00:00+00:00",
            "level": "info",
            "source": "agent",
            "pid": 1,
            "type": "assistant",
            "icon": "💬",
            "message": f"line {i} of run {execution_id}",
        }
        for i in range(lines)
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    conn = sqlite3.connect(str(paths.db_path()), isolation_level=None)
    try:
        conn.execute("UPDATE executions SET log_file = ? WHERE id = ?", (str(path), execution_id))
    finally:
        conn.close()


def test_selected_older_run_stays_selected_across_refreshes(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Selecting a run that is not the top row, then letting the table refresh (every second):
    the selection, its log and the log's scroll position must stay put, and the log file must not
    be re-read from the start on every refresh."""
    from emdx.tui import data

    doc_id = doc(service, "Logs", "FAKE:events=1")
    older = insert_run(paths.db_path(), doc_id, "Logs", "completed", 0)
    newer = insert_run(paths.db_path(), doc_id, "Logs again", "failed", 1)
    write_log(older, 100)
    write_log(newer, 3)
    reloads: list[int] = []
    real_execution = data.execution

    def counting_execution(execution_id: int, **kw: Any) -> Execution:
        reloads.append(execution_id)
        return real_execution(execution_id, **kw)

    monkeypatch.setattr(data, "execution", counting_execution)

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        await open_executions(pilot, [older, newer])
        screen = app.screen
        assert isinstance(screen, ExecutionsScreen)
        await pilot_wait(pilot, lambda: screen.selected == newer, message="top row selected")
        await pilot.press("down")
        await pilot_wait(
            pilot,
            lambda: (
                screen.selected == older
                and log_lines(app)[:1] == [f"— execution #{older} —"]
                and len(log_lines(app)) == 101
            ),
            message="the older run's log",
        )
        log = screen.query_one("#run-log")
        log.scroll_home(animate=False)
        await pilot.pause(0.1)
        assert log.scroll_y == 0
        reloads.clear()
        selections: set[int | None] = set()
        for _ in range(25):  # 2.5 s: at least two refreshes
            selections.add(screen.selected)
            await pilot.pause(0.1)
        assert screen.query_one("#runs", DataTable).cursor_row == 1
        assert log_lines(app)[:1] == [f"— execution #{older} —"]
        problems = []
        if reloads:
            problems.append(f"the log was reloaded from scratch for runs {reloads}")
        if selections != {older}:
            problems.append(f"the selection flipped between {sorted(map(str, selections))}")
        if log.scroll_y != 0:
            problems.append(f"the log pane jumped to line {log.scroll_y} while being read")
        assert not problems, "; ".join(problems)

    drive(scenario)


def test_filter_shows_latest_query_when_an_earlier_query_is_slower(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typing runs one search per keystroke in threads; a slow search for an earlier prefix must
    not overwrite the results of the final text (short prefixes are the slow, broad ones)."""
    from emdx.tui import data

    doc(service, "Alpha", "apples")
    gamma = doc(service, "Gamma", "apples and cherries")
    real_documents = data.documents
    slow_done = threading.Event()

    def slow_for_prefix(query: str = "", limit: int = 500, **kw: Any) -> list[data.DocumentRow]:
        rows = real_documents(query, limit, **kw)
        if query == "ch":
            time.sleep(1.0)  # the slow search: its answer comes after the final query's
            slow_done.set()
        return rows

    monkeypatch.setattr(data, "documents", slow_for_prefix)

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 2)
        await pilot.press("slash", *"cherries")
        await pilot_wait(pilot, lambda: table_ids(app, "#docs") == [gamma], message="Gamma")
        await pilot_wait(pilot, slow_done.is_set, message='the slow search for "ch"')
        await pilot.pause(0.2)  # its (stale) answer reaches the app: it must not be shown
        assert app.screen.query_one("#doc-filter", Input).value == "cherries"
        assert table_ids(app, "#docs") == [gamma], "results of an earlier prefix are shown"

    drive(scenario)


def test_status_filter_not_overwritten_by_a_slower_earlier_refresh(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pressing `f` twice quickly: the table must end up showing the filter the label shows."""
    from emdx.tui import data

    doc_id = doc(service, "Filtered", "FAKE:events=1")
    done = insert_run(paths.db_path(), doc_id, "Filtered", "completed", 0)
    queued = insert_run(paths.db_path(), doc_id, "Filtered", "queued")
    real_executions = data.executions
    slow_done = threading.Event()

    def slow_active(statuses: list[str] | None, limit: int = 200, **kw: Any) -> list[Execution]:
        rows = real_executions(statuses, limit, **kw)
        if statuses == ["running", "queued"]:
            time.sleep(1.0)  # the slow refresh: its answer comes after the next filter's
            slow_done.set()
        return rows

    monkeypatch.setattr(data, "executions", slow_active)

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        await open_executions(pilot, [done, queued])
        await pilot.press("f", "f")  # active (slow), then completed
        await pilot_wait(
            pilot,
            lambda: (
                "status: completed" in static_text(app, "#exec-filter")
                and table_ids(app, "#runs") == [done]
            ),
            message="the completed filter applied",
        )
        shown = []
        deadline = Deadline(20, 'the slow "active" refresh')
        extra = 6  # samples after its answer arrived (0.3 s): the app has handled it by then
        while extra:
            shown.append(table_ids(app, "#runs"))
            assert "status: completed" in static_text(app, "#exec-filter")
            if slow_done.is_set():
                extra -= 1
            else:
                deadline.check()
            await pilot.pause(0.05)
        assert all(ids == [done] for ids in shown), f"rows of the previous filter shown: {shown}"

    drive(scenario)


# -- workers: errors and cancellation --------------------------------------------------------


def test_unexpected_worker_error_is_a_notification_and_the_app_keeps_running(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: a worker raising anything but an EmdxError (here a RuntimeError, as an sqlite3
    error of a corrupt page was) is shown as one error notification; the app keeps running."""
    from emdx.tui import data

    doc(service, "Listed", "body")

    def broken(*args: Any, **kwargs: Any) -> list[data.DocumentRow]:
        raise RuntimeError("boom \x1b]0;title\x07")

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        monkeypatch.setattr(data, "documents", broken)
        await pilot.press("slash", "x")
        errors = await pilot_wait(
            pilot,
            lambda: [n for n in app.notices if n.severity == "error"],
            message="an error notification",
        )
        assert errors[0].message == "unexpected RuntimeError: boom \\x1b]0;title\\x07"
        assert app.is_running
        await pilot.press("escape", "e")
        await pilot_wait(
            pilot, lambda: isinstance(app.screen, ExecutionsScreen), message="still responsive"
        )

    drive(scenario)


# Run in a child process: a worker stuck in SQLite keeps a process alive after its app has
# quit (the event loop's executor waits for the thread), which would hang pytest itself.
QUIT_WHILE_SEARCHING = r"""
import asyncio, sys, time
from pathlib import Path

from textual.widgets import Input

from emdx.service import Service
from emdx.tui.app import EmdxApp

started = Path(sys.argv[1])


def endless_search(self, *args, **kwargs):
    started.touch()
    # A statement that never ends by itself: only interrupting the connection stops it.
    self.store.conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    ).fetchall()
    raise AssertionError("the endless statement ended")


Service.find_documents = endless_search


async def main():
    app = EmdxApp(refresh_s=0)
    async with app.run_test(size=(100, 30)) as pilot:
        # Typed into the filter without keystrokes (Pilot waits for an idle CPU after each key,
        # and the stuck search keeps one busy); the table keeps the focus, so `q` is a key.
        app.screen.query_one("#doc-filter", Input).value = "needle"
        give_up = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < give_up, "the search never started"
            await pilot.pause(0.05)
        await pilot.press("q")
        while app.is_running:
            assert time.monotonic() < give_up, "the app is still running after q"
            await pilot.pause(0.05)
    print("app closed", flush=True)


asyncio.run(main())
print("process exiting", flush=True)
"""


def test_q_quits_while_a_search_is_stuck_in_sqlite(service: Service, tmp_path: Path) -> None:
    """Issue 10: `emdx gui` searching a huge document never updated, and `q` could not quit: the
    worker's thread sat in SQLite, and the process waited for it. Workers' statements stop
    when the worker is cancelled (a newer keystroke, quitting), so `q` ends the process."""
    doc(service, "Haystack", "needle")
    started = tmp_path / "search-started"
    proc = subprocess.Popen(
        [sys.executable, "-c", QUIT_WHILE_SEARCHING, str(started)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"the TUI process did not exit after q (stdout {out!r}, stderr {err[-2000:]!r})"
        ) from None
    assert started.exists(), err.decode(errors="replace")[-2000:]
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert out.decode().splitlines() == ["app closed", "process exiting"]


def test_tags_with_spaces_are_shown_comma_separated(service: Service) -> None:
    """Issue 11 item 19: a tag may contain spaces; the documents table separates tags with
    commas, so "needs review" reads as one tag."""
    service.save_document("# Spaced\n\nbody", tags="needs review, note", detect=False)

    async def scenario(app: RecordingApp, pilot: Pilot[None]) -> None:
        await wait_documents(pilot, 1)
        table = app.screen.query_one("#docs", DataTable)
        assert str(table.get_row_at(0)[2]) == "needs review, 📝"

    drive(scenario)
