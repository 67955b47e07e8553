"""`emdx exec kill`: every process of a run ends (checked by pid AND start time), nothing else is
touched, and the row records how it ended."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from control_helpers import Ctl
from testkit import alive, one_line_error, wait_until

from emdx import system

LEGACY_ID = "claude-42-1752791234"


def sleeper(ctl: Ctl, *extra: str) -> tuple[str, Path]:
    pidfile = ctl.pidfile()
    lines = ["a long run", "FAKE:setsid-child", f"FAKE:pidfile={pidfile}", "FAKE:sleep=60", *extra]
    return "\n".join(lines) + "\n", pidfile


def start_sleeper(ctl: Ctl, *extra: str) -> tuple[int, list[tuple[int, float]]]:
    """A running run with a supervisor, an agent and a setsid grandchild; all their identities."""
    content, pidfile = sleeper(ctl, *extra)
    execution_id = ctl.run(content)
    agent, child = ctl.read_pidfile(pidfile, 2)
    row = ctl.wait_agent(execution_id)
    assert row.agent_pid == agent[0]
    assert row.agent_started_at == pytest.approx(agent[1], abs=0.05)
    supervisor = (row.pid or 0, row.pid_started_at or 0.0)
    ids = [supervisor, agent, child]
    assert all(alive(i) for i in ids)
    # Everything the run started carries the marker, the setsid grandchild included.
    assert {p for p, _ in ctl.marked(execution_id)} >= {supervisor[0], agent[0], child[0]}
    return execution_id, ids


def test_kill_ends_supervisor_agent_and_setsid_grandchild(ctl: Ctl) -> None:
    execution_id, ids = start_sleeper(ctl)

    result = ctl.emdx("exec", "kill", str(execution_id))

    assert result.code == 0, result.stderr
    assert f"execution #{execution_id} killed, exit 143" in result.stdout
    ctl.assert_run_gone(execution_id, ids)
    row = ctl.get(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 143, "killed_by_user")
    assert row.completed_at is not None


def test_kill_agent_ignoring_sigterm_needs_sigkill(ctl: Ctl) -> None:
    execution_id, ids = start_sleeper(ctl, "FAKE:ignore-term")

    result = ctl.emdx("exec", "kill", str(execution_id))

    assert result.code == 0, result.stderr
    assert "exit 137" in result.stdout and "SIGKILL was needed" in result.stdout
    ctl.assert_run_gone(execution_id, ids)
    row = ctl.get(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 137, "killed_by_user")


def test_kill_force_is_sigkill_at_once(ctl: Ctl, monkeypatch: pytest.MonkeyPatch) -> None:
    # A grace period longer than the command may take (its timeout fails the test): --force
    # must not wait for it.
    monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "120")
    execution_id, ids = start_sleeper(ctl)

    result = ctl.emdx("exec", "kill", str(execution_id), "--force", timeout=60)

    assert result.code == 0, result.stderr
    assert "exit 137" in result.stdout
    ctl.assert_run_gone(execution_id, ids)
    row = ctl.get(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 137, "killed_by_user")


def test_kill_of_a_finished_run_is_an_invalid_state(ctl: Ctl) -> None:
    """Issue 11 item 16: killing a finished run exited 0; nothing to do for a named run is an
    invalid state (DESIGN §4: exit 1, one line), and nothing changes."""
    execution_id = ctl.run("quick\nFAKE:events=1\n")
    before = ctl.wait_final(execution_id)
    assert before.status.value == "completed"

    result = ctl.emdx("exec", "kill", str(execution_id))

    assert (result.code, result.stdout) == (1, ""), result
    assert result.stderr == (
        f"emdx: error: execution #{execution_id} already completed (exit 0); nothing to kill\n"
    )
    assert ctl.get(execution_id) == before


@pytest.mark.parametrize(
    "args",
    [
        ("exec", "kill", "987654321"),
        ("exec", "kill", "claude-1-1700000000"),
        ("exec", "show", "987654321"),
        ("exec", "show", "987654321", "--json"),
        ("exec", "logs", "987654321"),
        ("exec", "tail", "987654321"),
        ("exec", "retry", "987654321"),
        ("exec", "resume", "987654321", "go on"),
    ],
)
def test_unknown_id_is_a_one_line_error(ctl: Ctl, args: tuple[str, ...]) -> None:
    one_line_error(ctl.emdx(*args), "not found")


def test_migrated_text_id_works_for_show_and_kill(ctl: Ctl) -> None:
    doc = ctl.doc("legacy document")
    finished = ctl.insert_row(
        run_key=None,
        old_id=LEGACY_ID,
        doc_id=doc,
        doc_title="legacy document",
        status="completed",
        exit_code=0,
        started_at="2025-07-17T22:27:14+00:00",
        completed_at="2025-07-17T22:29:00+00:00",
        log_file="/nonexistent/claude-42-1752791234.log",
    )
    # An old release's row still marked running: no supervisor pid was ever recorded.
    stuck = ctl.insert_row(
        run_key=None,
        old_id="claude-43-1752791299",
        doc_id=doc,
        doc_title="legacy document",
        status="running",
        started_at="2025-07-17T22:28:19+00:00",
    )

    shown = ctl.ok("exec", "show", LEGACY_ID, "--json").json()
    assert (shown["id"], shown["old_id"], shown["doc_id"]) == (finished, LEGACY_ID, doc)
    assert shown["started_at"] == "2025-07-17T22:27:14.000000+00:00"
    text = ctl.ok("exec", "show", LEGACY_ID)
    assert LEGACY_ID in text.stdout and f"execution #{finished}" in text.stdout

    done = ctl.emdx("exec", "kill", LEGACY_ID)
    assert done.code == 1
    assert f"execution #{finished} already completed (exit 0); nothing to kill" in done.stderr

    killed = ctl.ok("exec", "kill", "claude-43-1752791299")
    assert f"execution #{stuck} killed" in killed.stdout
    row = ctl.get(stuck)
    assert (row.status.value, row.reason) == ("killed", "killed_by_user")
    assert row.exit_code in (137, 143)


# -- processes that are not the run's -----------------------------------------------------


@pytest.mark.parametrize("how", ["kill", "complete"])
def test_same_execution_id_in_another_emdx_home_is_not_touched(ctl: Ctl, how: str) -> None:
    """A process of run #N of ANOTHER data directory (the marker alone says EMDX_EXECUTION_ID=N)
    must survive killing, or simply finishing, run #N here: runs are identified by
    EMDX_EXECUTION_ID *and* EMDX_DB, since every EMDX_HOME numbers its runs from 1.
    """
    next_id = ctl.id_base + 1
    other_home = ctl.tmp_path / "another-emdx-home"
    marker = {
        "EMDX_EXECUTION_ID": str(next_id),
        "EMDX_HOME": str(other_home),
        "EMDX_DB": str(other_home / "knowledge.db"),
    }
    witness = ctl.witness(env=marker)
    identity = witness.identity
    content = "quick\nFAKE:events=1\n" if how == "complete" else "long\nFAKE:sleep=60\n"

    execution_id = ctl.run(content)
    assert execution_id == next_id
    if how == "kill":
        ctl.wait_agent(execution_id)
        ctl.ok("exec", "kill", str(execution_id))
    row = ctl.wait_final(execution_id)
    assert row.status.value == ("killed" if how == "kill" else "completed")
    ctl.assert_gone([(row.pid or 0, row.pid_started_at or 0.0)])

    assert alive(identity), "emdx killed a process of another EMDX_HOME's execution"
    assert witness.signals() == [], "emdx signalled a process of another EMDX_HOME"


def test_kill_does_not_touch_the_supervisor_of_another_run(ctl: Ctl) -> None:
    first, first_ids = start_sleeper(ctl)
    second, second_ids = start_sleeper(ctl)

    ctl.ok("exec", "kill", str(first))

    ctl.assert_run_gone(first, first_ids)
    assert all(alive(i) for i in second_ids)
    assert ctl.get(second).status.value == "running"
    wait_until(lambda: ctl.emdx("exec", "kill", str(second)).code == 0, 30)
    ctl.assert_run_gone(second, second_ids)
    assert system.marked_processes(ctl.get(second).run_key) == []


def test_kill_frozen_supervisor_kills_everything_itself(ctl: Ctl) -> None:
    """A supervisor that cannot act on SIGTERM (SIGSTOPped): kill waits for it in vain, then
    kills every process of the run itself, the frozen supervisor included."""
    execution_id, ids = start_sleeper(ctl)
    supervisor = ids[0]
    os.kill(supervisor[0], signal.SIGSTOP)

    result = ctl.emdx("exec", "kill", str(execution_id))

    assert result.code == 0, result.stderr
    assert "exit 137" in result.stdout
    ctl.assert_run_gone(execution_id, ids)
    row = ctl.get(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 137, "killed_by_user")
