"""A host that cannot run runs (no agent, an agent that stops working) takes none of the team's
queue: a worker refuses to start there, and one whose agent goes away leaves its turns queued
for the others instead of failing each run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faults_helpers import one_error_line
from team_helpers import Team, team_database
from testkit import FAKE_CLAUDE, alive, assert_gone, run_emdx, wait_until

from emdx.store import open_store

pytestmark = pytest.mark.slow


def test_a_worker_on_a_host_without_the_agent_refuses_to_start(team: Team) -> None:
    missing = team.root / "nowhere" / "claude"
    started = run_emdx(
        *team.db_args(),
        "worker",
        "--name",
        "w-alpha",
        env=team.env("alpha", {"EMDX_CLAUDE_BIN": str(missing)}),
        cwd=team.root,
        timeout=60,
    )
    assert started.code == 127, started
    line = one_error_line(started.stderr)
    assert "this host cannot run the team's runs" in line and "not found" in line, line
    listed = team.cli("laptop", "workers", "--all", "--json")
    assert listed.code == 0 and listed.json() == [], listed.stdout


def _agent_copy(where: Path) -> Path:
    where.mkdir(parents=True)
    copy = where / "claude"
    shutil.copy2(FAKE_CLAUDE, copy)
    return copy


def test_a_worker_whose_agent_goes_away_leaves_the_queue_to_the_others(team: Team) -> None:
    agent = _agent_copy(team.root / "alpha-bin")
    alpha = team.start_worker("alpha", extra={"EMDX_CLAUDE_BIN": str(agent)})
    agent.unlink()  # uninstalled under the running worker
    doc = team.save("laptop", "# work\nFAKE:events=2\n")
    runs = [team.submit("laptop", doc) for _ in range(3)]
    wait_until(lambda: "this host cannot run runs now" in alpha.text(), 60, message=alpha.text)
    assert all(team.row(run).status.value == "queued" for run in runs), alpha.text()
    beta = team.start_worker("beta")
    rows = [team.wait_final(run) for run in runs]
    assert [(r.status.value, r.host) for r in rows] == [("completed", "beta")] * 3, alpha.text()
    said = [str(e) for e in team.events(runs[0])]
    assert any("left queued by worker w-alpha" in e for e in said), said
    shutil.copy2(FAKE_CLAUDE, agent)  # installed again: alpha takes runs once more
    beta.signal(signal.SIGTERM)
    beta.proc.wait(30)
    again = team.submit("laptop", doc)
    row = team.wait_final(again)
    assert (row.status.value, row.host) == ("completed", "alpha"), alpha.text()
    assert "this host can run runs again" in alpha.text()


def test_a_run_claimed_by_a_worker_that_died_before_starting_it_is_host_lost(team: Team) -> None:
    """Alpha SIGKILLed between its claim and its supervisor's start; alpha's host starts a
    worker again once the dead one is judged lost: its start-up sweep records the run
    host_lost at once (as any other host would), not a lost runner 30 s later."""
    alpha, mark, _ = team.start_held_worker("alpha", "emdx.service.preparing:Preparation._prepare")
    run = team.submit("laptop", team.save("laptop", "# claimed\n"))
    wait_until(mark.exists, 60, message=alpha.text)
    assert team.row(run).status.value == "running" and team.row(run).pid is None
    alpha.signal(signal.SIGKILL)
    alpha.proc.wait(10)
    with contextlib.closing(open_store(team.url)) as store:
        assert store.queue is not None
        queue = store.queue
        wait_until(lambda: not queue.live_workers(), 30)  # no command's sweep meanwhile
    again = team.start_worker("alpha")
    row = team.wait_final(run)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "host_lost"), (
        row,
        again.text(),
    )
    said = [str(e) for e in team.events(run)]
    assert any("lost" in e and "worker" in e for e in said), said


def test_a_worker_that_gives_up_its_registration_records_its_runs_host_lost(team: Team) -> None:
    """The worker's heartbeat stops reaching a database that answers (its row held by a lock
    here: a wedge): the worker gives that registration up and registers again; the run it was
    running could no longer be stopped from another host, so it ends as the host's loss —
    failed/137/host_lost, said why — not as a kill nobody asked for; the worker goes on."""
    import psycopg

    alpha = team.start_worker("alpha")
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=900\nFAKE:interval=0.1\n"))
    row = team.wait_agent(run, alpha)
    with psycopg.connect(team.url) as wedge:
        wedge.execute(
            "SELECT 1 FROM procrastinate_workers WHERE id = %s FOR UPDATE", (row.worker_id,)
        )
        wait_until(lambda: team.row(run).status.is_final, 90, message=alpha.text)
        wedge.rollback()
    final = team.row(run)
    assert (final.status.value, final.exit_code, final.reason) == ("failed", 137, "host_lost"), (
        final,
        alpha.text(),
    )
    assert "registering again" in alpha.text(), alpha.text()
    said = [str(e) for e in team.events(run)]
    assert any("lost its registration" in e for e in said), said
    assert_gone([(row.pid or 0, row.pid_started_at or 0.0)], what="the run's supervisor")
    after = team.submit("laptop", team.save("laptop", "# after\n"))
    assert team.wait_final(after, 60).status.value == "completed", alpha.text()


def test_a_worker_whose_runs_directory_cannot_be_written_refuses_to_start(team: Team) -> None:
    """runs/ on a read-only mount (its modes say nothing: root may write anywhere else): the
    worker refuses to start, where before it took every run of the queue only to fail it."""
    runs = team.root / "alpha" / "emdx-home" / "runs"
    runs.mkdir(parents=True, mode=0o700)
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0700", "tmpfs", str(runs)]
    subprocess.run(mount, check=True, capture_output=True)
    try:
        started = run_emdx(
            *team.db_args(), "worker", "--name", "w-alpha", env=team.env("alpha"), timeout=60
        )
    finally:
        subprocess.run(["umount", str(runs)], check=True, capture_output=True)
    assert started.code != 0, started
    line = one_error_line(started.stderr)
    assert "this host cannot run the team's runs" in line and str(runs) in line, line
    listed = team.cli("laptop", "workers", "--all", "--json")
    assert listed.code == 0 and listed.json() == [], listed.stdout


def test_a_worker_whose_agents_interpreter_goes_away_leaves_the_queue(team: Team) -> None:
    """The agent file unchanged but the interpreter its `#!` names removed: the cached check of
    the agent does not vouch for it (it is keyed by the interpreter too), runs stay queued."""
    interp = team.root / "alpha-interp"
    interp.mkdir()
    (interp / "python3").symlink_to(sys.executable)
    agent = team.root / "alpha-bin" / "claude"
    agent.parent.mkdir()
    body = FAKE_CLAUDE.read_text().split("\n", 1)[1]
    agent.write_text(f"#!{interp / 'python3'}\n{body}")
    agent.chmod(0o755)
    alpha = team.start_worker("alpha", extra={"EMDX_CLAUDE_BIN": str(agent)})
    (interp / "python3").unlink()
    doc = team.save("laptop", "# work\nFAKE:events=2\n")
    runs = [team.submit("laptop", doc) for _ in range(2)]
    wait_until(lambda: "this host cannot run runs now" in alpha.text(), 60, message=alpha.text)
    assert all(team.row(run).status.value == "queued" for run in runs), alpha.text()
    (interp / "python3").symlink_to(sys.executable)
    rows = [team.wait_final(run) for run in runs]
    assert [(r.status.value, r.host) for r in rows] == [("completed", "alpha")] * 2, alpha.text()


def test_a_kill_from_another_host_whose_supervisor_dies_meanwhile_is_a_kill(team: Team) -> None:
    """`exec kill` from the laptop reaches alpha's worker late (frozen a moment), and the
    run's supervisor dies meanwhile, before it could record the kill: the run is `killed`,
    whoever records it (here a command on alpha's host, first): the asker is on the row."""
    alpha = team.start_worker("alpha")
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=900\nFAKE:interval=0.1\n"))
    row = team.wait_agent(run, alpha)
    alpha.signal(signal.SIGSTOP)
    try:
        killer = team.start_cli("laptop", "exec", "kill", str(run))
        wait_until(lambda: team.row(run).kill_asked, 30)
        os.kill(row.pid or 0, signal.SIGKILL)  # dead before it could record the kill
        wait_until(lambda: not alive((row.pid or 0, row.pid_started_at or 0.0)), 15)
        # A command on alpha's host finds it first (the worker's own repair would, after).
        swept = team.cli("alpha", "exec", "health")
        assert swept.code == 1 and "zombie" in swept.stdout, swept
    finally:
        alpha.signal(signal.SIGCONT)
    out, err = killer.communicate(timeout=90)
    assert killer.returncode == 0, (out, err, alpha.text())
    final = team.wait_final(run)
    assert (final.status.value, final.reason) == ("killed", "killed_by_user"), (final, alpha.text())
    assert_gone([(row.agent_pid or 0, row.agent_started_at or 0.0)], what="the run's agent")


def test_a_worker_started_again_at_once_records_its_dead_runs_host_lost(team: Team) -> None:
    """Alpha SIGKILLed mid-run (its supervisor dies with it) and started again at once, before
    its heartbeat is stale (and within the grace the team's pulse gives after a silence): the
    dead registration's process is gone from this host, so the run is host_lost, as any other
    host would record it later — not runner_lost."""
    alpha = team.start_worker("alpha")
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=900\nFAKE:interval=0.1\n"))
    wait_until(lambda: team.row(run).agent_pid, 60, message=alpha.text)
    alpha.signal(signal.SIGKILL)
    alpha.proc.wait(10)
    again = team.start_worker("alpha")
    row = team.wait_final(run, 30)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "host_lost"), (
        row,
        again.text(),
    )


def test_a_worker_with_a_wrong_repo_leaves_the_database_untouched(team: Team) -> None:
    """Its command line is checked before the database is opened (and migrated): `--repo` not
    a repository, or no git on PATH, is one line and an empty database stays empty."""
    import psycopg

    not_a_repo = team.root / "plain-dir"
    not_a_repo.mkdir()
    no_git = team.root / "no-git-bin"
    no_git.mkdir()
    with team_database() as empty:
        for path in (os.environ["PATH"], str(no_git)):
            env = team.env("alpha", {"EMDX_DATABASE_URL": empty, "PATH": path})
            started = run_emdx("worker", "--repo", str(not_a_repo), env=env, timeout=60)
            assert started.code == 1, started
            line = one_error_line(started.stderr)
            assert "not a git repository" in line or "needs git" in line, line
        with psycopg.connect(empty) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()
        assert tables == (0,), tables
