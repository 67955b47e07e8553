"""`emdx exec running|health|monitor`: the live views of active runs (commands of `emdx exec`)."""

import contextlib
from typing import TYPE_CHECKING

import typer

from emdx.cli.executions import app
from emdx.cli.render import console, open_service, print_json
from emdx.format import STATUS_STYLES, duration, markup_safe, one_line

if TYPE_CHECKING:
    from emdx.service import Service


@app.command("running")
def exec_running(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Running and queued executions, with heartbeat age and liveness."""
    with open_service(sweep="exec running") as service:
        rows = [(ex, service.judge(ex)) for ex in service.active_executions()]
    if as_json:
        print_json(
            [
                {
                    **ex.to_dict(),
                    "runner_alive": j.runner_alive,
                    "verdict": j.verdict.value,
                    "heartbeat_age_s": j.heartbeat_age_s,
                }
                for ex, j in rows
            ]
        )
        return
    if not rows:
        print("nothing is running")
        return
    for ex, j in rows:
        age = j.heartbeat_age_s
        beat = f"{duration(age)} ago" if age is not None and ex.heartbeat_at else "none yet"
        print(
            f"#{ex.id:<6} {ex.status.value:<9} {duration(ex.duration_s):>7}  "
            f"heartbeat {beat:<10} {j.verdict.value:<12} {one_line(ex.doc_title)}"
        )


WIDE_MONITOR = 120
"""Terminal columns from which `exec monitor` shows runner and agent figures apart."""


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.0f} MB"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


@app.command("health")
def exec_health(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check every active run: supervisor and agent alive (pid + start time), heartbeat fresh.

    Zombie executions (supervisor gone) are marked failed (runner_lost) and their leftover
    processes killed. Exits 1 when anything was unhealthy.
    """
    with open_service() as service:
        # Judged before the sweep, so that what was wrong is reported, then repaired.
        report = service.health()
        swept = service.sweep("`emdx exec health`")
    unhealthy = [h for h in report if not h.healthy]
    repairs = swept.describe()
    if as_json:
        print_json(
            {
                "healthy": not unhealthy and not repairs,
                "runs": [h.to_dict() for h in report],
                "repairs": repairs,
            }
        )
    elif not report:
        print("no active executions")
    else:
        for h in report:
            runner = h.runner
            agent = h.agent
            mark = "✅" if h.healthy else "❌"
            beat = "-" if h.heartbeat_age_s is None else f"{h.heartbeat_age_s:.0f}s"
            if h.remote:
                where = one_line(h.judgement.detail or f"on {h.execution.host}")
                print(f"{mark} #{h.execution.id} {h.verdict:<12} heartbeat {beat:>5}  {where}")
                continue
            line = (
                f"{mark} #{h.execution.id} {h.verdict:<12} heartbeat {beat:>5}  "
                f"runner {'up' if h.runner_alive else 'gone'} "
                f"{_pct(runner.cpu_percent if runner else None)} "
                f"{_mb(runner.rss_bytes if runner else None)}  "
                f"agent {'up' if h.agent_alive else 'gone'} "
                f"{_pct(agent.cpu_percent if agent else None)} "
                f"{_mb(agent.rss_bytes if agent else None)} "
                f"children {agent.num_children if agent else 0}"
            )
            print(line)
            if h.repaired is not None:
                print(
                    f"   repaired: now {h.repaired.status.value} "
                    f"(exit {h.repaired.exit_code}, {one_line(str(h.repaired.reason))})"
                )
    if not as_json:
        for line in repairs:
            print(f"❌ {line}")
    raise typer.Exit(1 if unhealthy or repairs else 0)


@app.command("monitor")
def exec_monitor(
    interval: float = typer.Option(
        2.0, "--interval", "-i", min=0.2, max=86400, help="Seconds per refresh."
    ),
) -> None:
    """A live table of active runs with CPU and memory, until Ctrl-C."""
    from rich import box
    from rich.live import Live
    from rich.table import Table

    out = console()

    def render(service: "Service") -> Table:
        report = service.health(interval_s=min(0.5, interval / 2))
        # Below 120 columns the runner's and the agent's figures are summed into one CPU and
        # one memory column: ten columns at 80 wrapped every cell into an unreadable column.
        wide = out.width >= WIDE_MONITOR
        figures = ("runner cpu", "runner mem", "agent cpu", "agent mem") if wide else ("cpu", "mem")
        headers = ("id", "status", "verdict", "runtime", "beat", *figures)
        rows: list[tuple[str, str, tuple[str, ...]]] = []  # document, status style, the rest
        cpu = 0.0
        mem = 0
        for h in report:
            ex = h.repaired or h.execution
            procs = [p for p in (h.runner, h.agent) if p is not None]
            run_cpu = sum(p.cpu_percent or 0 for p in procs) if procs else None
            run_mem = sum(p.rss_bytes or 0 for p in procs) if procs else None
            cpu += run_cpu or 0
            mem += run_mem or 0
            numbers: tuple[str, ...] = (
                (
                    _pct(h.runner.cpu_percent if h.runner else None),
                    _mb(h.runner.rss_bytes if h.runner else None),
                    _pct(h.agent.cpu_percent if h.agent else None),
                    _mb(h.agent.rss_bytes if h.agent else None),
                )
                if wide
                else (_pct(run_cpu), _mb(run_mem))
            )
            beat = "-" if h.heartbeat_age_s is None else f"{h.heartbeat_age_s:.0f}s"
            cells = (str(ex.id), ex.status.value, str(h.verdict), duration(ex.duration_s), beat)
            rows.append((one_line(ex.doc_title), ex.status.value, (*cells, *numbers)))
        table = Table(
            title=f"emdx executions · refresh {interval:g}s · Ctrl-C to quit",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        # Every column but the document's is as wide as its widest cell, never cut: the title
        # takes what is left and is cut with an ellipsis.
        widths = [max([len(name)] + [len(r[2][i]) for r in rows]) for i, name in enumerate(headers)]
        # Each column is padded one space a side and one apart (no edges): 3 a column.
        left = max(8, out.width - sum(widths) - 3 * len(headers) - 1)
        for index, name in enumerate(headers):
            if index == 1:
                table.add_column("document", max_width=left, no_wrap=True, overflow="ellipsis")
            numeric = index == 0 or index >= 5
            table.add_column(
                name, justify="right" if numeric else "left", no_wrap=True, min_width=widths[index]
            )
        for title, status, texts in rows:
            style = STATUS_STYLES.get(status, "")
            shown = [markup_safe(text) for text in texts]
            if style:
                shown[1] = f"[{style}]{shown[1]}[/]"
            table.add_row(shown[0], markup_safe(title), *shown[1:])
        if not report:
            table.add_row("-", "nothing is running", *([""] * (len(headers) - 1)))
        table.caption = f"{len(report)} active · total CPU {cpu:.0f}% · memory {_mb(mem)}"
        return table

    import time

    # Ctrl-C is how a monitor ends, at any moment (also while its first screen is drawn).
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_service(sweep="exec monitor") as service,
        Live(render(service), console=out, auto_refresh=False) as live,
    ):
        while True:
            time.sleep(interval)
            live.update(render(service), refresh=True)
