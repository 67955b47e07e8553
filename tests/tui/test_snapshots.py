"""SVG snapshots of the two screens over frozen data (pytest-textual-snapshot).

The database is built in this test's EMDX_HOME: fixed documents, FINISHED executions with fixed
times (so durations are fixed; no heartbeat ages), and a fixed JSONL log for the newest run. Log
lines show local time, so local time is UTC (`utc` fixture). Update with
`pytest tests/tui/test_snapshots.py --snapshot-update` and look at the SVGs before committing
(on a mismatch the plugin writes ./snapshot_report.html with the visual diff).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static
from tui_helpers import RunBefore, SnapCompare, log_lines, pilot_wait, screen_text

from emdx import paths
from emdx.service import Service
from emdx.tui.app import EmdxApp
from emdx.tui.screens.documents import DocumentsScreen
from emdx.tui.screens.executions import ExecutionsScreen

SIZE = (120, 40)

DOCUMENTS = [
    ("Refactor the parser", "parser, refactor", "emdx", "Split `parse()` into lexer and parser."),
    ("Release checklist", "docs", "", "1. bump the version\n2. tag\n3. publish"),
    (
        "Investigate flaky kill test",
        "bug, note",
        "emdx",
        "The kill test fails one run in fifty.\n\n- check the grace period\n- check setsid",
    ),
]

DAY = "2024-05-01T"  # times below are on this day, UTC
# doc index, status, reason, exit code, started, completed, cost
RUNS = [
    (0, "completed", "success", 0, "09:00:00", "09:01:05", 0.0123),
    (1, "failed", "nonzero_exit", 1, "10:00:00", "10:00:07", None),
    (2, "completed", "success", 0, "11:00:00", "11:00:42", 0.5),
    (2, "killed", "killed_by_user", 143, "12:00:00", "14:03:00", 1.25),
]

LOG = [
    ("2024-05-01T12:00:00.120000+00:00", "runner", "🛡️", "supervisor started"),
    ("2024-05-01T12:00:00.480000+00:00", "system", "⚙️", "session fake-0123456789ab (fake-model)"),
    ("2024-05-01T12:00:01.000000+00:00", "assistant", "💬", "Looking at the kill test."),
    ("2024-05-01T12:05:30.250000+00:00", "assistant", "🔧", "Bash: pytest tests/control -k kill"),
    ("2024-05-01T14:02:59.000000+00:00", "runner", "🛑", "SIGTERM from the user; stopping"),
    ("2024-05-01T14:03:00.000000+00:00", "runner", "🏁", "killed (exit 143)"),
]


@pytest.fixture
def frozen_db(
    isolated_env: Path, utc: None, monkeypatch: pytest.MonkeyPatch
) -> dict[str, list[int]]:
    """Documents and finished executions with fixed ids, times and log."""
    # NO_COLOR is read when an App is created (TEXTUAL_THEME and friends at import: keep them
    # unset when updating or comparing snapshots).
    monkeypatch.delenv("NO_COLOR", raising=False)
    doc_ids = []
    with Service() as service:
        for title, tags, project, body in DOCUMENTS:
            saved = service.save_document(
                f"# {title}\n\n{body}\n",
                title=title,
                tags=tags,
                project=project or None,
                detect=False,
            )
            doc_ids.append(saved.id)
    conn = sqlite3.connect(str(paths.db_path()), isolation_level=None)
    run_ids = []
    try:
        conn.execute(
            "UPDATE documents SET created_at = '2024-05-01T08:00:00+00:00', "
            "updated_at = '2024-05-01T08:00:00+00:00', accessed_at = '2024-05-01T08:00:00+00:00'"
        )
        for n, (doc, status, reason, code, started, completed, cost) in enumerate(RUNS, 1):
            cur = conn.execute(
                """INSERT INTO executions (run_key, doc_id, doc_title, exec_type, status, reason,
                       exit_code, created_at, started_at, completed_at, cost_usd, options)
                   VALUES (?, ?, ?, 'generic', ?, ?, ?, ?, ?, ?, ?, '{}')""",
                (
                    f"snapshot-run-{n}",
                    doc_ids[doc],
                    DOCUMENTS[doc][0],
                    status,
                    reason,
                    code,
                    DAY + started + "+00:00",
                    DAY + started + "+00:00",
                    DAY + completed + "+00:00",
                    cost,
                ),
            )
            run_id = int(cur.lastrowid or 0)
            conn.execute(
                "UPDATE executions SET log_file = ? WHERE id = ?",
                (str(paths.run_log_path(str(run_id))), run_id),
            )
            run_ids.append(run_id)
    finally:
        conn.close()
    assert run_ids == [1, 2, 3, 4]
    lines = [
        {
            "ts": ts,
            "level": "info",
            "source": "runner" if t == "runner" else "agent",
            "pid": 4242,
            "type": t,
            "icon": icon,
            "message": message,
        }
        for ts, t, icon, message in LOG
    ]
    paths.run_log_path(str(run_ids[-1])).write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )
    return {"docs": doc_ids, "runs": run_ids}


def documents_loaded(frozen: dict[str, list[int]]) -> RunBefore:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        top = frozen["docs"][-1]

        def ready() -> bool:
            if not isinstance(app.screen, DocumentsScreen):
                return False
            table = app.screen.query_one("#docs", DataTable)
            runs = str(app.screen.query_one("#doc-runs", Static).render())
            text = screen_text(app)
            return (
                table.row_count == len(DOCUMENTS)
                and f"#{frozen['runs'][-1]} killed" in runs
                and "check setsid" in text
                and table.cursor_row == 0
                and app.screen.query_one("#docs", DataTable).get_row_at(0)[0] == str(top)
            )

        await pilot_wait(pilot, ready, message="documents, preview and runs shown")

    return run_before


def executions_loaded(frozen: dict[str, list[int]]) -> RunBefore:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        await pilot_wait(pilot, lambda: isinstance(app.screen, DocumentsScreen), message="docs")
        await pilot.press("e")
        newest = frozen["runs"][-1]

        def ready() -> bool:
            if not isinstance(app.screen, ExecutionsScreen):
                return False
            table = app.screen.query_one("#runs", DataTable)
            lines = log_lines(app)
            return (
                table.row_count == len(RUNS)
                and app.screen.selected == newest
                and lines[:1] == [f"— execution #{newest} —"]
                and len(lines) == 1 + len(LOG)
            )

        await pilot_wait(pilot, ready, message="runs and the newest run's log shown")

    return run_before


def test_documents_screen(snap_compare: SnapCompare, frozen_db: dict[str, list[int]]) -> None:
    """Three documents (tags, project), the newest highlighted: its preview and its runs."""
    assert snap_compare(
        EmdxApp(refresh_s=0), terminal_size=SIZE, run_before=documents_loaded(frozen_db)
    )


def test_executions_screen(snap_compare: SnapCompare, frozen_db: dict[str, list[int]]) -> None:
    """Four finished runs (completed, failed, killed) with fixed durations and costs; the newest
    selected with its log rendered in UTC."""
    assert snap_compare(
        EmdxApp(refresh_s=0), terminal_size=SIZE, run_before=executions_loaded(frozen_db)
    )


def then_press(first: RunBefore, key: str, shown: str) -> RunBefore:
    """`first`, then press `key` and wait until `shown` is on screen."""

    async def run_before(pilot: Pilot[None]) -> None:
        await first(pilot)
        await pilot.press(key)
        await pilot_wait(pilot, lambda: shown in screen_text(pilot.app), message=repr(shown))

    return run_before


def test_help_screen(snap_compare: SnapCompare, frozen_db: dict[str, list[int]]) -> None:
    """The help dialog over the documents screen."""
    run_before = then_press(documents_loaded(frozen_db), "question_mark", "escape to close")
    assert snap_compare(EmdxApp(refresh_s=0), terminal_size=SIZE, run_before=run_before)


def test_kill_confirm_dialog(snap_compare: SnapCompare, frozen_db: dict[str, list[int]]) -> None:
    """The kill confirmation over the executions screen (only looked at: nothing is answered)."""
    newest = frozen_db["runs"][-1]
    run_before = then_press(executions_loaded(frozen_db), "k", f"Kill execution #{newest}?")
    assert snap_compare(EmdxApp(refresh_s=0), terminal_size=SIZE, run_before=run_before)
