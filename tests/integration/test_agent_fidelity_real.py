"""Claude Code read right, end to end: background tasks, several results, usage limits waited
out, retries, refused tools, budgets and a kill in the middle of a multi-block turn — the real
CLI (the pinned version) against the scripted model server, driven through `python -m emdx`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from real_cli import (
    Env,
    assert_outcome,
    assert_run_processes_gone,
    iso,
    raw_log,
    real_env,
    save_doc,
    show,
    start_background,
    wait_final,
)
from testkit import Cli, wait_until

pytestmark = pytest.mark.integration


def bash(command: str, **extra: Any) -> dict[str, Any]:
    return {"name": "Bash", "input": {"command": command, "description": "test step", **extra}}


LIMIT_RESET_S = 4
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "background": [
        {
            "text": "Starting it.",
            "tool_use": bash("sleep 3; echo finished > bg.txt", run_in_background=True),
        },
        {"text": "It runs in the background.", "usage": {"input_tokens": 300, "output_tokens": 7}},
        {"tool_use": {"name": "Read", "input": {"file_path": "{cwd}/bg.txt"}}},
        {
            "text": "The background job finished.",
            "usage": {"input_tokens": 500, "output_tokens": 9},
        },
    ],
    "limited": [
        {"tool_use": bash("echo before the limit > before.txt")},
        {
            "error": {
                "status": 429,
                "type": "rate_limit_error",
                "message": "usage limit",
                "times": 1,
                "rate_limit": {"claim": "five_hour", "reset_in": LIMIT_RESET_S},
            },
            "text": "Carried on after the limit.",
        },
    ],
    "long_limit": [
        {
            "error": {
                "status": 429,
                "type": "rate_limit_error",
                "message": "usage limit",
                "rate_limit": {"claim": "seven_day", "reset_in": 3600},
            }
        },
    ],
    "hello": [{"text": "hello from the scripted model"}],
    # 529 to the first two requests: with CLAUDE_CODE_MAX_RETRIES=1 the first process gives up,
    # and the resumed one (same session) is answered.
    "overloaded": [
        {
            "error": {
                "status": 529,
                "type": "overloaded_error",
                "message": "Overloaded",
                "times": 2,
            },
            "text": "Answered after the retry.",
        },
    ],
    "denied": [
        {
            "tool_use": {
                "name": "WebFetch",
                "input": {"url": "https://example.invalid/x", "prompt": "read it"},
            }
        },
        {"text": "Could not fetch it."},
    ],
    "expensive": [
        {
            "tool_use": bash("echo spent > spent.txt"),
            "usage": {"input_tokens": 50000, "output_tokens": 1000},
        },
        {"text": "unreachable"},
    ],
    "multiblock": [
        {
            "text": "Two steps.",
            "tool_use": [bash("echo started > first.txt; sleep 120"), bash("echo second")],
            "usage": {
                "input_tokens": 1000,
                "cache_read_input_tokens": 200,
                "cache_creation_input_tokens": 30,
                "output_tokens": 50,
            },
        },
        {"text": "unreachable"},
    ],
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> Iterator[Env]:
    """The subscriber path (where usage limits exist), one retry inside the CLI, no jitter."""
    monkeypatch.setenv("EMDX_LIMIT_JITTER_SECONDS", "0")
    monkeypatch.setenv("EMDX_RETRY_BACKOFF_SECONDS", "0")
    with real_env(tmp_path, monkeypatch, isolated_env, SCRIPTS, oauth=True, max_retries=1) as e:
        yield e


def results_of(cli: Cli, execution_id: int) -> list[dict[str, Any]]:
    return [
        e["raw"]
        for e in raw_log(cli, execution_id)
        if isinstance(e.get("raw"), dict) and e["raw"].get("type") == "result"
    ]


def test_a_background_task_keeps_the_run_until_its_second_result(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:background]] run it in the background", "Background")
    execution_id = start_background(cli, doc)
    row = wait_final(cli, execution_id)
    assert_outcome(row, "completed", 0, "success")
    assert (Path(row["working_dir"]) / "bg.txt").read_text() == "finished\n"
    results = results_of(cli, execution_id)
    assert len(results) == 2, results  # one process, two results
    # Counts are summed over the process's results; the text is the last one's.
    assert row["num_turns"] == sum(r["num_turns"] for r in results)
    assert row["input_tokens"] == sum(
        r["usage"]["input_tokens"] + r["usage"]["cache_read_input_tokens"]
        + r["usage"]["cache_creation_input_tokens"] for r in results
    )  # fmt: skip
    assert row["output_tokens"] == sum(r["usage"]["output_tokens"] for r in results)
    assert row["details"]["results"] == 2 and row["details"].get("background_open", 0) == 0


def test_a_usage_limit_is_waited_out_and_holds_the_queue(
    env: Env, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "2")
    doc = save_doc(cli, "[[script:limited]] do some work", "Limited")
    limited = start_background(cli, doc)
    waiting = wait_until(
        lambda: (r := show(cli, limited))["status"] == "waiting" and r,
        60,
        message=lambda: f"#{limited} waiting: {show(cli, limited)}",
    )
    assert waiting["waiting_reason"] == "usage_limit" and waiting["resets_at"]
    assert abs(iso(waiting["waiting_until"]) - iso(waiting["resets_at"])) < 2  # no jitter
    shown = cli("exec", "show", str(limited))
    assert "waiting for usage limit until" in shown.stdout, shown.stdout
    # A slot is free (cap 2), but a new run would only hit the same limit: it is held.
    other = start_background(cli, save_doc(cli, "[[script:hello]] hi", "Held"))
    assert show(cli, other)["status"] == "queued"
    listing = cli("exec", "list")
    assert "held: usage limit until" in listing.stdout, listing.stdout

    row = wait_final(cli, limited)
    assert_outcome(row, "completed", 0, "success")
    assert row["attempt"] == 2 and row["details"].get("attempt") == 2
    # The resumed process continued the session: its request carries the first one's history.
    asked = [r for r in env.server.requests if "[[script:limited]]" in json.dumps(r)]
    assert "echo before the limit" in json.dumps(asked[-1].get("messages"))
    assert row["session_id"] in json.dumps(asked[-1].get("metadata"))
    assert (Path(row["working_dir"]) / "before.txt").exists()  # the same directory, resumed
    held = wait_final(cli, other)
    assert_outcome(held, "completed", 0, "success")
    assert iso(held["started_at"]) >= iso(waiting["waiting_until"]) - 1
    assert_run_processes_gone(env, row)


def test_a_run_killed_while_it_waits_ends_killed(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:long_limit]] do some work", "Long limit")
    execution_id = start_background(cli, doc)
    row = wait_until(
        lambda: (r := show(cli, execution_id))["status"] == "waiting" and r,
        60,
        message=lambda: f"#{execution_id} waiting: {show(cli, execution_id)}",
    )
    assert row["waiting_reason"] == "usage_limit"
    assert row["agent_pid"] is None or not Path(f"/proc/{row['agent_pid']}").exists()
    killed = cli("exec", "kill", str(execution_id))
    assert killed.code == 0, killed
    row = wait_final(cli, execution_id, 30)
    assert (row["status"], row["reason"]) == ("killed", "killed_by_user"), row
    assert_run_processes_gone(env, row)
    # The queue is not held by a limit nobody waits for any more.
    other = start_background(cli, save_doc(cli, "[[script:hello]] hi", "After"))
    assert_outcome(wait_final(cli, other), "completed", 0, "success")


def test_overloaded_fails_precisely_and_retries_resume(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:overloaded]] hello", "Overloaded")
    plain = cli("claude", "execute", str(doc), "--no-smart")
    assert plain.code == 1, plain
    first = show(cli, 1)
    assert_outcome(first, "failed", 1, "overloaded")
    assert "overloaded" in cli("exec", "show", "1").stdout.lower()

    doc = save_doc(cli, "[[script:overloaded]] hello again", "Overloaded twice")
    retried = start_background(cli, doc, "--no-smart", "--retries", "1")
    row = wait_final(cli, retried)
    assert_outcome(row, "completed", 0, "success")
    assert row["attempt"] == 2
    assert len(results_of(cli, retried)) == 2  # the failed process's result and the resumed one


def test_a_refused_tool_is_shown(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:denied]] fetch it", "Denied")
    assert cli("claude", "execute", str(doc), "--no-smart", "--tools", "Bash,Read").code == 0
    row = show(cli, 1)
    assert_outcome(row, "completed", 0, "success")
    denials = row["details"]["permission_denials"]
    assert [d["tool_name"] for d in denials] == ["WebFetch"], denials
    assert "denied: WebFetch" in cli("exec", "show", "1").stdout


def test_a_budget_stops_the_run(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:expensive]] spend", "Expensive")
    done = cli("claude", "execute", str(doc), "--no-smart", "--max-budget-usd", "0.1")
    assert done.code == 1, done
    row = show(cli, 1)
    assert_outcome(row, "failed", 1, "max_budget")
    assert row["cost_usd"] > 0.1 and row["input_tokens"] == 50000  # from the model usage
    assert "budget" in cli("exec", "show", "1").stdout


def test_a_kill_mid_tool_counts_a_multi_block_turn_once(env: Env, cli: Cli) -> None:
    doc = save_doc(cli, "[[script:multiblock]] two steps", "Multi block")
    execution_id = start_background(cli, doc, "--no-smart")
    wait_until(
        lambda: (Path(show(cli, execution_id)["working_dir"] or "/nonexistent") / "first.txt")
        .exists(), 60, message="the first tool to start",
    )  # fmt: skip
    assert cli("exec", "kill", str(execution_id)).code == 0
    row = wait_final(cli, execution_id, 30)
    assert (row["status"], row["reason"]) == ("killed", "killed_by_user"), row
    # Three assistant events of one message id, counted once: 1000 + 200 + 30 in.
    assert (row["input_tokens"], row["cache_read_tokens"]) == (1230, 200), row
    assert row["num_turns"] == 1
    assert_run_processes_gone(env, row)
