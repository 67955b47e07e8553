"""What the watching commands print: `exec show --follow` / `tail` / `logs`, and the JSON of
`exec list`, `show`, `stats`, `running` and `health` (DESIGN.md §4)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from control_helpers import Ctl, iso_utc
from testkit import wait_until

# DESIGN.md §4: an execution object has at least these fields.
EXECUTION_FIELDS = {
    "id",
    "old_id",
    "doc_id",
    "doc_title",
    "exec_type",
    "status",
    "reason",
    "exit_code",
    "started_at",
    "completed_at",
    "heartbeat_at",
    "duration_s",
    "pid",
    "agent_pid",
    "working_dir",
    "branch",
    "log_file",
    "session_id",
    "model",
    "num_turns",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "output_doc_id",
}
TIME_FIELDS = ("created_at", "started_at", "completed_at", "heartbeat_at", "last_event_at")
STATS_FIELDS = {
    "total",
    "by_status",
    "last_24h",
    "success_rate",
    "median_duration_s",
    "p95_duration_s",
    "total_cost_usd",
    "total_input_tokens",
    "total_output_tokens",
    "per_type",
    "running",
    "queued",
    "zombies",
}
RENDERED = re.compile(r"^\d\d:\d\d:\d\d \S+ ")
LOG_KEYS = {"ts", "level", "source", "pid", "type", "message"}


def check_execution(item: dict[str, Any]) -> None:
    missing = EXECUTION_FIELDS - set(item)
    assert not missing, f"execution JSON lacks {sorted(missing)}"
    for key in TIME_FIELDS:
        if item.get(key) is not None:
            iso_utc(item[key])
    if item["started_at"] and item["completed_at"]:
        took = (iso_utc(item["completed_at"]) - iso_utc(item["started_at"])).total_seconds()
        assert item["duration_s"] == pytest.approx(took, abs=0.002)


def rendered_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if RENDERED.match(line)]


# -- following ------------------------------------------------------------------------------

FOLLOW_CASES = [
    pytest.param("ok\nFAKE:events=4\nFAKE:interval=0.3\n", (), 0, "completed", id="success"),
    pytest.param(
        "bad\nFAKE:events=2\nFAKE:interval=0.3\nFAKE:error-result\n",
        (),
        1,
        "failed",
        id="error-result",
    ),
    pytest.param("slow\nFAKE:sleep=30\n", ("--timeout", "1"), 124, "failed", id="timeout"),
]


@pytest.mark.parametrize(("content", "options", "code", "status"), FOLLOW_CASES)
def test_show_follow_and_tail_exit_with_the_run_exit_code(
    ctl: Ctl, content: str, options: tuple[str, ...], code: int, status: str
) -> None:
    execution_id = ctl.run(content, *options)
    # Attach while the run is still going: the log streams until the run ends.
    follow = ctl.emdx("exec", "show", str(execution_id), "--follow", timeout=60)
    row = ctl.get(execution_id)
    assert row.status.value == status
    assert follow.code == code == row.exit_code, follow.stderr
    assert f"execution #{execution_id}" in follow.stdout
    lines = rendered_lines(follow.stdout)
    assert any("agent" in line and "started" in line for line in lines), follow.stdout
    assert any(f"finished: {status}, exit {code}" in line for line in lines), follow.stdout
    if code == 124:
        assert any("timeout" in line for line in lines)

    # After the end: tail prints the last lines and still exits with the run's code.
    tail = ctl.emdx("exec", "tail", str(execution_id))
    assert tail.code == code, tail.stderr
    assert any(f"finished: {status}, exit {code}" in line for line in rendered_lines(tail.stdout))


def test_tail_live_run_streams_new_lines(ctl: Ctl) -> None:
    execution_id = ctl.run("live\nFAKE:events=6\nFAKE:interval=0.4\n")
    ctl.wait_agent(execution_id)
    tail = ctl.emdx("exec", "tail", str(execution_id), timeout=60)
    assert tail.code == 0, tail.stderr
    lines = rendered_lines(tail.stdout)
    assert sum("step" in line for line in lines) == 6, tail.stdout
    assert "finished: completed, exit 0" in lines[-1] or any(
        "finished: completed" in line for line in lines
    )


def test_follow_of_a_killed_run_exits_143(ctl: Ctl) -> None:
    execution_id = ctl.run("long\nFAKE:sleep=60\n")
    ctl.wait_agent(execution_id)
    follower = ctl.popen(
        [sys.executable, "-m", "emdx", "exec", "show", str(execution_id), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ctl.ok("exec", "kill", str(execution_id))
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 143, err.decode()
    assert "finished: killed, exit 143" in out.decode()


def test_logs_raw_lines_are_structured_json(ctl: Ctl) -> None:
    execution_id = ctl.run("logs\nFAKE:events=3\n")
    ctl.wait_final(execution_id)

    raw = ctl.ok("exec", "logs", str(execution_id), "--raw")

    entries = [json.loads(line) for line in raw.stdout.splitlines()]
    assert len(entries) >= 6
    for entry in entries:
        assert set(entry) >= LOG_KEYS, entry
        iso_utc(entry["ts"])
        assert entry["level"] in ("debug", "info", "warning", "error")
        assert entry["source"] in ("runner", "agent", "agent-stderr")
        assert isinstance(entry["pid"], int)
        assert isinstance(entry["message"], str)
    row = ctl.get(execution_id)
    assert {e["pid"] for e in entries if e["source"] == "runner"} == {row.pid}
    assert {e["pid"] for e in entries if e["source"] == "agent"} == {row.agent_pid}
    types = [e["type"] for e in entries]
    assert "result" in types and types.count("assistant") == 3
    result = next(e for e in entries if e["type"] == "result")
    assert result["raw"]["total_cost_usd"] == pytest.approx(0.0123)

    text = ctl.ok("exec", "logs", str(execution_id))
    assert len(rendered_lines(text.stdout)) == len(entries)
    followed = ctl.ok("exec", "logs", str(execution_id), "--follow", "--raw")
    assert [json.loads(line) for line in followed.stdout.splitlines()] == entries


def test_relative_emdx_home_runs_like_an_absolute_one(ctl: Ctl, tmp_path: Path) -> None:
    """EMDX_HOME=data (relative to the current directory) must mean one data directory for the
    CLI and for the supervisor it starts."""
    cwd = tmp_path / "project"
    cwd.mkdir()
    env = {"EMDX_HOME": "data"}
    saved = subprocess.run(
        [sys.executable, "-m", "emdx", "save", "--title", "rel"],
        input=b"relative home\nFAKE:events=1\n",
        capture_output=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=30,
        check=True,
    )
    doc = re.search(rb"#(\d+)", saved.stdout)
    assert doc
    done = subprocess.run(
        [sys.executable, "-m", "emdx", "claude", "execute", doc.group(1).decode()],
        capture_output=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    strays = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("knowledge.db"))
    assert strays == ["data/knowledge.db"], f"databases created: {strays}"
    assert done.returncode == 0, done.stderr.decode()


# -- JSON ---------------------------------------------------------------------------------


def test_json_outputs_carry_the_contract(ctl: Ctl) -> None:
    completed = ctl.run("done\nFAKE:events=2\n", "--model", "m-json")
    failed = ctl.run("bad\nFAKE:error-result\n")
    killed = ctl.run("long\nFAKE:sleep=60\n")
    running = ctl.run("still going\nFAKE:sleep=60\n")
    for execution_id in (completed, failed):
        ctl.wait_final(execution_id)
    ctl.wait_agent(killed)
    ctl.ok("exec", "kill", str(killed))
    ctl.wait_agent(running)
    # Its progress (one assistant event: 10 tokens in, 5 out) is in the row before we compare.
    ctl_wait_tokens(ctl, running)
    # A zombie: its supervisor is a process that has exited.
    gone_pid, gone_started = ctl.dead_identity()
    zombie = ctl.insert_row(pid=gone_pid, pid_started_at=gone_started, exec_type="note")

    listed = ctl.emdx("exec", "list", "--json")
    assert listed.code == 0 and listed.stderr == ""
    items = json.loads(listed.stdout)  # the whole of stdout is one JSON document
    assert [i["id"] for i in items] == [zombie, running, killed, failed, completed]
    for item in items:
        check_execution(item)
    by_id = {i["id"]: i for i in items}

    done = by_id[completed]
    assert (done["status"], done["reason"], done["exit_code"]) == ("completed", "success", 0)
    assert done["session_id"].startswith("fake-") and done["model"] == "m-json"
    assert done["num_turns"] == 2 and done["cost_usd"] == pytest.approx(0.0123)
    assert (done["input_tokens"], done["output_tokens"]) == (100, 50)
    assert Path(done["working_dir"]).is_dir() and Path(done["log_file"]).is_file()
    for key in ("started_at", "completed_at", "heartbeat_at"):
        iso_utc(done[key])
    assert isinstance(done["pid"], int) and isinstance(done["agent_pid"], int)
    assert (by_id[failed]["status"], by_id[failed]["exit_code"]) == ("failed", 1)
    assert (by_id[killed]["status"], by_id[killed]["exit_code"]) == ("killed", 143)
    # `exec list` looked, so its sweep repaired the zombie before listing it.
    assert (by_id[zombie]["status"], by_id[zombie]["exit_code"], by_id[zombie]["reason"]) == (
        "failed",
        137,
        "runner_lost",
    )
    live = by_id[running]
    assert live["status"] == "running" and live["completed_at"] is None
    assert live["exit_code"] is None and live["duration_s"] >= 0

    stats_run = ctl.emdx("exec", "stats", "--json")
    assert stats_run.code == 0 and stats_run.stderr == ""
    stats = json.loads(stats_run.stdout)
    assert set(stats) >= STATS_FIELDS
    assert stats["total"] == 5
    assert stats["by_status"] == {"completed": 1, "failed": 2, "killed": 1, "running": 1}
    assert stats["last_24h"] == stats["by_status"]
    assert stats["success_rate"] == pytest.approx(1 / 4)
    durations = sorted(by_id[i]["duration_s"] for i in (completed, failed, killed, zombie))
    assert stats["median_duration_s"] == pytest.approx(durations[1], abs=0.01)
    assert stats["p95_duration_s"] == pytest.approx(durations[3], abs=0.01)
    costs = [i["cost_usd"] or 0 for i in items]
    assert stats["total_cost_usd"] == pytest.approx(sum(costs))
    assert stats["total_input_tokens"] == sum(i["input_tokens"] or 0 for i in items)
    assert stats["total_output_tokens"] == sum(i["output_tokens"] or 0 for i in items)
    per_type = {t["exec_type"]: t for t in stats["per_type"]}
    assert set(per_type) == {"generic", "note"}
    assert per_type["generic"]["runs"] == 4 and per_type["note"]["runs"] == 1
    assert per_type["generic"]["cost_usd"] == pytest.approx(sum(costs))
    assert (stats["running"], stats["queued"], stats["zombies"]) == (1, 0, [])

    active = ctl.emdx("exec", "running", "--json")
    assert active.code == 0 and active.stderr == ""
    rows = json.loads(active.stdout)
    assert [(r["id"], r["runner_alive"], r["verdict"]) for r in rows] == [
        (running, True, "healthy")
    ]
    for row in rows:
        check_execution(row)

    # Another zombie, for `exec health` (which reports what it repairs) to find.
    gone_pid, gone_started = ctl.dead_identity()
    zombie = ctl.insert_row(pid=gone_pid, pid_started_at=gone_started, exec_type="note")
    report_run = ctl.emdx("exec", "health", "--json")
    assert report_run.code == 1 and report_run.stderr == ""
    report = json.loads(report_run.stdout)
    assert report["healthy"] is False
    verdicts = {r["id"]: r["verdict"] for r in report["runs"]}
    assert verdicts == {zombie: "zombie", running: "healthy"}
    for item in report["runs"]:
        assert {"id", "status", "verdict", "healthy", "runner_alive", "agent_alive"} <= set(item)
        assert {"heartbeat_age_s", "runner", "agent", "repaired"} <= set(item)
    live_report = next(r for r in report["runs"] if r["id"] == running)
    assert live_report["runner"]["rss_bytes"] > 0 and live_report["agent"]["rss_bytes"] > 0
    check_execution(next(r for r in report["runs"] if r["id"] == zombie)["repaired"])

    # `exec show --json` of each (the zombie is now repaired: failed, runner_lost).
    for execution_id, item in by_id.items():
        shown = ctl.emdx("exec", "show", str(execution_id), "--json")
        assert shown.code == 0 and shown.stderr == ""
        one = json.loads(shown.stdout)
        check_execution(one)
        if execution_id == zombie:
            assert (one["status"], one["exit_code"], one["reason"]) == (
                "failed",
                137,
                "runner_lost",
            )
        elif execution_id != running:
            assert one == item


def ctl_wait_tokens(ctl: Ctl, execution_id: int) -> None:
    wait_until(lambda: ctl.get(execution_id).input_tokens == 10, 10, message="progress of the run")


def test_json_of_an_empty_store(ctl: Ctl) -> None:
    assert ctl.ok("exec", "list", "--json").json() == []
    assert ctl.ok("exec", "running", "--json").json() == []
    stats = ctl.ok("exec", "stats", "--json").json()
    assert stats["total"] == 0 and stats["success_rate"] is None
    assert stats["median_duration_s"] is None and stats["zombies"] == []


def test_list_status_filter_and_limit(ctl: Ctl) -> None:
    made: dict[str, list[int]] = {}
    for status in ("failed", "completed", "killed", "failed", "completed", "killed", "failed"):
        made.setdefault(status, []).append(
            ctl.insert_row(
                status=status,
                exit_code={"failed": 1, "completed": 0, "killed": 143}[status],
                completed_at="2030-01-01T00:00:00+00:00",
            )
        )
    wanted = sorted(made["failed"] + made["killed"], reverse=True)

    two = ctl.ok("exec", "list", "--status", "failed,killed", "--limit", "2", "--json").json()
    assert [i["id"] for i in two] == wanted[:2]
    every = ctl.ok("exec", "list", "--status", "FAILED, killed", "--json").json()
    assert [i["id"] for i in every] == wanted
    assert {i["status"] for i in every} == {"failed", "killed"}
    none = ctl.ok("exec", "list", "--status", "queued", "--json").json()
    assert none == []
    table = ctl.ok("exec", "list", "--status", "completed")
    shown_ids = {int(m) for m in re.findall(r"^\s*(\d+)\s", table.stdout, re.MULTILINE)}
    assert shown_ids == set(made["completed"])
    assert ctl.ok("exec", "list", "--status", "queued").stdout.strip() == "no executions"

    bad = ctl.emdx("exec", "list", "--status", "failed,bogus")
    assert bad.code == 2 and bad.stdout == ""  # a usage error
    assert len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("emdx: error: unknown status 'bogus'")
    zero = ctl.emdx("exec", "list", "--limit", "0")
    assert zero.code == 2


def test_stats_text(ctl: Ctl) -> None:
    execution_id = ctl.run("done\nFAKE:events=1\n")
    ctl.wait_final(execution_id)
    out = ctl.ok("exec", "stats").stdout
    assert "executions: 1 (completed 1)" in out
    assert "success:    100.0%" in out
    assert re.search(r"cost:\s+\$0\.0123 \(100 tokens in, 50 out\)", out), out
    assert "now:        0 running, 0 waiting, 0 queued, 0 zombie" in out
