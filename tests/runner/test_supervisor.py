"""The supervisor end to end with the fake agent: success, prompt delivery, outcomes, garbage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest
from runner_helpers import Runs
from testkit import read_pidfile, result_payload, wait_until

from emdx import runlog, system
from emdx.models import ExecOptions


def test_success_records_everything(runs: Runs) -> None:
    pidfile = runs.pidfile()
    content = f"# success\nFAKE:events=3\nFAKE:sleep=2.5\nFAKE:pidfile={pidfile}\nünïcode ✓\n"
    doc = runs.doc(content)
    first = runs.service.start_execution(doc, ExecOptions(model="fake-opus"))
    second = runs.service.start_execution(runs.doc("# another run\nFAKE:events=1\n"))
    assert first.status.value == "running"

    agent = read_pidfile(pidfile)
    row = runs.wait_running_agent(first.id)
    assert (row.agent_pid, row.agent_started_at) == agent[0]
    assert system.same_process(row.pid, row.pid_started_at), "supervisor not recorded"
    beat = wait_until(lambda: runs.get(first.id).heartbeat_at, 10, message="first heartbeat")
    wait_until(
        lambda: (runs.get(first.id).heartbeat_at or "") > beat, 10, message="heartbeat advances"
    )

    row = runs.wait_final(first.id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    assert row.session_id and row.session_id.startswith("fake-")
    assert row.model == "fake-opus"
    assert row.num_turns == 2
    assert row.cost_usd == 0.0123
    assert (row.input_tokens, row.output_tokens) == (100, 50)
    assert row.heartbeat_at and row.started_at and row.completed_at
    assert row.last_event_at
    assert row.malformed_count == 0
    assert row.event_count == 5  # init, 3 assistant, result

    # log entries: structured, with the raw event for agent entries
    assert row.log_file
    entries = runlog.read_entries(Path(row.log_file))
    assert entries
    for entry in entries:
        for key in ("ts", "level", "source", "pid", "type", "message"):
            assert key in entry, (key, entry)
    agent_entries = [e for e in entries if e["source"] == "agent"]
    assert [e["type"] for e in agent_entries] == [
        "system/init",
        "assistant",
        "assistant",
        "assistant",
        "result",
    ]
    assert all(e["pid"] == row.agent_pid and isinstance(e["raw"], dict) for e in agent_entries)
    assert agent_entries[0]["raw"]["session_id"] == row.session_id
    runner_entries = [e for e in entries if e["source"] == "runner"]
    assert runner_entries and all(e["pid"] == row.pid for e in runner_entries)

    # the prompt reached the agent byte-exact, on stdin
    payload = result_payload(entries)
    data = content.encode("utf-8")
    assert payload["prompt_bytes"] == len(data)
    assert payload["sha256"] == hashlib.sha256(data).hexdigest()
    assert payload["argv"][:2] == ["-p", "--output-format"]
    assert payload["argv"][payload["argv"].index("--model") + 1] == "fake-opus"

    # a private, unique working directory; the agent ran in it
    assert row.working_dir
    workdir = Path(row.working_dir)
    assert workdir.is_dir()
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert agent_entries[0]["raw"]["cwd"] == str(workdir)
    other = runs.wait_final(second.id)
    assert other.status.value == "completed"
    assert other.working_dir and other.working_dir != row.working_dir
    assert other.run_key != row.run_key

    runs.assert_all_gone(row, agent)
    runs.assert_all_gone(other)


def test_large_prompt_goes_on_stdin(runs: Runs) -> None:
    filler = "".join(f"line {i:07d} of a large prompt document\n" for i in range(27_000))
    content = "# big\n" + filler
    assert len(content.encode()) > 1024 * 1024
    doc = runs.doc(content)
    execution = runs.service.start_execution(doc)
    row = runs.wait_final(execution.id, timeout=60)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    assert row.log_file
    payload = result_payload(runlog.read_entries(Path(row.log_file)))
    assert payload["prompt_bytes"] == len(content.encode())
    assert payload["sha256"] == hashlib.sha256(content.encode()).hexdigest()
    argv_text = " ".join(payload["argv"])
    assert "large prompt document" not in argv_text
    assert len(argv_text) < 4096
    runs.assert_all_gone(row)


def test_hostile_content_reaches_agent_verbatim(runs: Runs, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    content = (
        f"--dangerously-skip-permissions --help\n"
        f"$(touch {marker}1)\n"
        f"`touch {marker}2`\n"
        f"; touch {marker}3; rm -rf {tmp_path}/nothing\n"
        f"&& touch {marker}4 || touch {marker}5 | tee {marker}6 > {marker}7\n"
        f"'single' \"double\" \\backslash \\n $HOME ${{HOME}} %s %n {{}} *\n"
        f"\ttabs\r\ncrlf and trailing spaces   \n\n\n"
    )
    doc = runs.doc(content, title="hostile")
    execution = runs.service.start_execution(doc)
    row = runs.wait_final(execution.id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    assert row.log_file
    payload = result_payload(runlog.read_entries(Path(row.log_file)))
    assert payload["prompt_bytes"] == len(content.encode())
    assert payload["sha256"] == hashlib.sha256(content.encode()).hexdigest()
    assert "--dangerously-skip-permissions" not in payload["argv"]
    assert "--help" not in payload["argv"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []
    runs.assert_all_gone(row)


def test_garbage_output_is_counted_not_fatal(runs: Runs) -> None:
    doc = runs.doc("# garbage\nFAKE:garbage\nFAKE:events=2\n")
    execution = runs.service.start_execution(doc)
    row = runs.wait_final(execution.id, timeout=60)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    # "this is not json", '{"unterminated": ', invalid UTF-8, the 5 MB line, "[1, 2, 3]"
    assert row.malformed_count == 5
    assert row.event_count == 5 + 1 + 1 + 2 + 1  # + init, brand_new_event, 2 assistant, result
    assert row.log_file
    entries = runlog.read_entries(Path(row.log_file))
    malformed = [e for e in entries if e["type"] == "malformed"]
    assert len(malformed) == 5
    assert all(e["level"] == "warning" for e in malformed)
    texts = [e["raw"] for e in malformed]
    assert "this is not json" in texts
    assert "[1, 2, 3]" in texts
    big = [t for t in texts if set(t) == {"x"}]
    assert len(big) == 1 and len(big[0]) <= 2000  # the 5 MB line is kept, cut
    assert any(e["type"] == "brand_new_event" for e in entries)  # unknown types are kept
    assert row.log_file and os.path.getsize(row.log_file) < 1024 * 1024
    runs.assert_all_gone(row)


def _outcome(runs: Runs, content: str) -> tuple[str, int | None, str | None]:
    execution = runs.service.start_execution(runs.doc(content))
    row = runs.wait_final(execution.id)
    runs.assert_all_gone(row)
    return row.status.value, row.exit_code, row.reason


def test_outcomes_from_result_and_exit_code(runs: Runs) -> None:
    cases = {
        "FAKE:no-result": ("failed", 1, "no_result"),
        "FAKE:error-result": ("failed", 1, "agent_error"),
        "FAKE:max-turns": ("failed", 1, "max_turns"),
        "FAKE:exit=3": ("failed", 3, "nonzero_exit"),
        "FAKE:no-result\nFAKE:exit=5": ("failed", 5, "no_result"),
    }
    started = {
        directive: runs.service.start_execution(runs.doc(f"# case\n{directive}\n")).id
        for directive in cases
    }
    for directive, expected in cases.items():
        row = runs.wait_final(started[directive])
        assert (row.status.value, row.exit_code, row.reason) == expected, directive
        runs.assert_all_gone(row)
    error_row = runs.get(started["FAKE:error-result"])
    assert error_row.log_file
    result = [e for e in runlog.read_entries(Path(error_row.log_file)) if e["type"] == "result"]
    assert result[0]["level"] == "error"


def test_agent_sigkilled_mid_run(runs: Runs) -> None:
    pidfile = runs.pidfile()
    doc = runs.doc(f"# killed\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    execution = runs.service.start_execution(doc)
    agent = read_pidfile(pidfile)
    runs.wait_running_agent(execution.id)
    os.kill(agent[0][0], 9)
    row = runs.wait_final(execution.id, timeout=15)
    # Observed and per DESIGN §5: a run without a result event fails; death by signal 9 → 137.
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "no_result")
    runs.assert_all_gone(row, agent)


def test_result_json_is_parsed_from_fake(runs: Runs) -> None:
    """The fake's result text is JSON with prompt size, sha256 and argv (test-helper sanity)."""
    content = "plain prompt"
    execution = runs.service.start_execution(runs.doc(content))
    row = runs.wait_final(execution.id)
    assert row.log_file
    payload = result_payload(runlog.read_entries(Path(row.log_file)))
    assert set(payload) == {"prompt_bytes", "sha256", "argv", "env", "cwd"}
    assert json.dumps(payload)


def test_log_size_cap_keeps_the_result(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDX_LOG_MAX_BYTES", "4000")
    execution = runs.service.start_execution(runs.doc("# chatty\nFAKE:events=60\n"))
    row = runs.wait_final(execution.id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    assert row.event_count == 62
    assert row.log_file
    entries = runlog.read_entries(Path(row.log_file))
    assert any("log reached 4000 bytes" in str(e["message"]) for e in entries)
    # The end of the run says how much the cap cost.
    assert any(re.search(r"\d+ later entries not kept", str(e["message"])) for e in entries)
    assert [e["type"] for e in entries if e["source"] == "agent"][-1] == "result"
    assert any(str(e["message"]).startswith("finished: completed") for e in entries)
    assert os.path.getsize(row.log_file) < 4000 + 4096
