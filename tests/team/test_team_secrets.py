"""The team's database URL (with its password) as a hostile agent sees the processes around it:
neither the worker, nor the supervisor, nor a foreground `claude execute` that follows the run
shows it in /proc/PID/environ or /proc/PID/cmdline (issue 14), whether it was given with
`--db URL` or EMDX_DATABASE_URL. What stays readable is in docs/decisions.md (memory)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from team_helpers import Team, fake_agent_env, team_database, with_password

pytestmark = pytest.mark.slow


@pytest.fixture(params=["--db", "EMDX_DATABASE_URL"])
def secret_team(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Team, str]]:
    """A team whose URL holds a password (unique to the test), given one way or the other."""
    password = f"s3cret-{secrets.token_hex(8)}"
    with team_database() as url:
        team = Team(with_password(url, password), tmp_path, fake_agent_env(tmp_path))
        team.url_by_flag = request.param == "--db"
        try:
            yield team, password
        finally:
            team.stop()


def _ours(report: dict[str, Any], team: Team, marker: str) -> list[str]:
    """This test's processes whose command line holds `marker` (other tests run beside it)."""
    return [
        pid
        for pid, seen in report["processes"].items()
        if marker in (seen["cmdline"] or "") and str(team.root) in (seen["environ"] or "")
    ]


def test_no_emdx_process_shows_the_team_database_url(secret_team: tuple[Team, str]) -> None:
    team, password = secret_team
    worker = team.start_worker("alpha")
    scan = team.root / "scan.json"
    doc = team.save("laptop", f"# scan\nFAKE:proc-scan={scan}\n")
    ran = team.cli("laptop", "claude", "execute", str(doc), timeout=120)  # follows the run
    assert ran.code == 0, ran.stderr + worker.text()
    report = json.loads(scan.read_text())
    # The scan is not vacuous: the agent walked up to the worker, and read the environment and
    # command line of the worker, of its supervisor and of the command following the run.
    assert worker.proc.pid in report["ancestors"], report["ancestors"]
    for marker in ("worker\n--name\nw-alpha", "emdx.runner", "claude\nexecute"):
        assert len(_ours(report, team, marker)) == 1, marker
    leaks = [
        f"{pid} {what}: {(seen['cmdline'] or '').split()[:6]}"
        for pid, seen in report["processes"].items()
        for what in ("environ", "cmdline")
        if password in (seen[what] or "")
    ]
    assert leaks == [], leaks
    # Nor is the agent handed the URL, the variable that names its pipe, or the pipe itself.
    assert not {"EMDX_DATABASE_URL", "EMDX_DATABASE_URL_FD"} & set(report["own_env"])
    pipes = {fd: link for fd, link in report["own_fds"].items() if int(fd) > 2 and "pipe" in link}
    assert pipes == {}, report["own_fds"]
