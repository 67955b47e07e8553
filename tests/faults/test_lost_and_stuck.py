"""Issue 11, "Lost or stuck": outcomes that must survive a full disk, ids that are not identities,
a supervisor or a start that dies at the worst line, clocks that step, a locked database, the
environment a queued run starts with.

Processes die at chosen lines through `testkit.inject_faults` (a sitecustomize hook that wraps
one function of emdx in the CLI or the supervisor process): a SIGKILL, a Ctrl-C, or a database
error, exactly where a test needs it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from faults_helpers import World, final_triple, log_entries, one_error_line
from testkit import (
    Cli,
    alive,
    inject_faults,
    read_pidfile,
    recorded_time,
    result_payload,
    run_files,
    started_id,
    supervisor_of,
    wait_until,
)

from emdx import paths, runlog, smart
from emdx.models import ExecOptions
from emdx.service.scheduler import fill_slots

FINISH = "emdx.store.executions:ExecutionStore.finish"


def _messages(world: World, execution_id: int) -> list[str]:
    return [str(e.get("message")) for e in log_entries(world.get(execution_id))]


# -- 1. full disk at the final write --------------------------------------------------------


def test_full_disk_at_the_final_write_is_retried(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "database or disk is full" made the supervisor exit with the row `running` (later called
    runner_lost) and nothing in runner.err: it is retried like a lock, and explained."""
    inject_faults(
        monkeypatch, {"proc": "runner", "target": FINISH, "action": "raise-full", "times": 3}
    )
    execution = world.start("# full disk\nFAKE:events=2\n")
    row = world.wait_final(execution.id, timeout=60)
    assert final_triple(row) == ("completed", 0, "success")
    assert any("final write failed (retrying)" in m and "disk is full" in m for m in
               _messages(world, row.id)), _messages(world, row.id)  # fmt: skip
    err = run_files(row)["runner.err"].read_text()
    assert "final write failed (retrying)" in err and "Traceback" not in err
    world.assert_gone(row)


def test_an_outcome_the_database_never_took_is_recorded_by_the_next_command(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor gives up after its deadline (disk still full) and exits: its outcome,
    written first to an fsync'd side file, is what the next command records — not
    runner_lost."""
    monkeypatch.setenv("EMDX_FINAL_WRITE_DEADLINE_SECONDS", "2")
    inject_faults(
        monkeypatch, {"proc": "runner", "target": FINISH, "action": "raise-full", "times": 0}
    )
    execution = world.start("# never recorded\nFAKE:events=2\n")
    row = world.wait_agent(execution.id)
    wait_until(lambda: not alive(supervisor_of(row)), 60, message="supervisor exit")
    assert world.get(execution.id).status.value == "running"
    outcome = json.loads(run_files(row)["final"].read_text())
    assert (outcome["status"], outcome["exit_code"]) == ("completed", 0)
    assert "next emdx command records it" in run_files(row)["runner.err"].read_text()

    listed = cli("exec", "list", "--json")
    assert listed.code == 0, listed
    fixed = world.get(execution.id)
    assert final_triple(fixed) == ("completed", 0, "success")
    assert fixed.session_id and fixed.cost_usd == 0.0123
    assert any("recorded it from its outcome file" in m for m in _messages(world, fixed.id))
    health = cli("exec", "health", "--json")
    assert json.loads(health.stdout)["runs"] == []


# -- 2. ids are not identities -------------------------------------------------------------


def test_a_restored_backup_never_mixes_two_runs_with_one_id(world: World, tmp_path: Path) -> None:
    """After a backup is restored, a new run gets the id of a live one: their logs were the
    same file and each supervisor killed the other's processes as "left behind"."""
    backup = tmp_path / "backup.db"
    _copy_db(paths.db_path(), backup)
    pidfile_a = world.pidfile()
    first = world.start(f"# old\nFAKE:setsid-child\nFAKE:pidfile={pidfile_a}\nFAKE:sleep=4\n")
    agent_a, child_a = read_pidfile(pidfile_a, 2)
    row_a = world.wait_agent(first.id)
    _copy_db(backup, paths.db_path())  # the restore: the new run will get the same id

    pidfile_b = world.pidfile()
    second = world.start(f"# new\nFAKE:setsid-child\nFAKE:pidfile={pidfile_b}\nFAKE:events=3\n")
    assert second.id == first.id and second.run_key != row_a.run_key
    row_b = world.wait_final(second.id, timeout=40)
    assert final_triple(row_b) == ("completed", 0, "success")
    # B's end killed what B left, never A's tool (same id, other key).
    assert alive(child_a) and alive(agent_a)
    assert row_b.log_file != row_a.log_file
    b_log = log_entries(row_b)
    assert {e.get("pid") for e in b_log if e.get("source") == "agent"} == {row_b.agent_pid}
    wait_until(lambda: not alive(agent_a), 30, message="the old run's agent to finish")
    wait_until(lambda: not alive(child_a), 15, message="the old run's tool to be cleaned up")
    supervisor_a = (int(row_a.pid or 0), float(row_a.pid_started_at or 0))
    wait_until(lambda: not alive(supervisor_a), 30, message="the old run's supervisor to end")
    # A's supervisor found no row with its key: it wrote nothing into B's. (It kills what its
    # agent left before its final write: the tool's death does not mean it has said so yet.)
    err = run_files(row_a)["runner.err"]
    wait_until(
        lambda: "belongs to another run" in err.read_text(),
        15,
        message=lambda: f"the old run's supervisor to say so in {err}: {err.read_text()!r}",
    )
    assert world.get(second.id) == row_b


def _copy_db(src: Path, dst: Path) -> None:
    """An online copy (SQLite's backup API), as a restore tool would make."""
    source = sqlite3.connect(str(src), timeout=30)
    target = sqlite3.connect(str(dst), timeout=30)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


# -- 3. a supervisor that dies between its final write and the queue pass ------------------


def test_a_supervisor_dead_after_its_final_write_stalls_nothing(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queued run waited forever with a free slot, `exec health` said "✅ queued" and exited
    0, and the smart run's output document was never saved."""
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1")
    inject_faults(
        monkeypatch,
        {"proc": "runner", "target": FINISH, "when": "after", "action": "sigkill"},
    )
    note = world.service.save_document("# An idea\nFAKE:events=1\n", tags="note", detect=False)
    smart_run = world.service.start_execution(note.id)
    queued = world.start("# next in line\nFAKE:events=1\n")
    assert world.get(queued.id).status.value == "queued"
    done = world.wait_final(smart_run.id)
    assert final_triple(done) == ("completed", 0, "success") and done.post_actions == "pending"
    wait_until(lambda: not alive(supervisor_of(done)), 15, message="its death")
    assert world.get(queued.id).status.value == "queued"  # nobody started it

    # Health reports what was wrong (a queue stalled, post-actions owed), then repairs it.
    health = cli("exec", "health")
    assert health.code == 1, health
    assert f"execution #{smart_run.id}: owed post-actions applied" in health.stdout
    assert f"execution #{queued.id}: queued with a free slot, started" in health.stdout
    wait_until(lambda: world.get(queued.id).status.is_final, 30, message="the queued run")
    assert final_triple(world.get(queued.id)) == ("completed", 0, "success")
    after = world.get(smart_run.id)
    assert after.post_actions == "done" and after.output_doc_id is not None
    for _ in range(2):  # idempotent: more sweeps save nothing more
        assert cli("exec", "list").code == 0
    titles = [d.title for d in world.service.list_documents(limit=None)]
    assert titles.count(f"Analysis: {note.title}") == 1
    assert any("saved the result as document" in m for m in _messages(world, smart_run.id))


# -- 4. an interrupted start --------------------------------------------------------------


@pytest.mark.parametrize("where", ["after the worktree", "after the run dir"])
def test_a_start_killed_half_way_is_undone_by_the_next_command(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    """SIGKILL between row creation and spawn left a row `queued` forever and a locked worktree
    and branch no cleanup removed: now the row is `preparing` with its creator recorded, and the
    next command undoes it all."""
    repo = _repo(tmp_path)
    target = (
        "emdx.system.git:add_worktree"
        if where == "after the worktree"
        else "emdx.service.scheduler:Scheduler.make_run_dir"
    )
    inject_faults(
        monkeypatch, {"proc": "cli", "target": target, "when": "after", "action": "sigkill"}
    )
    doc = world.doc("# Half made\nFAKE:events=1\n", title="Half made")
    args = ["claude", "execute", str(doc), "-b"] + (["--worktree"] if "worktree" in where else [])
    killed = cli(*args, cwd=repo)
    assert killed.code == -signal.SIGKILL, killed
    [row] = [r for r in world.service.list_executions(None, None) if r.doc_id == doc]
    assert row.status.value == "preparing"
    monkeypatch.delenv("EMDX_FAULTS")

    listed = cli("exec", "list")
    assert listed.code == 0, listed
    assert all(r.doc_id != doc for r in world.service.list_executions(None, None))
    assert not os.path.lexists(paths.runs_dir() / str(row.run_key))
    assert _git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert _git(repo, "branch", "--list", "exec-*") == ""
    assert not list(paths.logs_dir().glob(f"{row.run_key}*"))


def test_ctrl_c_during_a_start_prints_one_line_and_undoes_it(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = _repo(tmp_path)
    inject_faults(
        monkeypatch,
        {
            "proc": "cli",
            "target": "emdx.system.git:add_worktree",
            "when": "after",
            "action": "interrupt",
        },
    )
    doc = world.doc("# Interrupted\nFAKE:events=1\n", title="Interrupted")
    done = cli("claude", "execute", str(doc), "-b", "--worktree", cwd=repo)
    assert done.code == 130, done
    line = one_error_line(done.stderr)
    assert "interrupted" in line and "undone" in line
    assert all(r.doc_id != doc for r in world.service.list_executions(None, None))
    assert _git(repo, "branch", "--list", "exec-*") == ""
    assert os.listdir(paths.runs_dir()) == []


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ("init", "-q", "-b", "main"),
        ("config", "user.name", "T"),
        ("config", "user.email", "t@example.invalid"),
        ("commit", "-q", "--allow-empty", "-m", "initial"),
    ):
        _git(repo, *args)
    return repo


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


# -- 6. a forward clock step, 7. the run's own heartbeat interval -------------------------


def test_health_judges_a_run_by_its_own_heartbeat_interval(
    world: World, cli: Cli, tracker: Any
) -> None:
    """The run beats every second (its row says so); a reader whose EMDX_HEARTBEAT_SECONDS is
    100 must still see it unresponsive once it missed three beats (and `exec running` must not
    say "alive")."""
    execution = world.start("# frozen\nFAKE:sleep=60\n")
    row = world.wait_agent(execution.id)
    assert row.heartbeat_s == 1.0
    os.kill(int(row.pid or 0), signal.SIGSTOP)
    try:

        def unresponsive() -> bool:
            done = cli("exec", "health", "--json", env={"EMDX_HEARTBEAT_SECONDS": "100"})
            runs = json.loads(done.stdout)["runs"]
            return bool(runs) and runs[0]["verdict"] == "unresponsive" and done.code == 1

        wait_until(unresponsive, 30, interval=0.5, message="the verdict unresponsive")
        running = cli("exec", "running", env={"EMDX_HEARTBEAT_SECONDS": "100"})
        assert "unresponsive" in running.stdout and "alive" not in running.stdout, running
    finally:
        os.kill(int(row.pid or 0), signal.SIGCONT)
    recovered = cli("exec", "health", "--json")
    wait_until(
        lambda: (
            json.loads(cli("exec", "health", "--json").stdout)["runs"][0]["verdict"] == "healthy"
        ),
        20,
        message="recovery",
    )
    assert recovered.code in (0, 1)


def test_an_overdue_run_is_stopped_with_its_own_reason(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor frozen past its --timeout is stopped by `cleanup processes`, recorded as
    failed/124/overdue — never killed_by_user (its SIGTERM handler would have said so)."""
    monkeypatch.setattr("emdx.service.liveness.OVERDUE_MARGIN_S", 0.0)
    execution = world.start("# wedged\nFAKE:sleep=60\n", timeout_s=1.0)
    row = world.wait_agent(execution.id)
    os.kill(int(row.pid or 0), signal.SIGSTOP)
    from emdx.service.cleanup import processes

    def overdue() -> list[Any]:
        return [a for a in processes(world.service.store, dry_run=True) if a.kind == "execution"]

    wait_until(overdue, 30, interval=0.3, message="the run judged overdue")
    actions = world.service.cleanup_processes()
    [step] = [a for a in actions if a.kind == "execution"]
    assert step.result == "done" and "overdue" in step.detail, actions
    final = world.get(execution.id)
    assert final_triple(final) == ("failed", 124, "overdue")
    world.assert_gone(final)
    assert any("stopped by `emdx cleanup processes`" in m for m in _messages(world, final.id))


def test_a_supervisor_dead_of_a_kill_is_killed_whoever_sweeps_first(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`exec kill` has asked, and the supervisor died of it before it could record `killed`
    (a SIGTERM before its handlers, here a SIGKILL): a sweep by another command (a worker's
    periodic one in team mode) that gets there before the kill records the kill, not a lost
    runner; the kill then finds the row final."""
    execution = world.start("# killed\nFAKE:sleep=60\n")
    row = world.wait_agent(execution.id)
    mark, release = tmp_path / "asked", tmp_path / "release"
    hold = {"proc": "cli", "target": "emdx.service.kill:ask_kill", "when": "after"}
    hold.update(action="hold", mark=str(mark), release=str(release))
    inject_faults(monkeypatch, hold)
    killer = world.tracker.popen(
        [sys.executable, "-m", "emdx", "exec", "kill", str(execution.id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(mark.exists, 30, message="the kill asked")
    monkeypatch.delenv("EMDX_FAULTS")
    os.kill(int(row.pid or 0), signal.SIGKILL)  # it dies of the kill, nothing recorded
    wait_until(lambda: not alive((row.pid or 0, row.pid_started_at or 0.0)), 15)

    swept = cli("exec", "health")

    assert swept.code == 1 and "zombie" in swept.stdout, swept
    final = world.get(execution.id)
    assert final_triple(final) == ("killed", 143, "killed_by_user"), final
    assert any("its supervisor died of it" in m for m in _messages(world, final.id))
    release.touch()
    out, err = killer.communicate(timeout=60)
    assert killer.returncode == 0, (out, err)
    assert world.get(execution.id) == final
    world.assert_gone(final)


def test_a_kill_record_planted_by_the_agent_invents_no_kill(world: World, cli: Cli) -> None:
    """The agent writes a kill record where a home keeps a run's files (its own run's name),
    then its supervisor dies: no kill was asked, so it is a lost runner, not `killed`."""
    execution = world.start("# planted\nFAKE:sleep=60\n")
    row = world.wait_agent(execution.id)
    for kind in ("kill", "kill.json"):
        paths.run_file(row.run_key or "", kind).write_text("killed by `emdx exec kill`\n")
    os.kill(int(row.pid or 0), signal.SIGKILL)
    wait_until(lambda: not alive((row.pid or 0, row.pid_started_at or 0.0)), 15)
    swept = cli("exec", "health")
    assert swept.code == 1, swept
    assert final_triple(world.get(execution.id)) == ("failed", 137, "runner_lost")


# -- 8. the output pump never waits on the database ----------------------------------------


def test_a_locked_database_does_not_stop_the_log(world: World) -> None:
    """With the database exclusively locked, the log froze and every event got the release time
    as its timestamp: the pump now writes each line at once, with its own time."""
    gate = world.tmp / "go"
    execution = world.start(f"# chatty\nFAKE:wait-file={gate}\nFAKE:events=8\nFAKE:interval=0.5\n")
    row = world.wait_agent(execution.id)
    lock = sqlite3.connect(str(paths.db_path()), timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        locked_at = time.time()
        gate.touch()
        log = Path(str(row.log_file))

        def events_logged() -> bool:
            return sum(1 for e in runlog.read_entries(log) if e.get("type") == "assistant") >= 8

        wait_until(events_logged, 20, message="the events in the log while the db is locked")
        released_at = time.time()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    stamps = [
        e["ts"] for e in runlog.read_entries(Path(str(row.log_file))) if e["type"] == "assistant"
    ]
    moments = [recorded_time(s).timestamp() for s in stamps]
    assert max(moments) - min(moments) >= 2.0, stamps  # their own times, 0.5 s apart
    assert locked_at - 1 <= min(moments) and max(moments) <= released_at + 0.5
    final = world.wait_final(execution.id, timeout=60)
    assert final_triple(final) == ("completed", 0, "success")
    assert final.event_count >= 10


# -- 9. a queued run starts with the environment it was queued with -------------------------


def test_a_queued_run_starts_with_the_environment_it_was_queued_with(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1")
    holder = world.start("# holder\nFAKE:sleep=60\n")
    world.wait_agent(holder.id)
    doc = world.doc("# queued\nFAKE:env=EMDX_TEST_MARK,ANTHROPIC_BASE_URL\n")
    queued = cli(
        "claude",
        "execute",
        str(doc),
        "-b",
        env={"EMDX_TEST_MARK": "from-the-queuer", "ANTHROPIC_BASE_URL": "http://queuer"},
    )
    queued_id = started_id(queued.stdout)
    assert world.get(queued_id).status.value == "queued"
    env_file = run_files(world.get(queued_id))["env"]
    assert env_file.stat().st_mode & 0o777 == 0o600
    # Never in the database. (Read through SQLite: reading the file with open() and closing it
    # would drop this process's SQLite locks, a POSIX-lock pitfall.)
    dump = sqlite3.connect(str(paths.db_path()))
    try:
        assert "from-the-queuer" not in "\n".join(dump.iterdump())
    finally:
        dump.close()
    # The slot is freed by a process with another environment.
    killed = cli(
        "exec",
        "kill",
        str(holder.id),
        env={"EMDX_TEST_MARK": "from-the-killer", "ANTHROPIC_BASE_URL": "http://killer"},
    )
    assert killed.code == 0, killed
    row = world.wait_final(queued_id, timeout=30)
    assert final_triple(row) == ("completed", 0, "success")
    payload = result_payload(log_entries(row))
    assert payload["env"] == {
        "EMDX_TEST_MARK": "from-the-queuer",
        "ANTHROPIC_BASE_URL": "http://queuer",
    }
    assert not env_file.exists()  # gone with the run: secrets at rest no longer than needed


def test_fill_slots_costs_no_write_while_nothing_can_start(world: World) -> None:
    """The queue pass runs on every command: with every slot taken it must not take the write
    lock (a reader of `exec list` would contend with every heartbeat)."""
    os.environ["EMDX_MAX_PARALLEL"] = "1"
    try:
        holder = world.start("# holder\nFAKE:sleep=30\n")
        world.wait_agent(holder.id)
        world.service.start_execution(world.doc("# waits\n"), ExecOptions())
        lock = sqlite3.connect(str(paths.db_path()), timeout=30, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            assert fill_slots(world.service.store) == []  # would block on the lock otherwise
        finally:
            lock.execute("ROLLBACK")
            lock.close()
    finally:
        del os.environ["EMDX_MAX_PARALLEL"]
    assert smart.has_post_actions("note") and not smart.has_post_actions("generic")
