"""The queue (EMDX_MAX_PARALLEL), --after dependencies, concurrent starts, a missing binary
at launch time, and a database locked by another writer while the run finishes."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest
from runner_helpers import Runs
from testkit import FAKE_CLAUDE, read_pidfile, wait_until

from emdx import paths, system
from emdx.models import ExecOptions, parse_time
from emdx.service import Service


@pytest.mark.parametrize("how", ["deleted", "not-executable"])
def test_binary_disappears_while_queued(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    copy = tmp_path / "bin" / "claude"
    copy.parent.mkdir()
    shutil.copy(FAKE_CLAUDE, copy)
    copy.chmod(0o755)
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(copy))
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1")

    pidfile = runs.pidfile()
    first = runs.service.start_execution(
        runs.doc(f"# holds the slot\nFAKE:sleep=2\nFAKE:pidfile={pidfile}\n")
    )
    agent = read_pidfile(pidfile)  # the fake is loaded and running
    queued = runs.service.start_execution(runs.doc("# waits\n"))
    assert queued.status.value == "queued"
    if how == "deleted":
        copy.unlink()
    else:
        copy.chmod(0o644)

    row = runs.wait_final(queued.id, timeout=30)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 127, "agent_not_found")
    assert row.agent_pid is None
    done = runs.wait_final(first.id)
    assert (done.status.value, done.exit_code, done.reason) == ("completed", 0, "success")
    runs.assert_all_gone(done, agent)
    runs.assert_all_gone(row)


def test_max_parallel_is_respected(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "2")
    doc = runs.doc("# queued work\nFAKE:sleep=1.5\n")
    ids = [runs.service.start_execution(doc).id for _ in range(5)]
    assert [runs.get(i).status.value for i in ids].count("running") == 2

    peak = 0

    def all_final() -> bool:
        nonlocal peak
        peak = max(peak, runs.service.store.executions.slots_in_use())
        return all(runs.get(i).status.is_final for i in ids)

    wait_until(all_final, 60, interval=0.02, message="all five runs to end")
    assert peak == 2
    rows = [runs.get(i) for i in ids]
    assert [(r.status.value, r.exit_code, r.reason) for r in rows] == [
        ("completed", 0, "success")
    ] * 5
    # independent of the polling: never more than two [started, completed] intervals overlap
    spans = [(parse_time(r.started_at), parse_time(r.completed_at)) for r in rows]
    for start, _ in spans:
        assert start is not None
        overlapping = sum(1 for s, e in spans if s and e and s <= start < e)
        assert overlapping <= 2
    for row in rows:
        runs.assert_all_gone(row)


def test_after_a_completed_run(runs: Runs) -> None:
    first = runs.service.start_execution(runs.doc("# first\n"))
    assert runs.wait_final(first.id).status.value == "completed"
    second = runs.service.start_execution(runs.doc("# second\n"), ExecOptions(after_id=first.id))
    assert second.status.value == "running"
    row = runs.wait_final(second.id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")


def test_after_a_failed_run(runs: Runs) -> None:
    first = runs.service.start_execution(runs.doc("# first\nFAKE:error-result\n"))
    assert runs.wait_final(first.id).status.value == "failed"
    pidfile = runs.pidfile()
    second = runs.service.start_execution(
        runs.doc(f"# second\nFAKE:pidfile={pidfile}\n"), ExecOptions(after_id=first.id)
    )
    row = runs.get(second.id)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 1, "dependency_failed")
    assert (row.pid, row.agent_pid, row.started_at) == (None, None, None)
    assert second == row
    assert not pidfile.exists()


def test_after_a_running_run(runs: Runs) -> None:
    first = runs.service.start_execution(runs.doc("# first\nFAKE:sleep=2\n"))
    second = runs.service.start_execution(runs.doc("# second\n"), ExecOptions(after_id=first.id))
    assert second.status.value == "queued"
    failing = runs.service.start_execution(runs.doc("# fails\nFAKE:sleep=1\nFAKE:exit=3\n"))
    third = runs.service.start_execution(runs.doc("# third\n"), ExecOptions(after_id=failing.id))
    assert third.status.value == "queued"

    def first_done() -> bool:
        assert runs.get(second.id).status.value == "queued" or runs.get(first.id).status.is_final
        return runs.get(first.id).status.is_final

    wait_until(first_done, 20, message="first run to end")
    first_row = runs.get(first.id)
    assert first_row.status.value == "completed"
    row = runs.wait_final(second.id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    start, end = parse_time(row.started_at), parse_time(first_row.completed_at)
    assert start and end and start >= end

    failed = runs.wait_final(failing.id)
    assert (failed.status.value, failed.exit_code, failed.reason) == ("failed", 3, "nonzero_exit")
    blocked = runs.wait_final(third.id)
    assert (blocked.status.value, blocked.exit_code, blocked.reason) == (
        "failed",
        1,
        "dependency_failed",
    )
    assert (blocked.pid, blocked.agent_pid, blocked.started_at) == (None, None, None)


def test_parallel_starts_are_distinct(runs: Runs) -> None:
    doc = runs.doc("# same doc\nFAKE:events=1\n")
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            with Service() as svc:
                barrier.wait(10)
                execution = svc.start_execution(doc)
            with lock:
                results.append(execution.id)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(set(results)) == 8
    rows = [runs.get(i) for i in results]
    assert len({r.run_key for r in rows}) == 8
    dirs = {r.working_dir for r in rows}
    assert len(dirs) == 8 and None not in dirs
    for row in rows:
        assert row.working_dir
        assert stat.S_IMODE(Path(row.working_dir).stat().st_mode) == 0o700
        assert Path(row.working_dir).parent == paths.runs_dir()
    finals = [runs.wait_final(i, timeout=60) for i in results]
    assert {(r.status.value, r.exit_code, r.reason) for r in finals} == {
        ("completed", 0, "success")
    }
    for row in finals:
        runs.assert_all_gone(row)


@pytest.mark.slow
def test_final_state_written_after_database_lock(runs: Runs) -> None:
    pidfile = runs.pidfile()
    execution = runs.service.start_execution(
        runs.doc(f"# locked out\nFAKE:sleep=2\nFAKE:pidfile={pidfile}\n")
    )
    agent = read_pidfile(pidfile)
    runs.wait_running_agent(execution.id)

    blocker = sqlite3.connect(str(paths.db_path()), timeout=30, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        locked_at = time.monotonic()
        # the agent finishes while the lock is held
        wait_until(lambda: not system.same_process(*agent[0]), 12, message="agent exit")
        time.sleep(max(0.0, 15 - (time.monotonic() - locked_at)))  # hold the lock for 15 s
        status = blocker.execute(
            "SELECT status FROM executions WHERE id = ?", (execution.id,)
        ).fetchone()[0]
        assert status == "running"  # nothing could be written meanwhile
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    row = runs.wait_final(execution.id, timeout=45)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    assert row.session_id and row.cost_usd == 0.0123
    runs.assert_all_gone(row, agent)
