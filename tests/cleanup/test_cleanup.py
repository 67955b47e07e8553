"""`emdx cleanup executions|processes|dirs|all`: legacy stuck rows, orphaned processes, old run
directories and worktrees; never a live run, never another EMDX_HOME's processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import legacy_fixtures as lf
import pytest
from cleanup_helpers import (
    Procs,
    Runs,
    assert_same,
    branch_exists,
    commit_file,
    db_dump,
    git,
    parse_json,
    refs,
    runs_listing,
    statuses,
    worktrees,
)
from testkit import FAKE_CLAUDE, Cli, CliResult, alive, read_pidfile, started_id, wait_until

from emdx import paths, system
from emdx.models import parse_time, utc_now


def _actions(done: CliResult) -> list[dict[str, Any]]:
    assert done.code == 0, done
    assert "Traceback" not in done.stderr, done.stderr
    payload = parse_json(done.stdout)
    assert set(payload) == {"dry_run", "actions"}
    return list(payload["actions"])


def _by_target(actions: list[dict[str, Any]], unique: bool = True) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for action in actions:
        assert not unique or action["target"] not in found, f"reported twice: {action}"
        found.setdefault(action["target"], action)
    return found


def _clean_env() -> dict[str, str]:
    """The test's environment without any emdx marker or setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EMDX_")}


# -- cleanup executions: databases of earlier releases ----------------------------------------


def _legacy_rows() -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(str(paths.db_path()))
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM executions WHERE old_id IS NOT NULL").fetchall()
    finally:
        conn.close()
    return {r["old_id"]: dict(r) for r in rows}


def _wait_live(execution_id: int) -> dict[str, Any]:
    """The row of a running run once its supervisor and agent are recorded."""

    def check() -> dict[str, Any] | None:
        conn = sqlite3.connect(str(paths.db_path()), timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
        finally:
            conn.close()
        assert row["status"] in ("queued", "running"), dict(row)
        ok = (
            row["status"] == "running"
            and row["agent_started_at"]
            and row["pid_started_at"]
            and row["event_count"] >= 2
            and row["heartbeat_at"]
        )
        return dict(row) if ok else None

    return wait_until(check, 20, message=f"execution {execution_id} to run")


@pytest.mark.parametrize("version", [6, 2])
def test_cleanup_executions_repairs_every_stuck_legacy_row(
    cli: Cli, version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The 100 stuck rows count as running for the concurrency cap (see
    # test_stuck_legacy_rows_do_not_hold_execution_slots): lift it so the live run below starts.
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1000")
    paths.emdx_home().mkdir(mode=0o700, parents=True, exist_ok=True)
    snapshot = lf.make_legacy_db(paths.db_path(), version)
    stuck = {r["old_id"]: r for r in snapshot["executions"] if r["status"] == "running"}
    assert len(stuck) == 100
    january = {k for k, r in stuck.items() if r["started_at"].startswith("2025-01")}
    assert 0 < len(january) < 100

    # The first command opens (and migrates) the database; every row is still there.
    listed = cli("exec", "list", "--json", "--limit", "1000")
    assert listed.code == 0, listed
    old_ids = {r["old_id"] for r in parse_json(listed.stdout) if r["old_id"]}
    assert old_ids == {r["old_id"] for r in snapshot["executions"] if r["old_id"]}
    before_rows = _legacy_rows()
    assert {k for k, r in before_rows.items() if r["status"] == "running"} == set(stuck)

    # A current run, live, in the same database: never a stuck row, whatever --timeout says.
    saved = cli("save", "--title", "live", input="# live\nFAKE:sleep=30\n")
    assert saved.code == 0, saved
    doc_id = int(saved.stdout.split("#")[1].split(":")[0])
    live = started_id(cli("claude", "execute", str(doc_id), "--background").stdout)
    live_row = _wait_live(live)

    before = db_dump()
    dry = _actions(cli("cleanup", "executions", "--dry-run", "--json"))
    acts = _by_target(dry)
    assert set(acts) == set(stuck)
    assert all(a["kind"] == "execution" and a["result"] == "would do" for a in dry)
    assert all("stuck" in a["detail"] for a in dry)
    text = cli("cleanup", "executions", "--dry-run")
    assert text.code == 0, text
    assert "dry run" in text.stdout
    for old_id in stuck:
        assert old_id in text.stdout, old_id
    assert_same(before, db_dump())

    # Rows younger than --timeout are left alone.
    assert _actions(cli("cleanup", "executions", "--timeout", "1000d", "--json")) == []
    assert_same(before, db_dump())
    cutoff = int((utc_now() - datetime(2025, 2, 1, tzinfo=UTC)).total_seconds())
    older = _by_target(_actions(cli("cleanup", "executions", "--timeout", f"{cutoff}s", "--json")))
    assert set(older) == january
    assert all(a["result"] == "done" for a in older.values())
    middle = _legacy_rows()
    for old_id in stuck:
        expected = "failed" if old_id in january else "running"
        assert middle[old_id]["status"] == expected, (old_id, middle[old_id])

    started = parse_time(live_row["started_at"])
    assert started is not None
    wait_until(lambda: (utc_now() - started).total_seconds() > 1.5, 10, message="live run age")
    rest = _by_target(_actions(cli("cleanup", "executions", "--timeout", "1s", "--json")))
    assert set(rest) == set(stuck) - january
    after = _legacy_rows()
    assert set(after) == set(before_rows)
    changed = ("status", "exit_code", "reason", "completed_at")
    for old_id, row in after.items():
        old = before_rows[old_id]
        if old_id in stuck:
            assert (row["status"], row["exit_code"], row["reason"]) == ("failed", 124, "stuck")
            moment = parse_time(row["completed_at"])
            assert moment is not None and (utc_now() - moment).total_seconds() < 120, row
            assert {k: v for k, v in row.items() if k not in changed} == {
                k: v for k, v in old.items() if k not in changed
            }
        else:
            assert row == old, old_id
    assert {i for i, (s, _, _) in statuses().items() if s == "running"} == {live}
    assert system.same_process(live_row["pid"], live_row["pid_started_at"])
    assert system.same_process(live_row["agent_pid"], live_row["agent_started_at"])
    again = cli("cleanup", "executions")
    assert again.code == 0 and "nothing to do" in again.stdout, again


def test_stuck_legacy_rows_do_not_hold_execution_slots(cli: Cli) -> None:
    """After an upgrade, rows an earlier release left `running` (no supervisor, no identity) must
    not count against EMDX_MAX_PARALLEL: a new run starts at once, before any cleanup."""
    paths.emdx_home().mkdir(mode=0o700, parents=True, exist_ok=True)
    lf.make_legacy_db(paths.db_path(), 6)
    saved = cli("save", "--title", "after upgrade", input="# after upgrade\nFAKE:events=1\n")
    assert saved.code == 0, saved
    doc_id = int(saved.stdout.split("#")[1].split(":")[0])
    started = cli("claude", "execute", str(doc_id), "--background")
    assert started.code == 0, started
    new = started_id(started.stdout)

    def final() -> str | None:
        status = statuses()[new][0]
        return status if status in ("completed", "failed", "killed") else None

    try:
        status = wait_until(final, 8, message=f"execution {new} to run and finish")
    except AssertionError:
        status = statuses()[new][0]
    assert status == "completed", f"execution {new} is still {status}: {started.stdout}"


# -- live runs are never touched ---------------------------------------------------------------


def test_live_run_is_untouched_by_every_cleanup_command(runs: Runs, git_repo: Path) -> None:
    doc = runs.doc("# Busy\nFAKE:sleep=30\n", title="Busy")
    busy = runs.start(doc, "--worktree", cwd=git_repo)
    started = parse_time(runs.wait_settled(busy).started_at)
    assert started is not None
    wait_until(
        lambda: (utc_now() - started).total_seconds() > 1.5,
        10,
        message="the run to be older than the thresholds used below",
    )
    before = (db_dump(), runs_listing(), refs(git_repo), worktrees(git_repo))
    commands = [
        ("executions", "--timeout", "1s"),
        ("processes",),
        ("dirs", "--older-than", "1s"),
        ("branches", "--force", "--yes"),
        ("all", "--yes", "--force", "--timeout", "1s", "--older-than", "1s"),
    ]
    for command in commands:
        acts = _actions(runs.cli("cleanup", *command, "--json", cwd=git_repo))
        assert all(a["result"] not in ("done", "would do", "failed") for a in acts), (command, acts)
    assert_same(before, (db_dump(), runs_listing(), refs(git_repo), worktrees(git_repo)))
    now = runs.get(busy)
    assert now.status.value == "running"
    assert runs.service.runner_alive(now)
    assert system.same_process(now.agent_pid, now.agent_started_at)
    # Still supervised: the heartbeat keeps moving.
    beat = now.heartbeat_at
    wait_until(lambda: runs.get(busy).heartbeat_at != beat, 10, message="a new heartbeat")


# -- cleanup processes -------------------------------------------------------------------------


def test_cleanup_processes_kills_orphans_of_this_home_only(
    runs: Runs, procs: Procs, tmp_path: Path
) -> None:
    pidfile = runs.pidfile()
    doc = runs.doc(f"# orphan\nFAKE:sleep=60\nFAKE:setsid-child\nFAKE:pidfile={pidfile}\n")
    lost = runs.start(doc)
    agent, child = read_pidfile(pidfile, 2)
    row = runs.wait_settled(lost)
    assert row.agent_pid == agent[0]
    live_doc = runs.doc("# live\nFAKE:sleep=30\n")
    live = runs.start(live_doc)
    live_row = runs.wait_settled(live)

    # Look-alikes that are not ours: the same program without markers, a process marked with
    # the same execution id for another EMDX_HOME's database.
    stranger = procs.popen([sys.executable, str(FAKE_CLAUDE)], _clean_env())
    other_home = tmp_path / "other-home"
    other_env = {
        **_clean_env(),
        "EMDX_HOME": str(other_home),
        **system.run_markers(lost, str(runs.get(lost).run_key), other_home / "knowledge.db"),
    }
    foreign = procs.popen([sys.executable, str(FAKE_CLAUDE)], other_env)
    # Marked for this database but for a run it does not have: an orphan too.
    ghost_env = {**_clean_env(), **system.run_markers(lost + 1000, "no-such-key", paths.db_path())}
    ghost_env["EMDX_HOME"] = str(paths.emdx_home())
    ghost = procs.popen([sys.executable, str(FAKE_CLAUDE)], ghost_env)
    procs.track(child)

    supervisor = (int(row.pid or 0), float(row.pid_started_at or 0))
    assert alive(supervisor)
    os.kill(supervisor[0], signal.SIGKILL)
    wait_until(lambda: not alive(supervisor), 10, message="the supervisor to die")

    before = db_dump()
    dry_actions = _actions(runs.cli("cleanup", "processes", "--dry-run", "--json"))
    dry = _by_target(dry_actions, unique=False)  # uniqueness is checked last, see below
    assert dry[str(child[0])]["result"] == "would do"
    assert dry[str(ghost[0])]["result"] == "would do"
    assert dry[f"#{lost}"]["result"] == "would do"
    assert "runner_lost" in dry[f"#{lost}"]["detail"]
    for identity in (child, ghost, stranger, foreign):
        assert alive(identity)
    assert_same(before, db_dump())
    assert runs.get(lost).status.value == "running"

    acts = _actions(runs.cli("cleanup", "processes", "--json"))
    found = _by_target(acts)
    for action in acts:
        if action["kind"] == "process":
            assert action["target"].isdigit(), action
            assert action["result"] in ("done", "already gone"), action
    assert found[str(child[0])]["result"] == "done"
    assert found[str(ghost[0])]["result"] == "done"
    assert "no such execution" in found[str(ghost[0])]["detail"]
    assert found[str(agent[0])]["result"] in ("done", "already gone")
    assert found[str(supervisor[0])]["result"] == "already gone"
    assert found[f"#{lost}"] == {
        "kind": "execution",
        "target": f"#{lost}",
        "detail": "running → failed (137, runner_lost)",
        "result": "done",
    }
    untouchable = {stranger[0], foreign[0], live_row.pid, live_row.agent_pid}
    assert not {str(p) for p in untouchable} & set(found)
    assert not any(t == f"#{live}" for t in found)

    for identity in (child, ghost, agent):
        assert not alive(identity), identity
    for identity in (stranger, foreign):
        assert alive(identity), identity
    final = runs.get(lost)
    assert (final.status.value, final.exit_code, final.reason) == ("failed", 137, "runner_lost")
    still = runs.get(live)
    assert still.status.value == "running" and runs.service.runner_alive(still)
    assert system.same_process(still.agent_pid, still.agent_started_at)
    assert _actions(runs.cli("cleanup", "processes", "--json")) == []

    # The dry run is the plan of the real one: each process once, as the real run reported it.
    targets = [a["target"] for a in dry_actions]
    assert len(targets) == len(set(targets)), dry_actions
    assert set(targets) == set(found), (dry_actions, acts)


# -- cleanup dirs ------------------------------------------------------------------------------


def test_cleanup_dirs_removes_finished_run_dirs_worktrees_and_old_strays(
    runs: Runs, git_repo: Path
) -> None:
    quick = runs.doc("# Quick\nFAKE:events=1\n", title="Quick")
    slow = runs.doc("# Slow\nFAKE:sleep=30\n", title="Slow")
    done_plain = runs.start(quick)
    done_tree = runs.start(quick, "--worktree", cwd=git_repo)
    busy_plain = runs.start(slow)
    busy_tree = runs.start(slow, "--worktree", cwd=git_repo)
    for execution_id in (done_plain, done_tree):
        assert runs.wait_final(execution_id).status.value == "completed"
    for execution_id in (busy_plain, busy_tree):
        runs.wait_settled(execution_id)
    plain_dir = Path(str(runs.get(done_plain).working_dir))
    tree_dir = Path(str(runs.get(done_tree).working_dir))
    tree_branch = str(runs.get(done_tree).branch)
    busy_dirs = [Path(str(runs.get(i).working_dir)) for i in (busy_plain, busy_tree)]
    (plain_dir / "output.txt").write_text("agent output\n")

    runs_dir = paths.runs_dir()
    old_stray = runs_dir / "stray-old"
    (old_stray / "nested").mkdir(parents=True)
    (old_stray / "nested" / "file").write_text("x")
    new_stray = runs_dir / "stray-new"
    new_stray.mkdir()
    stray_file = runs_dir / "stray-file"
    stray_file.write_text("not a directory")
    ten_minutes_ago = time.time() - 600
    for path in (old_stray, stray_file):
        os.utime(path, (ten_minutes_ago, ten_minutes_ago))
    for execution_id in (done_plain, done_tree):
        runs.wait_finished_for(execution_id, 1.2)

    def snapshot() -> tuple[Any, ...]:
        return (runs_listing(), worktrees(git_repo), refs(git_repo), db_dump())

    before = snapshot()
    dry = _by_target(
        _actions(runs.cli("cleanup", "dirs", "--older-than", "1s", "--dry-run", "--json"))
    )
    assert set(dry) == {str(plain_dir), str(tree_dir), str(old_stray)}
    assert dry[str(plain_dir)]["kind"] == "dir"
    assert dry[str(tree_dir)]["kind"] == "worktree"
    assert dry[str(old_stray)]["detail"] == "no execution row"
    assert all(a["result"] == "would do" for a in dry.values())
    text = runs.cli("cleanup", "dirs", "--older-than", "1s", "--dry-run")
    assert text.code == 0 and "dry run" in text.stdout, text
    assert_same(before, snapshot())
    # The default threshold (7 days) leaves the fresh runs alone.
    default = _by_target(_actions(runs.cli("cleanup", "dirs", "--json")))
    assert set(default) == {str(old_stray)}

    acts = _by_target(_actions(runs.cli("cleanup", "dirs", "--older-than", "1s", "--json")))
    assert set(acts) == {str(plain_dir), str(tree_dir)}
    assert all(a["result"] == "done" for a in acts.values())
    assert not plain_dir.exists() and not tree_dir.exists() and not old_stray.exists()
    listed = worktrees(git_repo)
    assert str(tree_dir) not in listed
    assert git(git_repo, "worktree", "prune", "--dry-run", "-v") == ""
    # Branches are `cleanup branches`' business.
    assert branch_exists(git_repo, tree_branch)
    for path in busy_dirs:
        assert path.is_dir()
    assert listed[str(busy_dirs[1])] == runs.get(busy_tree).branch
    assert new_stray.is_dir() and stray_file.is_file()
    for execution_id in (busy_plain, busy_tree):
        row = runs.get(execution_id)
        assert row.status.value == "running" and runs.service.runner_alive(row)
    assert _actions(runs.cli("cleanup", "dirs", "--older-than", "1s", "--json")) == []


def test_cleanup_dirs_never_removes_the_dir_of_a_running_resume(runs: Runs) -> None:
    """`exec resume` runs in the working directory of the finished run it continues: that
    directory belongs to a running run and must survive `cleanup dirs`."""
    doc = runs.doc("# first\nFAKE:events=1\n")
    first = runs.start(doc)
    assert runs.wait_final(first).status.value == "completed"
    runs.wait_finished_for(first, 1.2)
    resumed = runs.cli("exec", "resume", str(first), "FAKE:sleep=30")
    assert resumed.code == 0, resumed
    second = started_id(resumed.stdout)
    row = runs.wait_settled(second)
    shared = Path(str(row.working_dir))
    assert str(shared) == runs.get(first).working_dir
    acts = _actions(runs.cli("cleanup", "dirs", "--older-than", "1s", "--json"))
    assert shared.is_dir(), f"removed the working dir of running execution #{second}: {acts}"
    assert acts == []


# -- cleanup all -------------------------------------------------------------------------------


def _insert_stuck_row(old_id: str) -> None:
    """A `running` row as an earlier release left it: no run key, no process identity."""
    conn = sqlite3.connect(str(paths.db_path()), timeout=30)
    try:
        with conn:
            conn.execute(
                """INSERT INTO executions (old_id, doc_id, doc_title, status, created_at,
                       started_at, log_file, pid)
                   VALUES (?, 1, 'from an earlier release', 'running', ?, ?, ?, 4242)""",
                (
                    old_id,
                    "2024-03-01T10:00:00+00:00",
                    "2024-03-01T10:00:00+00:00",
                    "/nonexistent/x.log",
                ),
            )
    finally:
        conn.close()


def test_cleanup_all_dry_run_changes_nothing_and_yes_runs_every_step(
    runs: Runs, git_repo: Path, procs: Procs
) -> None:
    quick = runs.doc("# Quick\nFAKE:events=1\n", title="Quick")
    done_plain = runs.start(quick)
    done_tree = runs.start(quick, "--worktree", cwd=git_repo)
    pidfile = runs.pidfile()
    lost_doc = runs.doc(f"# lost\nFAKE:sleep=60\nFAKE:setsid-child\nFAKE:pidfile={pidfile}\n")
    lost = runs.start(lost_doc)
    agent, child = read_pidfile(pidfile, 2)
    procs.track(child)
    lost_row = runs.wait_settled(lost)
    _insert_stuck_row("claude-1-1709287200")
    git(git_repo, "checkout", "-q", "-b", "exec-55-wip")
    commit_file(git_repo, "wip.txt", "wip\n", "unmerged work")
    git(git_repo, "checkout", "-q", "main")
    stray = paths.runs_dir() / "stray"
    stray.mkdir()
    os.utime(stray, (time.time() - 900, time.time() - 900))
    for execution_id in (done_plain, done_tree):
        assert runs.wait_final(execution_id).status.value == "completed"
    tree_row = runs.get(done_tree)
    plain_dir = Path(str(runs.get(done_plain).working_dir))
    tree_dir = Path(str(tree_row.working_dir))
    supervisor = (int(lost_row.pid or 0), float(lost_row.pid_started_at or 0))
    os.kill(supervisor[0], signal.SIGKILL)
    wait_until(lambda: not alive(supervisor), 10, message="the supervisor to die")
    for execution_id in (done_plain, done_tree):
        runs.wait_finished_for(execution_id, 1.2)

    def snapshot() -> tuple[Any, ...]:
        return (db_dump(mask=()), runs_listing(), refs(git_repo), worktrees(git_repo))

    args = ("--older-than", "1s", "--timeout", "1h")
    before = snapshot()
    dry = runs.cli("cleanup", "all", "--dry-run", *args, cwd=git_repo)
    assert dry.code == 0, dry
    summaries = [ln for ln in dry.stdout.splitlines() if ln.startswith("summary:")]
    assert len(summaries) == 1 and "would change" in summaries[0], dry.stdout
    assert "dry run" in dry.stdout
    dry_json = _actions(runs.cli("cleanup", "all", "--dry-run", "--json", *args, cwd=git_repo))
    kinds = {a["kind"] for a in dry_json if a["result"] == "would do"}
    assert kinds == {"process", "execution", "dir", "worktree", "branch"}, dry_json
    assert_same(before, snapshot())
    assert alive(child)

    done = runs.cli("cleanup", "all", "--yes", *args, cwd=git_repo)
    assert done.code == 0, done
    summaries = [ln for ln in done.stdout.splitlines() if ln.startswith("summary:")]
    assert len(summaries) == 1 and summaries[0].startswith("summary: changed"), done.stdout
    assert "failed 0" in summaries[0]
    # processes: the lost run's leftovers are killed and its row repaired
    assert not alive(child) and not alive(agent)
    row = runs.get(lost)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "runner_lost")
    # executions: the stuck row of an earlier release
    stuck = runs.get_by_old_id("claude-1-1709287200")
    assert (stuck.status.value, stuck.exit_code, stuck.reason) == ("failed", 124, "stuck")
    # dirs: finished runs' dirs, the worktree (unregistered from git) and the old stray
    assert not plain_dir.exists() and not tree_dir.exists() and not stray.exists()
    assert set(worktrees(git_repo)) == {str(git_repo)}
    # branches: the merged exec branch is gone, the unmerged one kept (no --force)
    assert not branch_exists(git_repo, str(tree_row.branch))
    assert branch_exists(git_repo, "exec-55-wip")
    assert git(git_repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"

    # Without --yes (stdin not a terminal) branches are listed, not deleted.
    another = runs.get(runs.start(quick, "--worktree", cwd=git_repo))
    runs.wait_final(another.id)
    asked = runs.cli("cleanup", "all", cwd=git_repo)
    assert asked.code == 0, asked
    assert "confirm with --yes" in asked.stdout
    assert branch_exists(git_repo, str(another.branch))
    # Outside a repository the branch step is skipped, the rest still runs.
    elsewhere = runs.tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = _actions(runs.cli("cleanup", "all", "--yes", "--json", cwd=elsewhere))
    assert outside == [
        {"kind": "branch", "target": "-", "detail": "not in a git repository", "result": "kept"}
    ]


# -- concurrency -------------------------------------------------------------------------------


def test_cleanup_processes_never_fails_runs_that_are_finishing(runs: Runs) -> None:
    docs = [runs.doc(f"# quick {n}\nFAKE:events=4\nFAKE:interval=0.15\n") for n in range(6)]
    history: dict[int, list[str]] = {}
    outputs: list[Any] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def record() -> None:
        try:
            while not stop.is_set():
                for execution_id, (status, _, _) in statuses().items():
                    seen = history.setdefault(execution_id, [])
                    if not seen or seen[-1] != status:
                        seen.append(status)
                time.sleep(0.02)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def clean() -> None:
        try:
            while not stop.is_set() or len(outputs) < 6:
                outputs.append(runs.cli("cleanup", "processes", "--json"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=record), threading.Thread(target=clean)]
    for thread in threads:
        thread.start()
    try:
        ids = [runs.start(doc) for doc in docs]
        finals = [runs.wait_final(i, timeout=60) for i in ids]
        count = len(outputs)
        assert count >= 3, "cleanup did not run while the runs were finishing"
        # A few more rounds after the last run ended.
        wait_until(lambda: len(outputs) >= count + 2, 30, message="more cleanup rounds")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert len(outputs) >= 6
    for output in outputs:
        for action in _actions(output):
            assert action["result"] not in ("done", "failed", "no permission"), action
    for row in finals:
        assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success"), row
    for execution_id in ids:
        seen = history.get(execution_id, [])
        assert seen and seen[-1] == "completed", (execution_id, seen)
        assert seen.index("completed") == len(seen) - 1, (execution_id, seen)
    assert {s for s, _, _ in statuses().values()} == {"completed"}


# -- found while writing these tests ------------------------------------------------------------


def test_last_event_at_is_not_rewritten_without_new_events(runs: Runs) -> None:
    """`last_event_at` is the time of the agent's last event (DESIGN §2: the row keeps "last
    event time" current). A silent agent must not look active."""
    doc = runs.doc("# quiet\nFAKE:events=1\nFAKE:sleep=30\n")
    execution_id = runs.start(doc)
    first = runs.wait_settled(execution_id)
    last_event = parse_time(first.last_event_at)
    assert last_event is not None
    wait_until(lambda: (utc_now() - last_event).total_seconds() > 2.5, 10, message="time to pass")
    beat = runs.get(execution_id).heartbeat_at
    wait_until(lambda: runs.get(execution_id).heartbeat_at != beat, 10, message="a heartbeat")
    later = runs.get(execution_id)
    assert later.event_count == first.event_count
    assert later.last_event_at == first.last_event_at, (first.last_event_at, later.last_event_at)
