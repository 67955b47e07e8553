"""Team mode through a real outage of its database (`pg_proxy`: every connection closed, new
ones refused or left hanging, for longer than procrastinate's pool tolerated): the worker, the
supervisors and the commands ride it out — runs go on and catch up, nothing is judged lost
because everyone was cut off — and a run cut off past the outage tolerance ends with its
reason. Also procrastinate's side-task monitor (the root cause of the flapping wedge)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults_helpers import one_error_line
from pg_proxy import PgProxy
from team_helpers import Team, fake_agent_env, team_database
from testkit import run_emdx, wait_until

from emdx.models import Execution

pytestmark = pytest.mark.slow


@pytest.fixture
def cut_team(tmp_path: Path) -> Iterator[tuple[Team, PgProxy]]:
    """A team whose every process (workers, supervisors, commands) reaches the database through
    a proxy the test takes down."""
    with team_database() as url, PgProxy(url) as proxy:
        made = Team(proxy.url, tmp_path, fake_agent_env(tmp_path))
        try:
            yield made, proxy
        finally:
            proxy.up()
            made.stop()


def _taken(team: Team, execution_id: int) -> int:
    return sum("taken by worker" in str(e.get("message")) for e in team.events(execution_id))


def _outage(proxy: PgProxy, seconds: float) -> None:
    """The database away for `seconds` (the sleep *is* the outage: it waits for nothing)."""
    with proxy.outage():
        time.sleep(seconds)


def _going(team: Team, execution_id: int) -> Execution | None:
    row = team.row(execution_id)
    return row if row.agent_pid and row.event_count >= 3 else None


def test_runs_ride_out_a_database_outage(cut_team: tuple[Team, PgProxy]) -> None:
    """20 s without the database mid-run (main's worker stopped its runs after 4 s): the run
    completes with its whole log, started once; a kill from another host right after the
    outage works; a run queued before the outage starts after it."""
    team, proxy = cut_team
    worker = team.start_worker("alpha", concurrency=2)
    steps = 300  # 30 s of agent events
    survivor = team.submit("laptop", team.save("laptop", f"# long\nFAKE:events={steps}\n"
                                                      "FAKE:interval=0.1\n"))  # fmt: skip
    doomed = team.submit("laptop", team.save("laptop", "# killed\nFAKE:events=600\n"
                                                    "FAKE:interval=0.1\n"))  # fmt: skip
    for run in (survivor, doomed):
        wait_until(lambda run=run: _going(team, run), 60, message=worker.text)  # type: ignore[misc]
    queued = team.submit("laptop", team.save("laptop", "# after the outage\n"))
    assert team.row(queued).status.value == "queued"

    import psycopg

    with proxy.outage():
        # Meanwhile, what a worker starting first after an outage does: alpha's registration
        # pruned as stalled (its jobs unlinked). Its next beat restores it.
        with psycopg.connect(proxy.target_url, autocommit=True) as server:
            server.execute("DELETE FROM procrastinate_workers")
        time.sleep(20)  # the outage itself

    # Another worker starting right after the outage; the first command judges nobody lost
    # (every heartbeat is 20 s old).
    team.start_worker("gamma", queues=("elsewhere",))
    health = team.cli("laptop", "exec", "list")
    assert health.code == 0, health.stderr
    assert all(team.row(i).reason != "host_lost" for i in (survivor, doomed)), health.stdout
    killed = team.cli("laptop", "exec", "kill", str(doomed))
    assert killed.code == 0, killed.stderr + worker.text()
    row = team.row(doomed)
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 143, "killed_by_user")

    done = team.wait_final(survivor, 90)
    assert (done.status.value, done.reason) == ("completed", "success"), (done, worker.text())
    assert _taken(team, survivor) == 1 and done.attempt == 1
    log = json.dumps(team.events(survivor))
    assert f"step {steps - 1}" in log and "finished: completed" in log, log[-2000:]
    assert "reach the database again" in log  # the supervisor says it rode an outage out
    after = team.wait_final(queued, 60)
    assert after.status.value == "completed" and _taken(team, queued) == 1
    assert "the worker kept its runs" in worker.text(), worker.text()
    assert "registering again" not in worker.text(), worker.text()
    assert worker.proc.poll() is None and "Traceback" not in worker.text(), worker.text()
    assert "was pruned meanwhile: restored" in worker.text(), worker.text()
    # Every job ends as its run did (none left "doing" by the outage; its worker writes the
    # end just after the run's).

    def jobs() -> list[tuple[int, str]]:
        with psycopg.connect(proxy.url, autocommit=True) as conn:
            found = conn.execute("SELECT id, status FROM procrastinate_jobs ORDER BY id")
            return [(int(i), str(s)) for i, s in found.fetchall()]

    wait_until(lambda: all(s != "doing" for _, s in jobs()), 30, message=lambda: str(jobs()))
    assert [s for _, s in jobs()] == ["succeeded", "aborted", "succeeded"], jobs()


def test_a_run_cut_off_past_the_outage_tolerance_ends_database_lost(
    cut_team: tuple[Team, PgProxy],
) -> None:
    """12 s of a failover (connects hang): a run cut off past its (short) outage tolerance
    ends failed/database_lost, and the worker takes the next runs."""
    team, proxy = cut_team
    worker = team.start_worker("alpha", extra={"EMDX_OUTAGE_TOLERANCE_SECONDS": "4"})
    run = team.submit("laptop", team.save("laptop", "# long\nFAKE:events=900\nFAKE:interval=0.1\n"))
    wait_until(lambda: _going(team, run), 60, message=worker.text)
    proxy.mode = "hang"  # a failover: connects wait, nothing answers
    _outage(proxy, 12)
    row = team.wait_final(run, 60)
    assert (row.status.value, row.reason) == ("failed", "database_lost"), (row, worker.text())
    shown = team.cli("laptop", "exec", "show", str(run))
    assert "EMDX_OUTAGE_TOLERANCE_SECONDS" in shown.stdout, shown.stdout
    later = [team.submit("laptop", team.save("laptop", "# after\n")) for _ in range(2)]
    assert all(team.wait_final(i, 60).status.value == "completed" for i in later), worker.text()
    assert worker.proc.poll() is None and "Traceback" not in worker.text(), worker.text()


def test_a_failed_side_task_stops_the_worker_even_without_periodic_tasks(
    tmp_path: Path,
) -> None:
    """procrastinate 3.10's monitor stops watching the side tasks once one returns — the
    periodic deferrer does at once without periodic tasks — so a heartbeat that died of one
    failed query left the worker running without one (the flapping wedge). emdx's worker
    watches them all."""
    import procrastinate
    from procrastinate import worker as stock

    from emdx.store import open_store
    from emdx.store.pg import fixes

    async def heartbeat_dies(worker_class: type[Any], url: str) -> bool:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
        async with app.open_async():
            worker = worker_class(
                app, update_heartbeat_interval=0.1, install_signal_handlers=False,
                listen_notify=False, fetch_job_polling_interval=0.1,
            )  # fmt: skip

            async def fails(worker_id: int) -> None:
                raise procrastinate.exceptions.ConnectorException("connection lost")

            app.job_manager.update_heartbeat = fails  # type: ignore[method-assign]
            task = asyncio.create_task(worker.run())
            done, _ = await asyncio.wait({task}, timeout=3)
            if not done:
                worker.stop()
                await asyncio.wait({task}, timeout=5)
            return bool(done)

    with team_database() as url:
        open_store(url).close()  # the schema
        assert asyncio.run(heartbeat_dies(fixes.Worker, url))  # stopped: it restarts
        # procrastinate's own goes on without its heartbeat (if this changes, drop ours).
        assert not asyncio.run(heartbeat_dies(stock.Worker, url))


def test_the_proxy_is_a_real_outage(tmp_path: Path) -> None:
    import psycopg

    with team_database() as url, PgProxy(url) as proxy:
        with psycopg.connect(proxy.url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            proxy.down()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(proxy.url, connect_timeout=2)
            proxy.up()
        with psycopg.connect(proxy.url, autocommit=True, connect_timeout=5) as again:
            assert again.execute("SELECT 1").fetchone() == (1,)


def test_a_worker_started_while_the_database_is_away_waits_for_it(
    cut_team: tuple[Team, PgProxy],
) -> None:
    """`emdx worker` on a host that comes up before the team's database (main exited at once,
    error and all): it says it waits, registers once the database answers, and runs the queue.
    A database that does not exist is no outage: that worker ends at once, one line."""
    team, proxy = cut_team
    run = team.submit("laptop", team.save("laptop", "# queued\nFAKE:events=2\n"))
    proxy.down()
    out = team.root / f"w-alpha-{len(team.workers)}.out"

    def bring_back() -> None:
        wait_until(
            lambda: out.exists() and "waiting for the team's database" in out.read_text(), 60
        )
        proxy.up()

    back = threading.Thread(target=bring_back)
    back.start()
    try:
        alpha = team.start_worker("alpha")
    finally:
        back.join()
    assert alpha.text().count("waiting for the team's database") == 1, alpha.text()
    assert team.wait_final(run).status.value == "completed", alpha.text()
    missing = proxy.url.rsplit("/", 1)[0] + "/emdx_no_such_database"
    ended = run_emdx("worker", env=team.env("beta", {"EMDX_DATABASE_URL": missing}), timeout=60)
    assert ended.code == 1 and "does not exist" in one_error_line(ended.stderr), ended
