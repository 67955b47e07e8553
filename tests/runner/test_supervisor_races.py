"""Races between starting, finishing and killing runs (some of these expose bugs in src/).

Each test forces one interleaving deterministically (by wrapping a step of the service in-process)
or hits a window that is always open (a signal before the supervisor installed its handlers).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from runner_helpers import Runs
from testkit import read_pidfile, run_first, wait_until

from emdx import system
from emdx.models import ExecOptions
from emdx.service.scheduler import Scheduler, fill_slots
from emdx.store import Store


def is_final(store: Store, execution_id: int) -> bool:
    return store.executions.get(execution_id).status.is_final


def test_kill_right_after_start_is_a_kill(runs: Runs) -> None:
    """`emdx claude execute -b DOC && emdx exec kill ID`: the user killed it, so `killed`.

    BUG: the SIGTERM reaches the supervisor before it installed its handlers, so it dies; then
    `kill_execution` waits with `wait_for_final`, whose `reconcile` sees a dead runner and records
    failed / 137 / runner_lost instead of killed / 143 / killed_by_user.
    """
    execution = runs.service.start_execution(runs.doc("# killed early\nFAKE:sleep=30\n"))
    result = runs.service.kill_execution(execution.id)
    row = result.execution
    assert result.already_final is False
    assert (row.status.value, row.reason) == ("killed", "killed_by_user")
    assert row.exit_code in (143, 137)
    runs.assert_all_gone(row)


def test_kill_force_running(runs: Runs) -> None:
    pidfile = runs.pidfile()
    execution = runs.service.start_execution(
        runs.doc(f"# force\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    )
    agent = read_pidfile(pidfile)
    runs.wait_running_agent(execution.id)
    result = runs.service.kill_execution(execution.id, force=True)
    row = result.execution
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 137, "killed_by_user")
    assert result.needed_sigkill is True
    runs.assert_all_gone(row, agent)


def test_kill_execution_agent_ignoring_sigterm(runs: Runs) -> None:
    pidfile = runs.pidfile()
    execution = runs.service.start_execution(
        runs.doc(f"# stubborn\nFAKE:ignore-term\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    )
    agent = read_pidfile(pidfile)
    runs.wait_running_agent(execution.id)
    result = runs.service.kill_execution(execution.id)
    row = result.execution
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 137, "killed_by_user")
    assert result.needed_sigkill is True
    runs.assert_all_gone(row, agent)


def test_queued_row_not_started_before_it_is_prepared(
    runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor elsewhere finishes (and fills free slots) while `start_execution` is between
    inserting the row and writing its working dir and prompt file.

    BUG: the row is already `queued`, so the queue pass (`fill_slots`) claims it and spawns a
    runner that finds no prompt file: failed / 1 / spawn_failed (or, if the row update is merely
    late, the agent runs in the shared EMDX_HOME/runs directory).
    """
    doc = runs.doc("# prepared first\n")
    original = Scheduler.make_run_dir
    started: list[int] = []

    def finishing_elsewhere(self: Scheduler, run_key: str) -> Path:
        started.extend(fill_slots(self.store))
        for execution_id in started:  # let that runner get as far as it can
            wait_until(
                partial(is_final, self.store, execution_id),
                20,
                message="the prematurely started runner",
            )
        return original(self, run_key)

    monkeypatch.setattr(Scheduler, "make_run_dir", finishing_elsewhere)
    execution = runs.service.start_execution(doc)
    monkeypatch.setattr(Scheduler, "make_run_dir", original)
    row = runs.wait_final(execution.id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success"), (
        f"started by the queue pass before preparation: {started}"
    )


def test_after_dependency_finishing_during_start(
    runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--after A` while A is running, and A ends (its supervisor runs the queue pass) before the
    new row is inserted: the new run must still start.

    Regression test: `start_execution` used to decide from the dependency row read before the
    insert (still running) and left the run queued forever (fixed in c84f02b).
    """
    first = runs.service.start_execution(runs.doc("# first\nFAKE:sleep=1\n"))
    doc = runs.doc("# second\n")
    store = runs.service.store.executions
    original_create = store.create

    def first_ended() -> None:
        done = runs.wait_final(first.id)
        wait_until(
            lambda: not system.same_process(done.pid, done.pid_started_at),
            15,
            message="first supervisor exit",
        )

    monkeypatch.setattr(store, "create", run_first(first_ended, original_create))
    second = runs.service.start_execution(doc, ExecOptions(after_id=first.id))
    monkeypatch.setattr(store, "create", original_create)
    assert runs.get(first.id).status.value == "completed"
    try:
        row = runs.wait_final(second.id, timeout=10)
    except AssertionError:
        row = runs.get(second.id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success"), (
        f"run after a finished dependency left {row.status.value}: nobody will start it"
    )
