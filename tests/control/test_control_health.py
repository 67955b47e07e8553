"""`emdx exec health`: zombie executions (supervisor gone) are found and repaired in one check,
reused pids are never mistaken for ours, and a frozen supervisor is reported unresponsive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from control_helpers import Ctl
from testkit import alive

from emdx import system


def health(ctl: Ctl) -> tuple[int, dict[str, Any]]:
    result = ctl.emdx("exec", "health", "--json")
    assert result.code in (0, 1), result.stderr
    data: dict[str, Any] = result.json()
    assert set(data) == {"healthy", "runs", "repairs"}
    assert data["healthy"] is (result.code == 0)
    return result.code, data


def run_of(data: dict[str, Any], execution_id: int) -> dict[str, Any]:
    found = [r for r in data["runs"] if r["id"] == execution_id]
    assert len(found) == 1, data
    return dict(found[0])


def test_sigkilled_supervisor_is_a_zombie_and_its_processes_die(ctl: Ctl) -> None:
    pidfile = ctl.pidfile()
    execution_id = ctl.run(f"run\nFAKE:setsid-child\nFAKE:pidfile={pidfile}\nFAKE:sleep=60\n")
    agent, child = ctl.read_pidfile(pidfile, 2)
    row = ctl.wait_agent(execution_id)
    supervisor = (row.pid or 0, row.pid_started_at or 0.0)
    assert alive(supervisor)
    code, data = health(ctl)
    assert code == 0 and run_of(data, execution_id)["verdict"] == "healthy"

    os.kill(supervisor[0], signal.SIGKILL)
    ctl.assert_gone([supervisor])

    code, data = health(ctl)

    assert code == 1
    report = run_of(data, execution_id)
    assert report["verdict"] == "zombie" and report["healthy"] is False
    assert report["runner_alive"] is False
    repaired = report["repaired"]
    assert (repaired["status"], repaired["exit_code"], repaired["reason"]) == (
        "failed",
        137,
        "runner_lost",
    )
    row = ctl.get(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "runner_lost")
    # The agent died with its parent (parent-death signal); the setsid grandchild, which
    # nothing links to the run but its marker, was killed by the health check.
    ctl.assert_gone([agent, child])
    assert ctl.marked(execution_id) == []
    assert system.marked_processes(ctl.get(execution_id).run_key) == []

    again = ctl.emdx("exec", "health")
    assert again.code == 0, again.stdout + again.stderr
    assert ctl.get(execution_id) == row


def test_health_text_output_names_the_repair(ctl: Ctl) -> None:
    execution_id = ctl.run("run\nFAKE:sleep=60\n")
    row = ctl.wait_agent(execution_id)
    os.kill(row.pid or 0, signal.SIGKILL)
    ctl.assert_gone([(row.pid or 0, row.pid_started_at or 0.0)])

    result = ctl.emdx("exec", "health")

    assert result.code == 1
    assert f"#{execution_id} zombie" in result.stdout
    assert "repaired: now failed (exit 137, runner_lost)" in result.stdout


def test_reused_supervisor_pid_is_dead_and_never_signalled(ctl: Ctl) -> None:
    witness = ctl.witness()
    pid, started = witness.identity
    execution_id = ctl.insert_row(pid=pid, pid_started_at=started - 1000)
    other = ctl.insert_row(pid=pid, pid_started_at=started - 2000)

    # Every command that looks repairs a zombie first; stats names the ones it repaired.
    stats = ctl.ok("exec", "stats", "--json").json()
    assert sorted(stats["zombies"]) == sorted([execution_id, other])
    assert ctl.get(other).reason == "runner_lost"
    assert ctl.ok("exec", "running", "--json").json() == []
    execution_id = ctl.insert_row(pid=pid, pid_started_at=started - 1000)

    code, data = health(ctl)

    assert code == 1
    report = run_of(data, execution_id)
    assert report["verdict"] == "zombie" and report["runner_alive"] is False
    assert report["runner"] is None
    row = ctl.get(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "runner_lost")
    assert alive((pid, started)), "health killed an unrelated process with a reused pid"
    assert witness.signals() == []


def test_reused_agent_pid_is_dead_and_never_signalled(ctl: Ctl) -> None:
    witness = ctl.witness()
    pid, started = witness.identity
    runner_pid, runner_started = ctl.dead_identity()
    execution_id = ctl.insert_row(
        pid=runner_pid,
        pid_started_at=runner_started,
        agent_pid=pid,
        agent_started_at=started - 1000,
    )

    code, data = health(ctl)

    assert code == 1
    report = run_of(data, execution_id)
    assert report["verdict"] == "zombie"
    assert report["agent_alive"] is False and report["agent"] is None
    assert ctl.get(execution_id).status.value == "failed"
    assert alive((pid, started)), "health killed an unrelated process with a reused pid"
    assert witness.signals() == []


def test_live_run_is_healthy_with_process_figures(ctl: Ctl) -> None:
    execution_id = ctl.run("run\nFAKE:sleep=60\n")
    ctl.wait_agent(execution_id)
    code, data = health(ctl)
    report = run_of(data, execution_id)
    assert code == 0 and report["verdict"] == "healthy"
    assert report["runner_alive"] is True and report["agent_alive"] is True
    assert report["runner"]["pid"] == ctl.get(execution_id).pid
    assert report["agent"]["pid"] == ctl.get(execution_id).agent_pid


def test_old_release_running_row_is_reported_not_repaired(ctl: Ctl) -> None:
    """A `running` row of an earlier release has no identity to judge: health flags it (for
    `cleanup executions`) but does not touch it."""
    execution_id = ctl.insert_row(
        run_key=None, old_id="claude-7-1752791234", started_at="2025-07-17T22:27:14+00:00"
    )

    code, data = health(ctl)

    assert code == 1
    report = run_of(data, execution_id)
    assert report["verdict"] == "stuck" and report["repaired"] is None
    assert ctl.get(execution_id).status.value == "running"


def test_health_with_nothing_running(ctl: Ctl) -> None:
    result = ctl.emdx("exec", "health")
    assert result.code == 0
    assert result.stdout.strip() == "no active executions"
    code, data = health(ctl)
    assert code == 0 and data == {"healthy": True, "runs": [], "repairs": []}


def test_follow_of_a_run_whose_supervisor_dies_ends_with_137(ctl: Ctl) -> None:
    execution_id = ctl.run("run\nFAKE:sleep=60\n")
    row = ctl.wait_agent(execution_id)
    follower = ctl.popen(
        [sys.executable, "-m", "emdx", "exec", "show", str(execution_id), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.kill(row.pid or 0, signal.SIGKILL)

    out, err = follower.communicate(timeout=30)

    assert follower.returncode == 137, err.decode()
    assert "supervisor" in out.decode()  # it printed the log while following
    row = ctl.get(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "runner_lost")
    ctl.assert_run_gone(execution_id)


def test_follow_of_an_old_release_running_row_does_not_hang(ctl: Ctl) -> None:
    """Nothing will ever finish an earlier release's `running` row (health calls it stuck, for
    `cleanup executions`); following it must end with a clear error, not wait forever."""
    doc = ctl.doc("legacy document")
    legacy = ctl.insert_row(
        run_key=None,
        old_id="claude-43-1752791299",
        doc_id=doc,
        started_at="2025-07-17T22:28:19+00:00",
    )
    for command in (("exec", "show", str(legacy), "--follow"), ("exec", "tail", str(legacy))):
        try:
            result = ctl.emdx(*command, timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`emdx {' '.join(command)}` still following a stuck row after 10 s")
        assert result.code != 0
        assert result.stderr.startswith("emdx: error: ")
