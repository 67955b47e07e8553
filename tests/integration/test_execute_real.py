"""`emdx claude execute` end to end: the real emdx CLI, the real supervisor and the real Claude
Code CLI, with the scripted model server (`emdx.testing.model_server`) playing the model.

Every test starts its own server, points the Claude Code CLI at it through the environment that
the spawned supervisors inherit, saves documents with `[[script:NAME]]` markers that select a
script, and drives runs through `python -m emdx`. Nothing is faked below the model.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from real_cli import (
    RUN_DEADLINE_S,
    Env,
    assert_outcome,
    assert_run_processes_gone,
    diagnose,
    doc_json,
    iso,
    list_json,
    raw_log,
    real_env,
    save_doc,
    show,
    start_background,
    tool_uses,
    wait_final,
)
from testkit import (
    Cli,
    run_processes,
    started_id,
    wait_until,
)

from emdx import system

pytestmark = pytest.mark.integration


# --- scripts -----------------------------------------------------------------------------


def bash(command: str, **extra: Any) -> dict[str, Any]:
    return {
        "tool_use": {"name": "Bash", "input": {"command": command, "description": "test step"}},
        **extra,
    }


API_400 = {"status": 400, "type": "invalid_request_error", "message": "scripted bad request"}
FINAL_TEXT = "All three tools ran: out/a.txt and out/b.txt exist."
ANALYSIS_TEXT = "# Analysis\n\nThe note asks for X; the facts say Y.\n\nOption A vs option B."
GAMEPLAN_TEXT = "# Gameplan\n\n1. Do the first step.\n2. Test it.\n3. Ship it."

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "multitool": [
        {"text": "Making the directory.", **bash("mkdir -p out && echo hi > out/a.txt")},
        {
            "tool_use": {
                "name": "Write",
                "input": {"file_path": "{cwd}/out/b.txt", "content": "written by Write\n"},
            }
        },
        {"tool_use": {"name": "Read", "input": {"file_path": "{cwd}/out/b.txt"}}},
        {"text": FINAL_TEXT, "usage": {"input_tokens": 1500, "output_tokens": 90}},
    ],
    "hello": [{"text": "hello from the scripted model"}],
    "api400": [{"error": API_400}],
    # Slow to fail: a tool first. (A delayed 400 makes the CLI retry it for ~10 s.)
    "api400slow": [bash("sleep 2; echo failing soon"), {"error": API_400}],
    "twotools": [bash("echo one > one.txt"), bash("echo two > two.txt"), {"text": "unreachable"}],
    "slow": [{"sleep": 2, **bash("echo slow > slow.txt")}, {"text": "slow run done"}],
    "analysis": [{"text": ANALYSIS_TEXT}],
    "gameplan": [{"text": GAMEPLAN_TEXT}],
    "implement": [bash("echo implemented > impl.txt"), {"text": "Implemented the gameplan."}],
    "readonly": [
        bash("echo no > forbidden.txt"),
        {"tool_use": {"name": "Read", "input": {"file_path": "{cwd}/missing.txt"}}},
        {"text": "read-only run done"},
    ],
    # 2.1.330 refuses a standalone `sleep N` in its Bash tool; inside a list it runs.
    "sleeptool": [bash("echo waiting; sleep 300; echo woke"), {"text": "unreachable"}],
    "stall": [{"sleep": 30, "text": "too late"}],
    "big": [{"text": "big document read"}],
}


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> Iterator[Env]:
    with real_env(tmp_path, monkeypatch, isolated_env, SCRIPTS) as found:
        yield found


# --- 1. the multi-tool run ---------------------------------------------------------------


def test_foreground_multitool_run_really_runs_the_tools(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:multitool]]\nMake out/a.txt and out/b.txt.", "Multi tool")

    result = cli("claude", "execute", str(doc), timeout=RUN_DEADLINE_S)

    assert result.code == 0, result.stdout + result.stderr
    row = show(cli, 1)
    assert_outcome(row, "completed", 0, "success")
    assert row["doc_id"] == doc
    workdir = Path(row["working_dir"])
    assert workdir.is_dir()
    assert workdir.parent == env.emdx_home / "runs"
    assert (workdir / "out" / "a.txt").read_text() == "hi\n"
    assert (workdir / "out" / "b.txt").read_text() == "written by Write\n"

    assert row["session_id"]
    assert row["num_turns"] >= 4
    assert row["cost_usd"] > 0
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0
    assert row["model"]
    # The session the CLI reported is the one that talked to the server.
    main = [r for r in env.server.requests if "[[script:multitool]]" in json.dumps(r)]
    assert len(main) == 4
    # 2.1.330 names its session in the request metadata.
    assert row["session_id"] in json.dumps(main[0].get("metadata"))

    entries = raw_log(cli, 1)
    raws = [e["raw"] for e in entries if isinstance(e.get("raw"), dict)]
    init = [r for r in raws if r.get("type") == "system" and r.get("subtype") == "init"]
    assert len(init) == 1
    assert init[0]["session_id"] == row["session_id"]
    assert init[0]["cwd"] == str(workdir)
    assert tool_uses(entries) == ["Bash", "Write", "Read"]
    results = [r for r in raws if r.get("type") == "result"]
    assert len(results) == 1
    assert results[0]["is_error"] is False
    assert results[0]["result"] == FINAL_TEXT
    assert results[0]["session_id"] == row["session_id"]
    tool_results = [
        block
        for r in raws
        if r.get("type") == "user"
        for block in r.get("message", {}).get("content", [])
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    assert len(tool_results) == 3
    assert "written by Write" in json.dumps(tool_results[-1])

    # The foreground command printed the rendered log as it went.
    assert "mkdir -p out && echo hi > out/a.txt" in result.stdout
    assert f"{workdir}/out/b.txt" in result.stdout
    assert "Bash" in result.stdout or "💻" in result.stdout
    assert FINAL_TEXT[:40] in result.stdout
    assert "completed" in result.stderr


# --- 2. API error -----------------------------------------------------------------------


def test_api_error_fails_the_run(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:api400]] hello", "Bad request")

    result = cli("claude", "execute", str(doc), timeout=RUN_DEADLINE_S)

    assert result.code == 1, result.stdout + result.stderr
    row = show(cli, 1)
    assert_outcome(row, "failed", 1, "invalid_request")
    assert "scripted bad request" in result.stdout


# --- 3. --max-turns ---------------------------------------------------------------------


def test_max_turns_exhaustion_fails_the_run(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:twotools]] two tools", "Two tools")

    result = cli("claude", "execute", str(doc), "--max-turns", "1", timeout=RUN_DEADLINE_S)

    assert result.code == 1, result.stdout + result.stderr
    row = show(cli, 1)
    assert_outcome(row, "failed", 1, "max_turns")
    workdir = Path(row["working_dir"])
    assert (workdir / "one.txt").exists()
    assert not (workdir / "two.txt").exists()


# --- 4. background ----------------------------------------------------------------------


def test_background_run_outlives_the_cli(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:slow]] take your time", "Slow")

    result = cli("claude", "execute", str(doc), "--background")

    assert result.code == 0, result.stderr
    execution_id = started_id(result.stdout)
    assert f"emdx exec show {execution_id} --follow" in result.stdout
    # The run needs at least the 2 s the model "thinks": the start returned before it ended
    # (how fast it returns is bench/run.py's `bench_start`).
    first = show(cli, execution_id)
    assert first["status"] in ("queued", "running"), first
    wait_until(
        lambda: show(cli, execution_id)["status"] == "running" and env.server.requests,
        30,
        message="the run to reach the model",
    )
    row = wait_final(cli, execution_id)
    assert_outcome(row, "completed", 0, "success")
    assert (Path(row["working_dir"]) / "slow.txt").read_text() == "slow\n"
    assert_run_processes_gone(env, row)


# --- 5. parallel starts -----------------------------------------------------------------


def test_parallel_background_starts_get_distinct_runs(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:hello]] say hello", "Hello")
    outputs: list[Any] = [None] * 4

    def start(index: int) -> None:
        outputs[index] = cli("claude", "execute", str(doc), "--background")

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    for out in outputs:
        assert out is not None and out.code == 0, out and out.stderr
    ids = sorted(started_id(out.stdout) for out in outputs)
    assert ids == [1, 2, 3, 4]
    rows = [wait_final(cli, i) for i in ids]
    for row in rows:
        assert_outcome(row, "completed", 0, "success")
    assert len({r["run_key"] for r in rows}) == 4
    assert len({r["working_dir"] for r in rows}) == 4
    assert len({r["session_id"] for r in rows}) == 4
    for row in rows:
        assert Path(row["working_dir"]).is_dir()


# --- 6. the concurrency cap -------------------------------------------------------------


def test_queue_cap_runs_one_at_a_time_in_order(
    env: Env, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1")
    doc = save_doc(cli, "[[script:slow]] take your time", "Slow")
    ids = [start_background(cli, doc) for _ in range(3)]
    assert ids == [1, 2, 3]

    max_running = 0
    deadline = time.monotonic() + 3 * RUN_DEADLINE_S
    while True:
        rows = list_json(cli)
        running = sum(1 for r in rows if r["status"] == "running")
        max_running = max(max_running, running)
        if all(r["status"] in ("completed", "failed", "killed") for r in rows):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)

    assert max_running == 1
    rows = sorted(list_json(cli), key=lambda r: r["id"])
    for row in rows:
        assert_outcome(row, "completed", 0, "success")
    for before, after in itertools.pairwise(rows):
        assert iso(after["started_at"]) >= iso(before["completed_at"]), (before, after)


# --- 7. --after -------------------------------------------------------------------------


def test_after_waits_for_success_and_fails_on_failure(env: Env, cli: Cli) -> None:
    slow = save_doc(cli, "[[script:slow]] first", "First")
    hello = save_doc(cli, "[[script:hello]] second", "Second")
    bad = save_doc(cli, "[[script:api400slow]] fails", "Fails")

    a = start_background(cli, slow)
    d = start_background(cli, bad)
    b = start_background(cli, hello, "--after", str(a))
    c = start_background(cli, hello, "--after", str(d))
    assert show(cli, b)["status"] == "queued"
    assert show(cli, c)["status"] == "queued"

    row_a, row_d = wait_final(cli, a), wait_final(cli, d)
    row_b, row_c = wait_final(cli, b), wait_final(cli, c)

    assert_outcome(row_a, "completed", 0, "success")
    assert_outcome(row_b, "completed", 0, "success")
    assert iso(row_b["started_at"]) >= iso(row_a["completed_at"])
    assert_outcome(row_d, "failed", 1, "invalid_request")
    assert_outcome(row_c, "failed", 1, "dependency_failed")
    assert row_c["agent_pid"] is None
    assert row_c["session_id"] is None

    # Asking to wait for a run that already failed fails at once: an error (exit 1), with the
    # row kept as the record of it.
    late = cli("claude", "execute", str(hello), "--background", "--after", str(d))
    assert (late.code, late.stdout) == (1, ""), late
    assert "which failed" in late.stderr and "dependency_failed" in late.stderr
    e = started_id(late.stderr)
    row_e = show(cli, e)
    assert_outcome(row_e, "failed", 1, "dependency_failed")
    assert row_e["agent_pid"] is None


def test_after_a_dependency_that_ends_while_the_start_is_in_progress(
    env: Env, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dependency's supervisor finishes, and runs its queue pass, between the moment
    `start_execution` reads the dependency (still running) and the moment it inserts the new row.
    Nobody is left to move the new row: it must not stay queued forever."""
    from emdx.models import ExecOptions
    from emdx.service import Service

    bad = save_doc(cli, "[[script:api400slow]] fails", "Fails")
    hello = save_doc(cli, "[[script:hello]] second", "Second")
    d = start_background(cli, bad)
    wait_until(lambda: show(cli, d)["status"] == "running", 30, message="the dependency to run")

    with Service() as service:
        real_create = service.store.executions.create

        def create_after_dependency_ended(**kwargs: Any) -> int:
            row_d = wait_final(cli, d)
            # ...and its supervisor, which runs the queue pass after the final write, is gone.
            wait_until(
                lambda: not system.same_process(row_d["pid"], row_d["pid_started_at"]),
                30,
                message="the dependency's supervisor to exit",
            )
            return real_create(**kwargs)

        monkeypatch.setattr(service.store.executions, "create", create_after_dependency_ended)
        c = service.start_execution(hello, ExecOptions(after_id=d)).id

    assert_outcome(show(cli, d), "failed", 1, "invalid_request")

    def c_decided() -> dict[str, Any] | None:
        row = show(cli, c)
        return row if row["status"] != "queued" else None

    assert_outcome(wait_until(c_decided, 5, 0.2, "c past queued"), "failed", 1, "dependency_failed")


# --- 8. smart execution -----------------------------------------------------------------


def run_foreground(cli: Cli, doc: int, *extra: str) -> Any:
    result = cli("claude", "execute", str(doc), *extra, timeout=RUN_DEADLINE_S)
    assert result.code == 0, result.stdout + result.stderr
    return result


def test_smart_note_saves_an_analysis_document(env: Env, cli: Cli) -> None:
    note = save_doc(cli, "[[script:analysis]]\nShould we cache the index?", "Caching", "note")

    run_foreground(cli, note)

    row = show(cli, 1)
    assert row["exec_type"] == "note"
    assert row["status"] == "completed"
    assert row["output_doc_id"] is not None
    out = doc_json(cli, row["output_doc_id"])
    assert out["title"] == "Analysis: Caching"
    assert out["tags"] == ["🔍"]
    assert out["parent_id"] == note
    assert out["content"] == ANALYSIS_TEXT
    assert out["project"] == "it"
    # The analysis prompt wrapped the note, and the read-only tool set was offered.
    first = env.server.requests[0]
    assert "Should we cache the index?" in json.dumps(first)
    assert "Analysis: Caching" in json.dumps(first)
    started = [e for e in raw_log(cli, 1) if "started: " in e.get("message", "")]
    assert (
        started
        and "--allowedTools Read,Glob,Grep,LS,WebFetch,WebSearch,Write" in (started[0]["message"])
    )


def test_smart_analysis_saves_a_gameplan_document(env: Env, cli: Cli) -> None:
    analysis = save_doc(cli, "[[script:gameplan]]\nThe cache analysis.", "Cache", "analysis")

    run_foreground(cli, analysis)

    row = show(cli, 1)
    assert row["exec_type"] == "analysis"
    out = doc_json(cli, row["output_doc_id"])
    assert out["title"] == "Gameplan: Cache"
    assert sorted(out["tags"]) == sorted(["🎯", "🚀"])
    assert out["parent_id"] == analysis
    assert out["content"] == GAMEPLAN_TEXT


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=emdx test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def test_smart_gameplan_runs_in_a_worktree_and_marks_its_source_done(env: Env, cli: Cli) -> None:
    repo = env.workdir / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("a repo\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "init")
    plan = save_doc(cli, "[[script:implement]]\n1. write impl.txt", "Build it", "gameplan,active")

    result = cli("claude", "execute", str(plan), cwd=repo, timeout=RUN_DEADLINE_S)

    assert result.code == 0, result.stdout + result.stderr
    row = show(cli, 1)
    assert_outcome(row, "completed", 0, "success")
    assert row["exec_type"] == "gameplan"
    assert row["output_doc_id"] is None
    # A gameplan started inside a repository gets a worktree on its own branch.
    assert row["branch"] == "exec-1-build-it"
    workdir = Path(row["working_dir"])
    assert workdir.parent == env.emdx_home / "runs"
    assert git(workdir, "rev-parse", "--abbrev-ref", "HEAD") == "exec-1-build-it"
    assert (workdir / "README.md").read_text() == "a repo\n"
    assert (workdir / "impl.txt").read_text() == "implemented\n"
    assert not (repo / "impl.txt").exists()
    assert "exec-1-build-it" in json.dumps(env.server.requests[0])
    source = doc_json(cli, plan)
    assert "✅" in source["tags"] and "🎉" in source["tags"], source["tags"]
    assert "🚀" not in source["tags"]
    docs = json.loads(cli("list", "--json").stdout)
    assert [d["id"] for d in docs] == [plan]


def test_no_smart_and_tools_override(env: Env, cli: Cli) -> None:
    note = save_doc(cli, "[[script:readonly]]\nJust a note.", "Plain", "note")

    run_foreground(cli, note, "--no-smart", "--tools", "Read")

    row = show(cli, 1)
    assert row["exec_type"] == "generic"
    assert row["status"] == "completed"
    assert row["output_doc_id"] is None
    assert row["options"]["tools"] == ["Read"]
    docs = json.loads(cli("list", "--json").stdout)
    assert [d["id"] for d in docs] == [note]
    # generic: the document itself is the prompt, not the analysis wrapper
    assert "Analysis:" not in json.dumps(env.server.requests[0]["messages"])
    entries = raw_log(cli, 1)
    started = [e for e in entries if e.get("source") == "runner" and "started: " in e["message"]]
    assert len(started) == 1
    assert "--allowedTools Read" in started[0]["message"]
    assert "--allowedTools Read," not in started[0]["message"]
    # The script asks for Bash first: with only Read allowed the CLI refuses it.
    assert tool_uses(entries) == ["Bash", "Read"]
    assert not (Path(row["working_dir"]) / "forbidden.txt").exists()
    result = next(e["raw"] for e in entries if e.get("type") == "result")
    assert [d["tool_name"] for d in result["permission_denials"]] == ["Bash"], result


# --- 9. kill mid-tool -------------------------------------------------------------------


def _sleep_300(env: Env, execution_id: int) -> list[tuple[int, float]]:
    found = []
    for pid, started in run_processes(execution_id, env.emdx_home):
        with contextlib.suppress(psutil.Error):
            cmd = psutil.Process(pid).cmdline()
            if cmd[:1] == ["sleep"] and cmd[1:] == ["300"]:
                found.append((pid, started))
    return found


def test_kill_stops_a_run_in_the_middle_of_a_tool(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:sleeptool]] sleep a while", "Sleeper")
    execution_id = start_background(cli, doc)

    sleepers = wait_until(lambda: _sleep_300(env, execution_id), 60, message="the `sleep 300` tool")
    running = show(cli, execution_id)
    assert running["status"] == "running"
    assert running["agent_pid"] and running["pid"]
    marked_before = run_processes(execution_id, env.emdx_home)
    # The supervisor, the agent and the tool's shell/sleep all carry the marker.
    assert {running["pid"], running["agent_pid"]} <= {pid for pid, _ in marked_before}

    # The Bash tool put the command in a session of its own: the agent's group cannot reach it.
    for pid, _ in sleepers:
        assert os.getsid(pid) != os.getsid(running["agent_pid"])

    result = cli("exec", "kill", str(execution_id))

    assert result.code == 0, result.stderr
    row = show(cli, execution_id)
    assert row["status"] == "killed", diagnose(row)
    assert row["exit_code"] in (143, 137)
    assert row["reason"] == "killed_by_user"
    assert_run_processes_gone(env, row)
    for ident in [*sleepers, *marked_before]:
        assert not system.same_process(*ident), ident


# --- 10. watchdogs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "reason"), [("--stall-timeout", "stalled"), ("--timeout", "timeout")]
)
def test_watchdog_stops_a_silent_model(env: Env, cli: Cli, option: str, reason: str) -> None:
    doc = save_doc(cli, "[[script:stall]] think forever", "Stall")

    # The model never answers: only the watchdog can end the run (else the command would
    # run into RUN_DEADLINE_S and fail the test).
    result = cli("claude", "execute", str(doc), option, "3s", timeout=RUN_DEADLINE_S)

    assert result.code == 124, result.stdout + result.stderr
    row = show(cli, 1)
    assert_outcome(row, "failed", 124, reason)
    assert_run_processes_gone(env, row)


# --- 11. a 1 MB document ----------------------------------------------------------------


def test_one_megabyte_document_reaches_the_model(env: Env, cli: Cli) -> None:
    line = "The quick brown fox jumps over the lazy dog; emdx keeps the whole prompt.\n"
    body = line * (1_000_000 // len(line))
    end_marker = "END-MARKER-7f3a9c1e-the-last-line"
    content = f"[[script:big]]\n{body}{end_marker}\n"
    assert len(content.encode()) > 1_000_000
    doc = save_doc(cli, content, "Big")

    result = cli("claude", "execute", str(doc), timeout=RUN_DEADLINE_S)

    assert result.code == 0, result.stdout[-2000:] + result.stderr
    row = show(cli, 1)
    assert_outcome(row, "completed", 0, "success")
    first = json.dumps(env.server.requests[0])
    assert end_marker in first
    assert first.count("The quick brown fox") == body.count("The quick brown fox")
