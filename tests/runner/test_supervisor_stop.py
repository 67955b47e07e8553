"""Stopping runs: watchdogs, signals to the supervisor, kill_execution, escaped grandchildren."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from runner_helpers import Runs
from testkit import read_pidfile, wait_until

from emdx import runlog, system
from emdx.models import ExecOptions


def _messages(log_file: str | None) -> list[str]:
    assert log_file
    return [str(e.get("message")) for e in runlog.read_entries(Path(log_file))]


def test_wall_clock_timeout(runs: Runs) -> None:
    pidfile = runs.pidfile()
    doc = runs.doc(f"# slow\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    execution = runs.service.start_execution(doc, ExecOptions(timeout_s=2))
    agent = read_pidfile(pidfile)
    row = runs.wait_final(execution.id, timeout=20)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 124, "timeout")
    assert any("timeout" in m for m in _messages(row.log_file))
    assert not any("SIGKILL" in m for m in _messages(row.log_file))  # SIGTERM was enough
    runs.assert_all_gone(row, agent)


def test_stall_watchdog(runs: Runs) -> None:
    pidfile = runs.pidfile()
    doc = runs.doc(f"# stalls\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    execution = runs.service.start_execution(doc, ExecOptions(stall_timeout_s=2))
    agent = read_pidfile(pidfile)
    row = runs.wait_final(execution.id, timeout=20)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 124, "stalled")
    assert any("stalled" in m for m in _messages(row.log_file))
    runs.assert_all_gone(row, agent)


def test_events_keep_the_stall_watchdog_quiet(runs: Runs) -> None:
    doc = runs.doc("# chatty\nFAKE:events=8\nFAKE:interval=0.5\n")
    execution = runs.service.start_execution(doc, ExecOptions(stall_timeout_s=2))
    row = runs.wait_final(execution.id, timeout=20)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")


def test_timeout_with_agent_ignoring_sigterm(runs: Runs) -> None:
    pidfile = runs.pidfile()
    doc = runs.doc(f"# stubborn\nFAKE:ignore-term\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    execution = runs.service.start_execution(doc, ExecOptions(timeout_s=2))
    agent = read_pidfile(pidfile)
    row = runs.wait_final(execution.id, timeout=20)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 124, "timeout")
    assert any("SIGKILL" in m for m in _messages(row.log_file))
    runs.assert_all_gone(row, agent)


@pytest.mark.parametrize(
    ("signum", "ignore_term", "expected_code"),
    [
        (signal.SIGTERM, False, 143),
        (signal.SIGINT, False, 143),
        (signal.SIGHUP, False, 143),
        (signal.SIGTERM, True, 137),
    ],
    ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGTERM-ignored"],
)
def test_signal_to_supervisor_kills_the_run(
    runs: Runs, signum: signal.Signals, ignore_term: bool, expected_code: int
) -> None:
    pidfile = runs.pidfile()
    extra = "FAKE:ignore-term\n" if ignore_term else ""
    doc = runs.doc(f"# signalled\nFAKE:sleep=30\n{extra}FAKE:pidfile={pidfile}\n")
    execution = runs.service.start_execution(doc)
    agent = read_pidfile(pidfile)
    row = runs.wait_running_agent(execution.id)
    assert row.pid and system.same_process(row.pid, row.pid_started_at)
    os.kill(row.pid, signum)
    row = runs.wait_final(execution.id, timeout=20)
    assert (row.status.value, row.exit_code, row.reason) == (
        "killed",
        expected_code,
        "killed_by_user",
    )
    messages = _messages(row.log_file)
    assert any(signal.Signals(signum).name in m for m in messages)
    assert any("SIGKILL" in m for m in messages) == ignore_term
    runs.assert_all_gone(row, agent)


def test_kill_execution_running(runs: Runs) -> None:
    pidfile = runs.pidfile()
    doc = runs.doc(f"# to kill\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    execution = runs.service.start_execution(doc)
    agent = read_pidfile(pidfile)
    runs.wait_running_agent(execution.id)
    result = runs.service.kill_execution(execution.id)
    assert result.already_final is False
    assert result.needed_sigkill is False
    row = result.execution
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 143, "killed_by_user")
    assert runs.get(execution.id) == row
    runs.assert_all_gone(row, agent)


def test_kill_execution_finished_is_a_no_op(runs: Runs) -> None:
    execution = runs.service.start_execution(runs.doc("# quick\n"))
    before = runs.wait_final(execution.id)
    assert before.status.value == "completed"
    result = runs.service.kill_execution(execution.id)
    assert result.already_final is True
    assert result.execution == before
    assert runs.get(execution.id) == before


def test_kill_execution_queued_never_starts(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1")
    blocker = runs.service.start_execution(runs.doc("# blocker\nFAKE:sleep=2\n"))
    pidfile = runs.pidfile()
    queued = runs.service.start_execution(runs.doc(f"# queued\nFAKE:pidfile={pidfile}\n"))
    assert queued.status.value == "queued"
    result = runs.service.kill_execution(queued.id)
    assert result.already_final is False
    row = result.execution
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 143, "killed_by_user")
    assert (row.pid, row.agent_pid, row.started_at) == (None, None, None)

    done = runs.wait_final(blocker.id, timeout=20)
    assert done.status.value == "completed"
    runs.assert_all_gone(done)  # its supervisor ran start_queued on the way out
    after = runs.get(queued.id)
    assert after == row
    assert not pidfile.exists()


def test_setsid_grandchild_is_killed(runs: Runs) -> None:
    """Like Claude's Bash tool: a child in its own session survives killpg but not the run."""
    normal_pids, timeout_pids = runs.pidfile(), runs.pidfile()
    normal = runs.service.start_execution(
        runs.doc(f"# escapes\nFAKE:setsid-child\nFAKE:sleep=1\nFAKE:pidfile={normal_pids}\n")
    )
    timed = runs.service.start_execution(
        runs.doc(f"# escapes\nFAKE:setsid-child\nFAKE:sleep=30\nFAKE:pidfile={timeout_pids}\n"),
        ExecOptions(timeout_s=2),
    )
    normal_procs = read_pidfile(normal_pids, count=2)
    timed_procs = read_pidfile(timeout_pids, count=2)
    grandchild = normal_procs[1]
    assert os.getsid(grandchild[0]) == grandchild[0]  # really in its own session

    row = runs.wait_final(normal.id, timeout=20)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    runs.assert_all_gone(row, normal_procs)
    assert not system.same_process(*grandchild)

    row = runs.wait_final(timed.id, timeout=20)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 124, "timeout")
    runs.assert_all_gone(row, timed_procs)
    assert not system.same_process(*timed_procs[1])


def test_supervisor_exits_after_final_state(runs: Runs) -> None:
    execution = runs.service.start_execution(runs.doc("# quick\n"))
    row = runs.wait_final(execution.id)
    assert row.pid
    wait_until(
        lambda: not system.same_process(row.pid, row.pid_started_at), 10, message="runner exit"
    )


def test_a_supervisor_whose_row_was_finished_from_outside_stops_its_agent(runs: Runs) -> None:
    """The row went final without it (a host declared lost while its worker was frozen, a kill
    that gave up on a frozen supervisor): its next heartbeat finds out, and nothing goes on
    acting for a run that is over for everyone else."""
    from emdx.models import ExecutionStatus

    pidfile = runs.pidfile()
    doc = runs.doc(f"# long\nFAKE:sleep=60\nFAKE:pidfile={pidfile}\n")
    execution = runs.service.start_execution(doc)
    agent = read_pidfile(pidfile)
    running = runs.get(execution.id)
    assert runs.service.store.executions.finish(
        execution.id, ExecutionStatus.FAILED, 137, "host_lost", key=running.run_key
    )
    runs.assert_all_gone(running, agent, timeout=20)
    row = runs.get(execution.id)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "host_lost")
    messages = _messages(row.log_file)
    assert any(
        "finished from outside (failed, host_lost): stopping the agent" in m for m in messages
    )
