"""What a team database outage does to a running run: one line per outage length.

Usage: python bench/outage.py [SECONDS ...] [--hang]   (default: 5 20 60, connections refused)
A worker (heartbeat 0.5 s) runs one long fake-agent run while another waits queued; the proxy of
tests/support/pg_proxy.py takes the database away for SECONDS (new connections refused, or left
hanging with --hang), then brings it back. Printed: how each run ended, how much of the long
run's log reached the team's copy, how many times it was started, what the worker said.
Figures, never assertions; needs the PostgreSQL server of the tests (EMDX_TEST_PG_URL).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "support"), str(REPO / "src")]

from pg_proxy import PgProxy  # noqa: E402
from team_helpers import Team, fake_agent_env, team_database  # noqa: E402
from testkit import wait_until  # noqa: E402

INTERVAL_S = 0.1


def measure(seconds: float, mode: str, root: Path) -> str:
    steps = int((seconds + 15) / INTERVAL_S)
    with team_database() as url, PgProxy(url, mode) as proxy:
        team = Team(proxy.url, root, fake_agent_env(root))
        try:
            worker = team.start_worker("alpha")
            doc = team.save("laptop", f"# long\nFAKE:events={steps}\nFAKE:interval={INTERVAL_S}\n")
            run = team.submit("laptop", doc)
            queued = team.submit("laptop", team.save("laptop", "# queued\n"))
            wait_until(lambda: team.row(run).event_count >= 3, 60, message=worker.text)
            with proxy.outage():
                time.sleep(seconds)  # the outage itself
            first = team.cli("laptop", "exec", "list")  # the first command after it
            ended = []
            for execution_id in (run, queued):
                try:
                    row = team.wait_final(execution_id, seconds + 60)
                    ended.append(f"{row.status.value}/{row.exit_code}/{row.reason}")
                except BaseException:
                    ended.append(f"{team.row(execution_id).status.value} (not final)")
            events = team.events(run)
            shipped = sum(1 for e in events if '"step ' in json.dumps(e))
            starts = sum("taken by worker" in str(e.get("message")) for e in events)
            said = [line for line in worker.text().splitlines() if not line.startswith("execution")]
            return (
                f"{seconds:g}s {mode}: run {ended[0]}, log {shipped}/{steps} steps shipped, "
                f"started {starts}x; queued run {ended[1]}; first command exit {first.code}; "
                f"worker: {' | '.join(said[1:]) or '-'}"
            )
        finally:
            team.stop()


def main(argv: list[str]) -> None:
    mode = "hang" if "--hang" in argv else "refuse"
    lengths = [float(a) for a in argv if not a.startswith("--")] or [5.0, 20.0, 60.0]
    for seconds in lengths:
        with tempfile.TemporaryDirectory(prefix="emdx-outage-") as tmp:
            print(measure(seconds, mode, Path(tmp)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
