"""`emdx worker` and `emdx workers`: team mode's hosts (DESIGN §9)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from emdx.service import Service


def worker(
    concurrency: int = typer.Option(1, "--concurrency", "-c", help="Runs at once on this host."),
    queue: list[str] = typer.Option(
        [], "--queue", "-q", help="A queue to take runs from (repeatable; default: emdx)."
    ),
    name: str | None = typer.Option(None, "--name", help="This worker's name (default: host-pid)."),
    repo: list[Path] = typer.Option(
        [], "--repo", help="A repository this host holds: its --worktree runs come here."
    ),
) -> None:
    """Run the team's queued executions on this host until Ctrl-C (team mode)."""
    import sys

    from emdx.format import one_line

    def say(line: str) -> None:
        print(one_line(line), flush=True)

    if concurrency < 1:
        from emdx.errors import UsageError

        raise UsageError("--concurrency must be at least 1")
    from emdx.service.preparing import worker_config

    # Checked before the database is opened (and migrated): a wrong --repo touches nothing.
    config = worker_config(name, queue, repo, concurrency)
    with _service_once_reachable(say) as service:
        service.serve_worker(config, say)
    sys.stdout.flush()


# A worker started while the team's database is away (a host that boots before the network,
# a server restarting) waits for it, trying again this often; what the server refuses for good
# (no such database or role, a password refused: PostgreSQL's own words) ends it at once.
WAIT_FOR_DATABASE_S = 2.0
_REFUSED_FOR_GOOD = ("does not exist", "authentication failed", "pg_hba.conf")


def _service_once_reachable(say: Callable[[str], None]) -> Service:
    import time

    from emdx.cli.render import open_service
    from emdx.errors import StoreUnavailable

    said = False
    while True:
        service = open_service()
        try:
            service.open()
            if said:
                say("the team's database answers")
            return service
        except StoreUnavailable as exc:
            service.close()
            if any(words in str(exc) for words in _REFUSED_FOR_GOOD):
                raise
            if not said:
                say(f"waiting for the team's database ({exc}); Ctrl-C gives up")
                said = True
        # Paces the next try; nothing to wait on but time.
        time.sleep(WAIT_FOR_DATABASE_S)


def workers(
    all_: bool = typer.Option(False, "--all", help="Stopped and lost workers too."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The team's workers: name, host, heartbeat age, running runs, queues."""
    from emdx.cli.render import open_service, print_json
    from emdx.cli.table import print_table

    with open_service(sweep="workers") as service:
        found = service.workers(include_gone=all_)
    if as_json:
        print_json([w.to_dict() for w in found])
        return
    if not found:
        print("no workers" + ("" if all_ else " alive (--all shows stopped and lost ones)"))
        return
    rows = []
    for w in found:
        state = "alive" if w.alive else "stopped" if w.stopped else "lost"
        age = "-" if w.heartbeat_age_s is None else f"{w.heartbeat_age_s:.0f}s"
        rows.append(
            [
                w.name,
                w.host,
                state,
                age,
                f"{w.running}/{w.concurrency}",
                ", ".join(w.queues),
            ]
        )
    print_table(
        ("name", "host", "state", "heartbeat", "running", "queues"), rows, right=(3, 4), flexible=5
    )


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("workers")(workers)
