"""`emdx exec killall`, `monitor`, `retry`, and `resume`'s refusals (the real resume is in
test_control_resume.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from control_helpers import Ctl
from testkit import Identity, alive


def started_id(stdout: str) -> int:
    match = re.search(r"execution #(\d+)", stdout)
    assert match, stdout
    return int(match.group(1))


# -- killall ------------------------------------------------------------------------------


def test_killall_needs_yes_without_a_terminal_then_kills_everything(
    ctl: Ctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "2")
    running: list[tuple[int, list[Identity]]] = []
    for _ in range(2):
        pidfile = ctl.pidfile()
        execution_id = ctl.run(f"long\nFAKE:setsid-child\nFAKE:pidfile={pidfile}\nFAKE:sleep=60\n")
        processes = ctl.read_pidfile(pidfile, 2)
        row = ctl.wait_agent(execution_id)
        running.append((execution_id, [*processes, (row.pid or 0, row.pid_started_at or 0.0)]))
    queued = ctl.run("waits for a slot\nFAKE:events=1\n")
    assert ctl.get(queued).status.value == "queued"
    dependent = ctl.run("after the first\nFAKE:events=1\n", "--after", str(running[0][0]))
    before = {r.id: r for r in ctl.rows()}

    refused = ctl.emdx("exec", "killall")

    assert refused.code == 2  # a usage error: the command line lacks --yes
    assert refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("emdx: error: 4 executions would be killed")
    assert "--yes" in refused.stderr
    for execution_id, identities in running:
        assert all(alive(i) for i in identities)
        assert ctl.get(execution_id).status.value == "running"
    assert ctl.get(queued).status.value == "queued"
    assert ctl.get(dependent).status.value == "queued"

    done = ctl.emdx("exec", "killall", "--yes")

    assert done.code == 0, done.stderr
    for execution_id in (queued, dependent, *(i for i, _ in running)):
        assert f"execution #{execution_id} killed" in done.stdout
        row = ctl.get(execution_id)
        assert (row.status.value, row.reason) == ("killed", "killed_by_user")
    for execution_id, identities in running:
        assert ctl.get(execution_id).exit_code == 143
        ctl.assert_run_gone(execution_id, identities)
    for execution_id in (queued, dependent):
        # Never started: no supervisor was ever recorded, and none starts later.
        assert ctl.get(execution_id).pid is None
        assert before[execution_id].pid is None
    # Every supervisor is gone now, so nothing can start them any more.
    assert ctl.ok("exec", "killall").stdout.strip() == "nothing is running"


def killall_in_a_terminal(ctl: Ctl, answer: bytes) -> tuple[int, str]:
    """`exec killall` with a terminal on stdin, answering its question with `answer`."""
    master, slave = os.openpty()
    try:
        proc = ctl.popen(
            [sys.executable, "-m", "emdx", "exec", "killall"],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.write(master, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert "Traceback" not in err.decode(), err.decode()
    return proc.returncode, out.decode()


def test_killall_in_a_terminal_asks_first(ctl: Ctl) -> None:
    execution_id = ctl.run("long\nFAKE:sleep=60\n")
    row = ctl.wait_agent(execution_id)
    identities = [(row.pid or 0, row.pid_started_at or 0.0)]

    code, out = killall_in_a_terminal(ctl, b"n\n")

    assert code == 0
    assert "kill 1 execution?" in out and "nothing killed" in out
    assert alive(identities[0]) and ctl.get(execution_id).status.value == "running"

    code, out = killall_in_a_terminal(ctl, b"y\n")

    assert code == 0
    assert f"execution #{execution_id} killed, exit 143" in out
    ctl.assert_run_gone(execution_id, identities)


# -- monitor ------------------------------------------------------------------------------


def monitor_output(ctl: Ctl, seconds: float = 2.0) -> tuple[int, str, str]:
    """Run `exec monitor --interval 0.3`, read its output for `seconds`, then Ctrl-C it."""
    proc = ctl.popen(
        [sys.executable, "-m", "emdx", "exec", "monitor", "--interval", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    chunks: list[bytes] = []
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout.fileno()

    def pump() -> None:
        while data := os.read(stdout, 65536):
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    time.sleep(seconds)  # the monitor is meant to keep running: let it refresh a few times
    assert proc.poll() is None, "monitor exited on its own"
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=15)
    reader.join(timeout=5)
    return code, b"".join(chunks).decode("utf-8", "replace"), proc.stderr.read().decode()


def test_monitor_with_nothing_running(ctl: Ctl) -> None:
    code, out, err = monitor_output(ctl)
    assert code == 0, err
    assert "Traceback" not in err
    assert "emdx executions" in out and "nothing is running" in out
    assert "0 active" in out


def test_monitor_shows_a_running_run(ctl: Ctl) -> None:
    execution_id = ctl.run("monitored\nFAKE:sleep=60\n", "--no-smart")
    ctl.wait_agent(execution_id)

    code, out, err = monitor_output(ctl)

    assert code == 0, err
    assert "Traceback" not in err
    rows = [line for line in out.splitlines() if re.search(rf"\b{execution_id}\b", line)]
    assert rows, out
    assert "running" in rows[-1] and "healthy" in rows[-1]
    assert "1 active" in out
    assert ctl.get(execution_id).status.value == "running"  # watching does not disturb it


# -- retry --------------------------------------------------------------------------------

OPTIONS = (
    "--no-smart",
    "--model",
    "m-retry",
    "--max-turns",
    "3",
    "--tools",
    "Read,Bash",
    "--timeout",
    "60",
    "--stall-timeout",
    "2m",
)


def agent_argv(ctl: Ctl, execution_id: int) -> list[str]:
    """The agent's arguments, as the supervisor logged them when it started the agent."""
    log = ctl.ok("exec", "logs", str(execution_id), "--raw").stdout
    entries = [json.loads(line) for line in log.splitlines()]
    started: list[str] = [
        e["message"]
        for e in entries
        if e["source"] == "runner" and re.match(r"agent \d+ started: ", e["message"])
    ]
    assert len(started) == 1, entries
    return started[0].split(": ", 1)[1].split(" ")


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_retry_runs_the_same_document_with_the_same_options(ctl: Ctl, outcome: str) -> None:
    content = "retry me\nFAKE:events=1\n" + ("FAKE:error-result\n" if outcome == "failed" else "")
    doc = ctl.doc(content)
    first = ctl.start(doc, *OPTIONS)
    assert ctl.wait_final(first).status.value == outcome
    old = ctl.ok("exec", "show", str(first), "--json").json()

    result = ctl.emdx("exec", "retry", str(first))

    assert result.code == 0, result.stderr
    second = started_id(result.stdout)
    assert second != first
    assert f"retry of #{first}" in result.stdout
    row = ctl.wait_final(second)
    assert row.status.value == outcome
    new = ctl.ok("exec", "show", str(second), "--json").json()
    assert new["parent_execution_id"] == first
    assert (new["doc_id"], new["doc_title"], new["exec_type"]) == (
        old["doc_id"],
        old["doc_title"],
        old["exec_type"],
    )
    assert new["options"] == old["options"]
    assert old["options"]["model"] == "m-retry" and old["options"]["max_turns"] == 3
    assert old["options"]["tools"] == ["Read", "Bash"]
    assert old["options"]["timeout_s"] == 60 and old["options"]["stall_timeout_s"] == 120
    assert new["working_dir"] != old["working_dir"]  # a fresh directory for the new run
    assert agent_argv(ctl, second) == agent_argv(ctl, first)
    assert "--model" in agent_argv(ctl, second)


def test_retry_of_a_running_run_is_refused(ctl: Ctl) -> None:
    execution_id = ctl.run("long\nFAKE:sleep=60\n")
    ctl.wait_agent(execution_id)

    result = ctl.emdx("exec", "retry", str(execution_id))

    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"emdx: error: execution {execution_id} is still running"
    assert [r.id for r in ctl.rows()] == [execution_id]


def test_retry_of_a_queued_run_is_refused(ctl: Ctl) -> None:
    blocker = ctl.run("long\nFAKE:sleep=60\n")
    waiting = ctl.run("later\nFAKE:events=1\n", "--after", str(blocker))
    assert ctl.get(waiting).status.value == "queued"

    result = ctl.emdx("exec", "retry", str(waiting))

    assert result.code == 1
    assert result.stderr.strip() == f"emdx: error: execution {waiting} is still queued"


# -- resume refusals ----------------------------------------------------------------------


def test_resume_without_a_session_is_refused(ctl: Ctl) -> None:
    doc = ctl.doc("an old release's run")
    legacy = ctl.insert_row(
        run_key=None,
        old_id="claude-9-1752791234",
        doc_id=doc,
        status="completed",
        exit_code=0,
        completed_at="2025-07-17T22:30:00+00:00",
        working_dir=str(ctl.tmp_path),
    )

    for ref in (str(legacy), "claude-9-1752791234"):
        result = ctl.emdx("exec", "resume", ref, "go on")
        assert result.code == 1
        assert result.stdout == ""
        assert result.stderr.strip() == (
            f"emdx: error: execution {legacy} has no agent session to resume"
        )
    assert [r.id for r in ctl.rows()] == [legacy]


def test_resume_of_a_running_run_or_without_prompt_is_refused(ctl: Ctl) -> None:
    execution_id = ctl.run("long\nFAKE:sleep=60\n")
    ctl.wait_agent(execution_id)

    busy = ctl.emdx("exec", "resume", str(execution_id), "go on")
    assert busy.code == 1
    assert busy.stderr.strip() == f"emdx: error: execution {execution_id} is still running"

    empty = ctl.emdx("exec", "resume", str(execution_id), "   ")
    assert empty.code == 2 and len(empty.stderr.splitlines()) == 1  # a usage error
    assert empty.stderr.startswith("emdx: error: ")
    assert [r.id for r in ctl.rows()] == [execution_id]


def test_resume_with_fake_agent_links_the_session(ctl: Ctl) -> None:
    first = ctl.run("talk\nFAKE:events=1\n")
    row = ctl.wait_final(first)
    assert row.session_id

    result = ctl.emdx("exec", "resume", str(first), "and now?")

    assert result.code == 0, result.stderr
    second = started_id(result.stdout)
    assert f"resumes session {row.session_id} of #{first}" in result.stdout
    new = ctl.wait_final(second)
    assert new.exec_type == "resume" and new.parent_execution_id == first
    assert new.working_dir == row.working_dir
    assert new.options.resume_session == row.session_id
    argv = agent_argv(ctl, second)
    assert f"--resume={row.session_id}" in argv  # one argument: the value is never re-parsed
