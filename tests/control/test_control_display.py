"""What the exec commands print (issue 11 item 19): start times of runs that never started,
the run a retry repeats, durations in stats, grammar, and `exec monitor` at 80 columns."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest
from control_helpers import Ctl
from testkit import run_in_pty, started_id

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def column(table: str, header: str, row_id: int) -> str:
    """The cell under `header` in the row of run `row_id` of an `exec list` table."""
    lines = table.splitlines()
    head = lines[0]
    start = head.index(header)
    following = [head.index(h) for h in head.split() if head.index(h) > start]
    end = min(following) if following else None
    [row] = [line for line in lines[1:] if line.split()[0] == str(row_id)]
    return row[start:end].strip()


def test_a_run_that_never_started_has_no_start_time(ctl: Ctl) -> None:
    """`exec list` showed the creation time as "started" for a run still waiting to start."""
    blocker = ctl.run("holds\nFAKE:sleep=60\n")
    ctl.wait_agent(blocker)
    waiting = ctl.run("later\nFAKE:events=1\n", "--after", str(blocker))
    assert ctl.get(waiting).status.value == "queued"

    table = ctl.ok("exec", "list").stdout

    assert column(table, "started", waiting) == "-"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", column(table, "started", blocker))
    shown = ctl.ok("exec", "show", str(waiting)).stdout
    assert re.search(r"created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", shown), shown
    assert re.search(r"started -", shown), shown


def test_retry_of_a_resume_names_the_run_it_retries(ctl: Ctl) -> None:
    """`exec retry` of a resumed run said "retry of #<the run it resumed>"."""
    first = ctl.run("talk\nFAKE:events=1\n")
    session = ctl.wait_final(first).session_id
    assert session
    resumed = started_id(ctl.ok("exec", "resume", str(first), "and now?").stdout)
    ctl.wait_final(resumed)

    result = ctl.ok("exec", "retry", str(resumed))

    again = started_id(result.stdout)
    assert f"retry of #{resumed} (resumes session {session} of #{first});" in result.stdout
    assert f"retry of #{first}" not in result.stdout
    row = ctl.wait_final(again)
    assert (row.exec_type, row.options.resume_session) == ("resume", session)
    assert row.options.resume_prompt == "and now?"


def test_stats_leave_out_repaired_legacy_rows_and_count_in_words(ctl: Ctl) -> None:
    """After `cleanup executions` repaired a row an earlier release left `running` 500 days
    ago, `exec stats` read p95 "501d23h": such rows have no real duration. And "1 runs"."""
    ctl.insert_row(
        run_key=None,
        old_id="claude-1-1690000000",
        exec_type="note",
        status="running",
        started_at="2025-01-01T00:00:00.000000+00:00",
        pid=None,
    )
    ctl.insert_row(
        exec_type="generic",
        status="completed",
        exit_code=0,
        reason="success",
        started_at="2026-01-01T00:00:00.000000+00:00",
        completed_at="2026-01-01T00:00:10.000000+00:00",
        pid=None,
    )
    repaired = ctl.ok("cleanup", "executions", "--json").json()
    assert [a["result"] for a in repaired["actions"]] == ["done"]

    stats = ctl.ok("exec", "stats", "--json").json()
    assert stats["by_status"] == {"completed": 1, "failed": 1}
    assert (stats["median_duration_s"], stats["p95_duration_s"]) == (10.0, 10.0)

    text = ctl.ok("exec", "stats").stdout
    assert "median 10s, p95 10s" in text
    per_type = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert sorted(cells[:3] for cells in per_type) == [
        ["generic", "1", "run"],
        ["note", "1", "run"],
    ]


def cells_of(line: str) -> int:
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in line
    )


def test_monitor_is_readable_at_80_columns(ctl: Ctl) -> None:
    """At 80 columns `exec monitor` squeezed ten columns into one-word-a-line cells ("runn…",
    a title over eight lines). Every line fits, a run is one line, its status is whole."""
    title = "A fairly long document title for the monitor at eighty columns"
    execution_id = ctl.start(ctl.doc("FAKE:sleep=60\n", title=title), "--no-smart")
    ctl.wait_agent(execution_id)

    code, out = run_in_pty(
        ["exec", "monitor", "--interval", "0.3"],
        until=lambda seen: b"1 active" in seen,
        size=(30, 80),
    )

    assert code == 0
    frame = ANSI.sub("", out.decode("utf-8", "replace")).split("emdx executions")[-1]
    lines = [line.rstrip() for line in frame.splitlines() if line.strip()]
    assert all(cells_of(line) <= 80 for line in lines), lines
    [header] = [line for line in lines if line.split()[:2] == ["id", "document"]]
    assert header.split()[2:] == ["status", "verdict", "runtime", "beat", "cpu", "mem"], header
    [row] = [line for line in lines if line.split()[0] == str(execution_id)]
    assert "running" in row.split() and "healthy" in row.split(), row
    assert "A fairly long" in row and "…" in row
    assert re.search(r"\d+ MB$", row), row


def test_the_daily_budget_holds_the_queue_and_every_view_says_so(
    ctl: Ctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once today's spend reaches EMDX_DAILY_BUDGET_USD, new runs wait `queued` (held), `exec
    list`, `exec show` and `exec stats` say why, and a raised budget lets them start."""
    monkeypatch.setenv("EMDX_DAILY_BUDGET_USD", "0.01")
    spender = ctl.wait_final(ctl.run("spend\nFAKE:events=1\n"))
    assert spender.cost_usd is not None and spender.cost_usd >= 0.01
    held = ctl.run("later\nFAKE:events=1\n")
    assert ctl.get(held).status.value == "queued"

    table = ctl.ok("exec", "list").stdout
    assert column(table, "note", held).startswith("held: daily budget $0.0100 spent"), table
    assert "held: daily budget" in ctl.ok("exec", "show", str(held)).stdout
    stats = json.loads(ctl.ok("exec", "stats", "--json").stdout)
    assert stats["daily_budget_usd"] == 0.01 and stats["spent_today_usd"] >= 0.01
    assert stats["held"].startswith("daily budget") and stats["queued"] == 1
    assert "of $0.0100 (EMDX_DAILY_BUDGET_USD)" in ctl.ok("exec", "stats").stdout

    monkeypatch.setenv("EMDX_DAILY_BUDGET_USD", "100")
    ctl.ok("exec", "list")  # any command's sweep starts what is free to start
    assert ctl.wait_final(held).status.value == "completed"
    assert json.loads(ctl.ok("exec", "stats", "--json").stdout)["held"] is None


def test_show_explains_an_ending_and_its_refused_tools(ctl: Ctl) -> None:
    """`exec show` says what the reason means and how to fix it, the API error without the
    CLI's repeated prefix, and each refused tool with its input."""
    execution_id = ctl.run("fails\nFAKE:api-error=529\n")
    row = ctl.wait_final(execution_id)
    assert (row.status.value, row.reason) == ("failed", "overloaded"), row
    shown = ctl.ok("exec", "show", str(execution_id)).stdout
    assert "why" in shown and "--retries N" in shown, shown
    assert "API error 529" in shown and "API Error: 529" not in shown.split("why", 1)[1]
