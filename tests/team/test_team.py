"""Team mode with real processes: one PostgreSQL database, `emdx worker`s as hosts (each its own
EMDX_HOME and EMDX_HOST), commands from a third host, the fake agent (the real Claude Code CLI:
test_team_real.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta

import pytest
from team_helpers import Team, drop_connections, new_repo
from testkit import alive, assert_gone, read_pidfile, run_emdx, wait_until

from emdx import system
from emdx.models import Execution, parse_time

pytestmark = pytest.mark.slow


def _span(row: Execution) -> tuple[datetime, datetime]:
    start, end = parse_time(row.started_at), parse_time(row.completed_at)
    assert start is not None and end is not None, row
    return start, end


def _server_now(team: Team) -> datetime:
    """The database server's clock now."""
    import psycopg

    with psycopg.connect(team.url) as conn:
        found = conn.execute("SELECT clock_timestamp()").fetchone()
    assert found is not None
    moment: datetime = found[0]
    return moment


def _peak(rows: list[Execution]) -> int:
    """The most runs that were running at one moment."""
    moments = sorted([(s, 1) for s, _ in map(_span, rows)] + [(e, -1) for _, e in map(_span, rows)])
    peak = running = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    return peak


def _taken(team: Team, execution_id: int) -> list[str]:
    return [
        str(e.get("message"))
        for e in team.events(execution_id)
        if "taken by worker" in str(e.get("message"))
    ]


def _host_processes(team: Team, host: str) -> list[tuple[int, float]]:
    db = team.root / host / "emdx-home" / "knowledge.db"
    return [p for found in system.scan_marked_processes(db).values() for p in found]


def test_runs_spread_over_the_workers_within_their_concurrency(team: Team) -> None:
    team.start_worker("alpha", concurrency=2)
    team.start_worker("beta", concurrency=1)
    doc = team.save("laptop", "# work\nFAKE:sleep=0.5\nFAKE:events=2\n")
    ids = [team.submit("laptop", doc) for _ in range(12)]
    rows = [team.wait_final(i, 120) for i in ids]
    assert [(r.status.value, r.exit_code, r.reason) for r in rows] == [
        ("completed", 0, "success")
    ] * 12
    by_host = {h: [r for r in rows if r.host == h] for h in ("alpha", "beta")}
    assert by_host["alpha"] and by_host["beta"], [r.host for r in rows]
    assert len(by_host["alpha"]) + len(by_host["beta"]) == 12
    assert _peak(by_host["alpha"]) <= 2 and _peak(by_host["beta"]) <= 1
    for row in rows:
        # Started once, by one worker, in one attempt; its directory on its own host.
        assert len(_taken(team, row.id)) == 1, team.events(row.id)
        assert row.attempt == 1
        assert row.working_dir and row.working_dir.startswith(str(team.root / str(row.host)))
    table = team.cli("laptop", "exec", "list").stdout
    assert table.splitlines()[0].split()[-1] == "host" and "alpha" in table and "beta" in table
    listing = team.cli("laptop", "workers", "--json")
    assert listing.code == 0, listing.stderr
    workers = {w["name"]: w for w in json.loads(listing.stdout)}
    assert {"w-alpha", "w-beta"} <= set(workers)
    assert workers["w-alpha"]["host"] == "alpha" and workers["w-alpha"]["concurrency"] == 2
    assert all(w["alive"] for w in workers.values())


def test_a_run_on_one_host_is_killed_and_followed_from_another(team: Team) -> None:
    worker = team.start_worker("alpha")
    doc = team.save("laptop", "# long\nFAKE:events=200\nFAKE:interval=0.1\n")
    run = team.submit("laptop", doc)

    row = team.wait_agent(run, worker, events=3)
    assert row.host == "alpha"
    # The log, from the laptop: its file is on alpha, its copy in the team's database.
    logs = team.cli("laptop", "exec", "logs", str(run))
    assert logs.code == 0 and "step 1" in logs.stdout, logs.stdout + logs.stderr
    identities = _host_processes(team, "alpha")
    assert identities, "the run's processes on alpha"

    killed = team.cli("laptop", "exec", "kill", str(run))
    assert killed.code == 0, killed.stderr
    final = team.row(run)
    assert (final.status.value, final.exit_code, final.reason) == ("killed", 143, "killed_by_user")
    assert_gone(identities, what="the killed run's processes on alpha")
    followed = team.cli("laptop", "exec", "show", str(run), "--follow")
    assert followed.code == 143, followed.stderr  # --follow exits as the run did
    assert "received SIGTERM" in followed.stdout and "finished: killed" in followed.stdout
    # The worker is still there and takes the next run.
    quick = team.submit("laptop", team.save("laptop", "# quick\n"))
    assert team.wait_final(quick).status.value == "completed"


def test_a_sigkilled_worker_is_host_lost_and_its_queued_runs_run_elsewhere(team: Team) -> None:
    alpha = team.start_worker("alpha")
    doc = team.save("laptop", "# long\nFAKE:events=300\nFAKE:interval=0.1\n")
    lost = team.submit("laptop", doc)
    wait_until(lambda: team.row(lost).agent_pid, 60, message=alpha.text)
    on_alpha = _host_processes(team, "alpha")
    waiting = [team.submit("laptop", team.save("laptop", "# next\n")) for _ in range(2)]
    assert all(team.row(i).status.value == "queued" for i in waiting)

    alpha.signal(signal.SIGKILL)
    alpha.proc.wait(10)
    # Its supervisors die with it (as with its host): nothing of the run survives.
    assert_gone(on_alpha, what="the lost worker's run")
    team.start_worker("beta")
    row = team.wait_final(lost, 60)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "host_lost")
    for execution_id in waiting:
        done = team.wait_final(execution_id, 60)
        assert (done.status.value, done.host) == ("completed", "beta")
    assert len(_taken(team, lost)) == 1  # never retried
    shown = team.cli("laptop", "exec", "show", str(lost))
    assert "host_lost" in shown.stdout and "not retried" in json.dumps(team.events(lost))


def test_a_frozen_worker_is_host_lost_and_waking_it_does_not_run_again(team: Team) -> None:
    alpha = team.start_worker("alpha")
    doc = team.save("laptop", "# long\nFAKE:events=300\nFAKE:interval=0.1\n")
    run = team.submit("laptop", doc)
    wait_until(lambda: team.row(run).agent_pid, 60, message=alpha.text)
    team.start_worker("beta")  # its sweep notices alpha's silence
    on_alpha = _host_processes(team, "alpha")
    alpha.signal(signal.SIGSTOP)  # a partition: alive, silent
    row = team.wait_final(run, 60)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "host_lost")
    team.start_worker("gamma")  # a worker starting prunes the stalled registration of alpha
    alpha.signal(signal.SIGCONT)
    # Back, it stops what it was running for the lost run, and the row stays as recorded.
    assert_gone(on_alpha, timeout=30, what="the lost run's processes after SIGCONT")
    again = team.row(run)
    assert (again.status.value, again.reason, again.completed_at) == (
        "failed",
        "host_lost",
        row.completed_at,
    )
    assert len(_taken(team, run)) == 1
    # It is still a worker (its registration pruned meanwhile), and the team still runs.
    later = team.submit("laptop", team.save("laptop", "# after the thaw\n"))
    assert team.wait_final(later).status.value == "completed"
    assert alpha.proc.poll() is None and "Traceback" not in alpha.text(), alpha.text()


def test_connections_cut_mid_run_end_nothing_stuck(team: Team) -> None:
    """What a server restart does to every client: the workers, supervisors and commands
    reconnect; runs complete (or end with a reason), none stays running."""
    worker = team.start_worker("alpha", concurrency=2)
    doc = team.save("laptop", "# work\nFAKE:events=30\nFAKE:interval=0.1\n")
    ids = [team.submit("laptop", doc) for _ in range(2)]
    wait_until(lambda: all(team.row(i).agent_pid for i in ids), 60, message=worker.text)
    assert drop_connections(team.url) > 0
    rows = [team.wait_final(i, 90) for i in ids]
    for row in rows:
        assert row.reason is not None, row
        assert row.status.value == "completed", (row, worker.text())
    assert worker.proc.poll() is None, worker.text()
    later = team.submit("laptop", doc)
    assert team.wait_final(later, 60).status.value == "completed", worker.text()


def test_after_and_queues_route_runs(team: Team) -> None:
    team.start_worker("alpha", queues=("gpu",))
    team.start_worker("beta")
    first = team.submit("laptop", team.save("laptop", "# first\nFAKE:sleep=1\n"))
    second = team.submit("laptop", team.save("laptop", "# second\n"), "--after", str(first))
    routed = team.submit("laptop", team.save("laptop", "# gpu\n"), "--queue", "gpu")
    done_first, done_second = team.wait_final(first), team.wait_final(second)
    assert done_first.status.value == done_second.status.value == "completed"
    assert _span(done_second)[0] >= _span(done_first)[1]
    assert team.wait_final(routed).host == "alpha"
    failing = team.submit("laptop", team.save("laptop", "# fails\nFAKE:sleep=2\nFAKE:exit=3\n"))
    blocked = team.submit("laptop", team.save("laptop", "# blocked\n"), "--after", str(failing))
    assert team.wait_final(failing).status.value == "failed"
    assert team.wait_final(blocked).reason == "dependency_failed"


def test_commands_outside_team_mode_say_so(team: Team) -> None:
    local = team.env("laptop")
    del local["EMDX_DATABASE_URL"]
    for args in (["workers"], ["worker"]):
        result = run_emdx(*args, env=local, cwd=team.root)
        assert result.code == 1 and "EMDX_DATABASE_URL" in result.stderr, result
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_worktree_run_goes_to_a_worker_holding_its_repository(team: Team) -> None:
    here = new_repo(team.root / "laptop-src" / "proj")
    there = team.root / "alpha-src" / "proj"
    there.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(here), str(there)], check=True)
    # Another repository of the same name, not a clone: its worker must never take the run.
    other = team.root / "beta-src" / "proj"
    other.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=other, check=True)
    (other / "unrelated").write_text("x\n")
    subprocess.run(["git", "add", "."], cwd=other, check=True)
    subprocess.run(
        ["git", "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-q", "-m", "other"],
        cwd=other,
        check=True,
    )
    team.start_worker("beta", repos=(other,))
    team.start_worker("alpha", repos=(there,))
    doc = team.save("laptop", "# in the repo\n")
    run = team.submit("laptop", doc, "--worktree", cwd=here)
    row = team.wait_final(run, 60)
    assert (row.status.value, row.host) == ("completed", "alpha"), (row, team.events(run))
    assert row.repo == str(there) and row.branch and row.branch_created
    branches = subprocess.run(
        ["git", "branch", "--list", row.branch], cwd=there, capture_output=True, text=True
    )
    assert row.branch in branches.stdout
    for untouched in (here, other):  # the submitting host's, and the namesake
        listed = subprocess.run(
            ["git", "branch", "--list", row.branch], cwd=untouched, capture_output=True, text=True
        )
        assert not listed.stdout, untouched


def test_a_kill_of_a_run_whose_worker_died_records_host_lost(team: Team) -> None:
    # Slow beats: `exec kill` starts before anyone can tell the worker is gone.
    alpha = team.start_worker("alpha", extra={"EMDX_WORKER_HEARTBEAT_SECONDS": "3"})
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=300\nFAKE:interval=0.1\n"))
    wait_until(lambda: team.row(run).agent_pid, 60, message=alpha.text)
    alpha.signal(signal.SIGKILL)
    alpha.proc.wait(10)
    killed = team.cli("laptop", "exec", "kill", str(run))
    assert killed.code == 0, killed.stderr
    row = team.row(run)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 137, "host_lost")
    assert "exec kill" in json.dumps(team.events(run))


def test_a_restarted_worker_sweeps_what_its_lost_runs_left_on_its_host(team: Team) -> None:
    alpha = team.start_worker("alpha")
    pidfile = team.root / "agent.pid"
    doc = team.save(
        "laptop", f"# escapes\nFAKE:setsid-child\nFAKE:pidfile={pidfile}\nFAKE:sleep=60\n"
    )
    run = team.submit("laptop", doc)
    agent_and_child = read_pidfile(pidfile, count=2)
    escaped = agent_and_child[1:]
    alpha.signal(signal.SIGKILL)
    alpha.proc.wait(10)
    assert all(alive(p) for p in escaped)  # in its own session: it outlived its supervisor
    team.start_worker("alpha")  # the same host and home again
    assert_gone(escaped, what="the escaped process after the worker's start-up sweep")
    assert team.wait_final(run).reason == "host_lost"


def test_a_foreground_execute_follows_its_run_on_a_worker(team: Team) -> None:
    team.start_worker("alpha")
    doc = team.save("laptop", "# fg\nFAKE:events=3\nFAKE:exit=4\n")
    ran = team.cli("laptop", "claude", "execute", str(doc))
    assert ran.code == 4, ran.stdout + ran.stderr  # the run's own exit code, from another host
    assert "step 2" in ran.stdout and "taken by worker w-alpha" in ran.stdout, ran.stdout


def test_the_daily_budget_holds_queued_runs_on_the_workers(team: Team) -> None:
    budget = {"EMDX_DAILY_BUDGET_USD": "0.01"}  # one fake run costs $0.0123
    alpha = team.start_worker("alpha", extra=budget)
    first = team.submit("laptop", team.save("laptop", "# first\n"))
    assert team.wait_final(first).cost_usd
    held = team.submit("laptop", team.save("laptop", "# held\n"))
    job = team.row(held).job_id
    # Its turns come and go (each deferred anew), and it stays queued.
    wait_until(lambda: team.row(held).job_id != job, 30, message=alpha.text)
    assert team.row(held).status.value == "queued"
    alpha.signal(signal.SIGTERM)
    alpha.proc.wait(30)
    team.start_worker("beta")  # no budget on this host
    assert team.wait_final(held).status.value == "completed"


@pytest.mark.parametrize("how", ["taken by a worker that died", "ended by a failed task"])
def test_a_queued_run_whose_job_was_lost_is_queued_again(team: Team, how: str) -> None:
    import psycopg

    run = team.submit("laptop", team.save("laptop", "# orphan\n"))
    job = team.row(run).job_id
    with psycopg.connect(team.url, autocommit=True) as conn:
        if how == "ended by a failed task":
            conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", (job,))
        else:
            dead = conn.execute(
                "INSERT INTO procrastinate_workers (last_heartbeat) "
                "VALUES (now() - interval '1 hour') RETURNING id"
            ).fetchone()
            assert dead is not None
            conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
                (dead[0], job),
            )
    team.start_worker("alpha")  # its sweep finds the run, queues it again, and takes it
    row = team.wait_final(run)
    assert (row.status.value, row.host) == ("completed", "alpha")
    assert row.job_id != job and len(_taken(team, run)) == 1


def test_the_db_option_names_the_team_database(team: Team) -> None:
    run = team.submit("laptop", team.save("laptop", "# queued, no worker\n"))
    local = team.env("laptop")
    del local["EMDX_DATABASE_URL"]
    listed = run_emdx("--db", team.url, "exec", "list", "--json", env=local, cwd=team.root)
    assert listed.code == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [run]
    alone = run_emdx("exec", "list", "--json", env=local, cwd=team.root)
    assert json.loads(alone.stdout) == []  # without it: this host's own SQLite file
    bad = run_emdx("--db", "mysql://x", "list", env=local, cwd=team.root)
    assert bad.code == 1 and "--db" in bad.stderr and "Traceback" not in bad.stderr


def test_following_from_another_host_gets_the_whole_log_to_its_end(team: Team) -> None:
    """The run's host ships its last entries after the final write: a follower waits for
    them (a flood of events ends the run before its copy has caught up)."""
    team.start_worker("alpha")
    doc = team.save("laptop", "# flood\nFAKE:events=20000\n")
    ran = team.cli("laptop", "claude", "execute", str(doc), timeout=180)
    assert ran.code == 0, ran.stderr[-2000:]
    assert "step 19999" in ran.stdout and "finished: completed" in ran.stdout, ran.stdout[-3000:]


def test_the_agent_is_not_handed_the_team_database(team: Team) -> None:
    team.start_worker("alpha")
    doc = team.save("laptop", "# env\nFAKE:env=EMDX_DATABASE_URL,EMDX_EXECUTION_ID\n")
    run = team.submit("laptop", doc)
    assert team.wait_final(run).status.value == "completed"
    results = [e["raw"] for e in team.events(run) if e.get("type") == "result"]
    assert results, team.events(run)
    seen = json.loads(results[0]["result"])["env"]
    assert seen == {"EMDX_DATABASE_URL": None, "EMDX_EXECUTION_ID": str(run)}, seen


def test_health_from_another_host_and_of_a_team_without_workers(team: Team) -> None:
    doc = team.save("laptop", "# long\nFAKE:events=100\nFAKE:interval=0.1\n")
    queued = team.submit("laptop", doc)
    nobody = team.cli("laptop", "exec", "health")
    assert nobody.code == 1 and f"#{queued} unserved" in nobody.stdout, nobody.stdout
    alpha = team.start_worker("alpha")
    wait_until(lambda: team.row(queued).agent_pid, 60, message=alpha.text)
    seen = team.cli("laptop", "exec", "health")
    assert seen.code == 0, seen.stdout + seen.stderr
    assert f"#{queued} healthy" in seen.stdout and "on alpha" in seen.stdout, seen.stdout
    routed = team.submit("laptop", team.save("laptop", "# gpu\n"), "--queue", "gpu")
    nobody_takes = team.cli("laptop", "exec", "health")
    assert nobody_takes.code == 1 and f"#{routed} unserved" in nobody_takes.stdout


def test_a_kill_that_lands_while_the_worker_starts_the_run_stops_it(team: Team) -> None:
    """The abort arrives between the claim and the supervisor's spawn (held there): the start
    still ends, then the run is stopped and its supervisor reaped; the slot is not freed
    while it runs."""
    alpha, mark, release = team.start_held_worker(
        "alpha", "emdx.service.preparing:Preparation._prepare"
    )
    doc = team.save("laptop", "# long\nFAKE:events=300\nFAKE:interval=0.1\n")
    run = team.submit("laptop", doc)
    wait_until(mark.exists, 60, message=alpha.text)
    assert team.row(run).status.value == "running"  # claimed, no supervisor yet
    killer = team.start_cli("laptop", "exec", "kill", str(run))

    def abort_asked() -> bool:
        import psycopg

        with psycopg.connect(team.url) as conn:
            found = conn.execute(
                "SELECT abort_requested FROM procrastinate_jobs WHERE id = %s", (row.job_id,)
            ).fetchone()
        return bool(found and found[0])

    row = team.row(run)
    wait_until(abort_asked, 30)
    release.touch()
    out, err = killer.communicate(timeout=60)
    assert killer.returncode == 0, (out, err, alpha.text())
    row = team.wait_final(run)
    assert (row.status.value, row.reason) == ("killed", "killed_by_user"), (row, alpha.text())
    assert_gone(_host_processes(team, "alpha"), what="the run started after its abort")
    import psutil

    zombies = [c.pid for c in psutil.Process(alpha.proc.pid).children() if c.status() == "zombie"]
    assert not zombies, f"unreaped supervisors: {zombies}"
    quick = team.submit("laptop", team.save("laptop", "# next\n"))
    assert team.wait_final(quick).status.value == "completed"


def test_a_host_with_a_skewed_clock_is_judged_by_the_servers(team: Team) -> None:
    """A worker host 90 s behind: its runs' heartbeats are stamped by the database server's
    clock, so another host sees them fresh (not unresponsive)."""
    from faults_helpers import LIBFAKETIME, faketime_env

    assert LIBFAKETIME.exists(), "make test installs faketime"
    env, rc = faketime_env(team.root)
    rc.write_text("-90s\n")
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{team.base_env['PYTHONPATH']}"
    alpha = team.start_worker("alpha", extra=env)
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=200\nFAKE:interval=0.1\n"))
    wait_until(lambda: team.row(run).event_count >= 3, 60, message=alpha.text)
    seen = team.cli("laptop", "exec", "health")
    assert seen.code == 0 and f"#{run} healthy" in seen.stdout, seen.stdout + alpha.text()


def test_a_clock_stepped_on_a_worker_host_mid_run_moves_no_heartbeat(team: Team) -> None:
    """A worker host's wall clock stepped an hour back while its run runs: the run's next
    heartbeats and its end are still the database server's times (they go on by the host's
    boot clock between two reads of the server's), so another host sees it healthy."""
    from faults_helpers import LIBFAKETIME, faketime_env

    assert LIBFAKETIME.exists(), "make test installs faketime"
    env, rc = faketime_env(team.root)
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{team.base_env['PYTHONPATH']}"
    alpha = team.start_worker("alpha", extra=env)
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=80\nFAKE:interval=0.1\n"))
    wait_until(lambda: team.row(run).event_count >= 3, 60, message=alpha.text)
    rc.write_text("-1h\n")
    stepped = team.row(run).heartbeat_at

    def beat_after(before: str | None) -> str:
        def moved() -> str | None:
            beat = team.row(run).heartbeat_at
            return beat if beat != before else None

        return wait_until(moved, 30, message=alpha.text)

    stepped = beat_after(beat_after(stepped))  # two beats after the step: both stamped since
    beat = parse_time(stepped)
    assert beat is not None and abs(_server_now(team) - beat) < timedelta(seconds=10), beat
    event = parse_time(team.row(run).last_event_at)  # the agent's last event: the same clock
    assert event is not None and abs(_server_now(team) - event) < timedelta(seconds=10), event
    seen = team.cli("laptop", "exec", "health")
    assert seen.code == 0 and f"#{run} healthy" in seen.stdout, seen.stdout + alpha.text()
    row = team.wait_final(run)
    start, end = _span(row)
    assert row.status.value == "completed" and start <= end <= _server_now(team), row


def test_a_retry_backoff_on_a_host_whose_clock_steps_lasts_as_long_as_it_said(team: Team) -> None:
    """A 3 s retry backoff on a worker host whose wall clock is stepped an hour back during it:
    the run resumes ~3 s later (not an hour), and the end of its wait is written on the
    server's clock (what every host shows), not the host's."""
    from faults_helpers import LIBFAKETIME, faketime_env

    assert LIBFAKETIME.exists(), "make test installs faketime"
    env, rc = faketime_env(team.root)
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{team.base_env['PYTHONPATH']}"
    env["EMDX_RETRY_BACKOFF_SECONDS"] = "3"
    alpha = team.start_worker("alpha", extra=env)
    run = team.submit(
        "laptop", team.save("laptop", "# overloaded\nFAKE:api-error=529\n"), "--retries", "1"
    )

    def waiting_row() -> Execution | None:
        found = team.row(run)
        return found if found.status.value == "waiting" else None

    waiting = wait_until(waiting_row, 60, message=alpha.text)
    rc.write_text("-1h\n")
    until = parse_time(waiting.waiting_until)
    assert until is not None and abs(until - _server_now(team)) < timedelta(seconds=30), until
    row = team.wait_final(run, 30)
    assert (row.status.value, row.attempt) == ("completed", 2), (row, alpha.text())


def test_a_viewer_with_a_skewed_clock_reads_a_running_runs_age_on_the_servers(
    team: Team,
) -> None:
    """Viewed from a host two hours ahead, a running run's duration and heartbeat age are
    measured against the database server's now (its times are the server's), not two hours
    more than they are."""
    from faults_helpers import LIBFAKETIME, faketime_env

    assert LIBFAKETIME.exists(), "make test installs faketime"
    (team.root / "laptop").mkdir(exist_ok=True)
    env, rc = faketime_env(team.root / "laptop")
    rc.write_text("+2h\n")
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{team.base_env['PYTHONPATH']}"
    alpha = team.start_worker("alpha")
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=300\nFAKE:interval=0.1\n"))
    wait_until(lambda: team.row(run).event_count >= 3, 60, message=alpha.text)
    shown = run_emdx("exec", "show", str(run), "--json", env=team.env("laptop", env), cwd=team.root)
    assert shown.code == 0, shown.stderr
    data = shown.json()
    assert data["status"] == "running", data
    assert 0 <= data["duration_s"] < 300, data
    text = run_emdx("exec", "show", str(run), env=team.env("laptop", env), cwd=team.root)
    beat = re.search(r"heartbeat\s+(\S+) ago", text.stdout)
    assert beat and re.fullmatch(r"\d+s", beat[1]), text.stdout  # `2s ago`, not `2h00m ago`
    listed = run_emdx("exec", "list", env=team.env("laptop", env), cwd=team.root)
    assert listed.code == 0 and "2h0" not in listed.stdout and "1h5" not in listed.stdout, listed


def test_a_runs_times_are_the_servers_whatever_the_hosts_clocks(team: Team) -> None:
    """Submitted from a host 5 min ahead, run on one 90 s behind: the row's created, started
    and completed times are all read on the database server's clock (a duration never spans
    two hosts' clocks)."""
    from faults_helpers import LIBFAKETIME, faketime_env

    assert LIBFAKETIME.exists(), "make test installs faketime"
    hosts: dict[str, dict[str, str]] = {}
    for host, skew in (("alpha", "-90s"), ("laptop", "+300s")):
        (team.root / host).mkdir(exist_ok=True)
        env, rc = faketime_env(team.root / host)
        rc.write_text(f"{skew}\n")
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{team.base_env['PYTHONPATH']}"
        hosts[host] = env
    team.start_worker("alpha", extra=hosts["alpha"])

    before = _server_now(team)
    doc = team.save("laptop", "# timed\nFAKE:events=3\n")
    started = run_emdx(
        "claude",
        "execute",
        str(doc),
        "--background",
        env=team.env("laptop", hosts["laptop"]),
        cwd=team.root,
    )
    assert started.code == 0, started.stderr
    run = int(started.stdout.split("#", 1)[1].split(" ", 1)[0])
    row = team.wait_final(run)
    after = _server_now(team)
    assert row.status.value == "completed", row
    created, (start, end) = parse_time(row.created_at), _span(row)
    assert created is not None
    slack = timedelta(seconds=1)
    assert before - slack <= created <= start <= end <= after + slack, (before, row, after)


def test_a_worker_stopped_while_it_prepares_a_run_leaves_it_to_the_others(team: Team) -> None:
    alpha, mark, release = team.start_held_worker(
        "alpha", "emdx.service.preparing:Preparation._make_workdir"
    )
    run = team.submit("laptop", team.save("laptop", "# moves\n"))
    wait_until(mark.exists, 60, message=alpha.text)
    alpha.signal(signal.SIGTERM)  # while its directory is made, before the claim
    wait_until(lambda: "worker: stopping" in alpha.text(), 30, message=alpha.text)
    release.touch()
    alpha.proc.wait(30)
    assert team.row(run).status.value == "queued", team.row(run)
    key = team.row(run).run_key or ""
    assert not (alpha.home / "runs" / key).exists()  # nothing of it stays on alpha
    team.start_worker("beta")
    row = team.wait_final(run)
    assert (row.status.value, row.host) == ("completed", "beta"), (row, team.events(run))


def test_a_kill_from_another_host_of_a_frozen_supervisor_succeeds(team: Team) -> None:
    alpha = team.start_worker("alpha", extra={"EMDX_KILL_GRACE_SECONDS": "1"})
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=600\nFAKE:interval=0.1\n"))
    row = team.wait_agent(run, alpha)
    assert row.pid and row.pid_started_at is not None
    supervisor = (row.pid, row.pid_started_at)
    identities = _host_processes(team, "alpha")
    system.send_signal(*supervisor, signal.SIGSTOP)
    killed = team.cli("laptop", "exec", "kill", str(run), timeout=120)
    assert killed.code == 0, killed.stderr + alpha.text()
    final = team.row(run)
    assert (final.status.value, final.exit_code) == ("killed", 137), final
    assert_gone([*identities, supervisor], what="the frozen run's processes")


def test_a_flapping_database_wedges_no_worker_and_loses_no_submit(team: Team) -> None:
    """Every connection cut again and again while runs are submitted (a flapping server or
    pooler): each submit either says it failed and leaves no row, or its run runs; the worker
    keeps working, its heartbeat going on through the cuts."""
    worker = team.start_worker("alpha", concurrency=4)
    doc = team.save("laptop", "# q\nFAKE:events=2\n")
    submitted: list[int] = []
    failed = 0
    # The cut lands at a different moment of each submit (connect, insert, defer, read back):
    # the delays pace the fault on purpose, they wait for nothing.
    for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6):
        submit = team.start_cli("laptop", "claude", "execute", str(doc), "--background")
        time.sleep(delay)
        drop_connections(team.url)
        out, err = submit.communicate(timeout=120)
        if submit.returncode == 0:
            submitted.append(int(out.decode().split("#", 1)[1].split(" ", 1)[0]))
        else:
            failed += 1
            assert len(err.decode().strip().splitlines()) == 1 and b"Traceback" not in err
    rows = {r.id: r for r in team.rows()}
    assert set(rows) == set(submitted), (rows.keys(), submitted)  # a failed submit left nothing
    for execution_id in submitted:
        row = team.wait_final(execution_id, 120)
        assert row.status.value == "completed", (row, worker.text())
    assert worker.proc.poll() is None, worker.text()
    # Its heartbeat went on through the cuts: the watchdog (the backstop of procrastinate's
    # side-task monitor, see store/pg/worker.py) never had to register it again.
    assert "registering again" not in worker.text(), worker.text()
    later = team.submit("laptop", doc)
    assert team.wait_final(later, 60).status.value == "completed", worker.text()
