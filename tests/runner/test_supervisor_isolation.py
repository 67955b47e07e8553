"""What a run may touch: only its own processes, whatever the agent does with its stdout, and
what is left when the supervisor itself dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from runner_helpers import Runs
from testkit import read_pidfile, run_processes, seed_execution_ids, wait_until

from emdx import paths, system
from emdx.models import ExecOptions, Execution
from emdx.service import Service


def test_marker_is_not_shared_across_homes(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two data dirs (two users' test suites, a user's real runs and a test run) both have an
    execution #N. A run in one must never kill the processes of the other: finishing run #N in
    home B (its supervisor cleans up the processes marked with its id) leaves run #N of home A
    alone. (Regression test: this failed before the markers carried the database path.)
    """
    home_a = os.environ["EMDX_HOME"]
    pidfile = runs.pidfile()
    victim = runs.service.start_execution(
        runs.doc(f"# long run in home A\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    )
    agent = read_pidfile(pidfile)
    victim_row = runs.wait_running_agent(victim.id)

    monkeypatch.setenv("EMDX_HOME", str(tmp_path / "emdx-home-b"))
    with Service() as other:
        other.store  # noqa: B018 - creates the second database
        seed_execution_ids(paths.db_path(), last_id=victim.id - 1)
        doc = other.save_document("# quick run in home B\n", title="b", detect=False).id
        twin = other.start_execution(doc)
        assert twin.id == victim.id

        def final_in_b() -> Execution | None:
            row = other.store.executions.get(twin.id)
            return row if row.status.is_final else None

        done = wait_until(final_in_b, 30, message="the run in home B")
        assert done.status.value == "completed"
        wait_until(
            lambda: not system.same_process(done.pid, done.pid_started_at),
            15,
            message="home B supervisor exit",
        )
    monkeypatch.setenv("EMDX_HOME", home_a)

    row = runs.get(victim.id)
    assert row.status.value == "running", f"home A's run was ended: {row.status} {row.reason}"
    assert system.same_process(victim_row.pid, victim_row.pid_started_at), "supervisor killed"
    assert system.same_process(*agent[0]), "agent killed"
    result = runs.service.kill_execution(victim.id)
    assert result.execution.status.value == "killed"


def _closing_agent(tmp_path: Path) -> Path:
    script = tmp_path / "bin" / "closes-stdout"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "0.0 (closes stdout)"; exit 0; fi\n'
        """echo '{"type":"system","subtype":"init","session_id":"s-close","model":"m"}'\n"""
        "exec 1>&-\n"
        "exec sleep 15\n"
    )
    script.chmod(0o755)
    return script


def test_watchdogs_still_work_after_agent_closes_stdout(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent that closes its stdout and keeps running (a child holding nothing, a CLI that
    crashed half way) must still be stopped by --timeout and by a kill.

    BUG: `Supervisor._pump` leaves its loop at EOF and `_spawn_and_pump` then blocks in
    `self.proc.wait()` with no deadline: the wall-clock timeout, the stall watchdog and SIGTERM to
    the supervisor are all ignored until the agent exits on its own.
    """
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(_closing_agent(tmp_path)))
    timed = runs.service.start_execution(runs.doc("# times out\n"), ExecOptions(timeout_s=2))
    signalled = runs.service.start_execution(runs.doc("# killed\n"))
    target = runs.wait_running_agent(signalled.id)
    runs.wait_running_agent(timed.id)
    wait_until(lambda: runs.get(signalled.id).session_id, 10, message="the init event")
    assert target.pid
    os.kill(target.pid, signal.SIGTERM)

    def ended(execution_id: int) -> tuple[str, int | None, str | None]:
        try:
            row = runs.wait_final(execution_id, timeout=8)
        except AssertionError:
            row = runs.get(execution_id)
        return row.status.value, row.exit_code, row.reason

    assert (ended(timed.id), ended(signalled.id)) == (
        ("failed", 124, "timeout"),
        ("killed", 143, "killed_by_user"),
    )


def test_supervisor_sigkilled_is_reconciled(runs: Runs) -> None:
    """The supervisor itself dies: the agent goes with it (parent-death signal), the escaped
    grandchild is found by its marker, and the row becomes failed / 137 / runner_lost."""
    pidfile = runs.pidfile()
    execution = runs.service.start_execution(
        runs.doc(f"# orphaned\nFAKE:setsid-child\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    )
    procs = read_pidfile(pidfile, count=2)
    row = runs.wait_running_agent(execution.id)
    assert row.pid
    os.kill(row.pid, signal.SIGKILL)
    wait_until(lambda: not system.same_process(*procs[0]), 10, message="agent parent-death kill")
    assert system.same_process(*procs[1])  # the setsid grandchild outlives both
    assert run_processes(execution.id) == [procs[1]]

    final = runs.service.wait_for_final(execution.id, 20)
    assert (final.status.value, final.exit_code, final.reason) == ("failed", 137, "runner_lost")
    runs.assert_all_gone(final, procs)
