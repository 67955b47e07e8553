"""The team's PostgreSQL server really restarted (a server of the test's own: `pg_ctl stop -m
fast`, then start) while runs run and others wait: the runs go on to their end with their whole
log, the queued ones start after it, nothing runs twice, the worker keeps working."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import PrivateServer, private_server
from team_helpers import Team, fake_agent_env
from testkit import wait_until

pytestmark = pytest.mark.slow

EVENTS = 120


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    with private_server() as made:
        yield made


@pytest.fixture
def own_team(server: PrivateServer, tmp_path: Path) -> Iterator[Team]:
    made = Team(server.url, tmp_path, fake_agent_env(tmp_path))
    try:
        yield made
    finally:
        made.stop()


def test_a_server_restarted_mid_run_loses_no_run(own_team: Team, server: PrivateServer) -> None:
    team = own_team
    alpha = team.start_worker("alpha", concurrency=2)
    long_doc = team.save("laptop", f"# long\nFAKE:events={EVENTS}\nFAKE:interval=0.1\n")
    running = [team.submit("laptop", long_doc) for _ in range(2)]
    queued = team.submit("laptop", team.save("laptop", "# after\nFAKE:events=3\n"))
    wait_until(
        lambda: all(team.row(run).event_count >= 5 for run in running), 60, message=alpha.text
    )
    assert team.row(queued).status.value == "queued"
    server.stop("fast")  # every session closed, new ones refused: a restart
    server.start()
    for run in [*running, queued]:
        row = team.wait_final(run, 120)
        assert (row.status.value, row.reason) == ("completed", "success"), (
            row,
            alpha.text(),
            server.log()[-3000:],
        )
    assert alpha.proc.poll() is None, alpha.text()
    for run in running:  # the whole log, shipped for every host to read
        shipped = json.dumps(team.events(run))
        steps = {int(n) for n in re.findall(r"step (\d+)", shipped)}
        assert steps == set(range(EVENTS)), sorted(set(range(EVENTS)) - steps)
    taken = collections.Counter(
        line.split(":")[0] for line in alpha.text().splitlines() if ": started (supervisor" in line
    )
    assert all(count == 1 for count in taken.values()) and len(taken) == 3, alpha.text()
    health = team.cli("laptop", "exec", "health")
    assert health.code == 0, health.stdout + health.stderr
