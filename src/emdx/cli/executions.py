"""`emdx exec`: list, show, follow, stats and stop executions."""

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    pass

from emdx.cli.render import console, open_service, print_json
from emdx.errors import EmdxError, InvalidStateError, UsageError
from emdx.format import (
    STATUS_STYLES,
    duration,
    json_dumps,
    log_line,
    markup_safe,
    money,
    one_line,
    plural,
    reason_lines,
    short_time,
    state_note,
)
from emdx.models import ACTIVE_STATUSES, MAX_INT, Execution, ExecutionStatus

app = typer.Typer(help="Watch and control executions.", no_args_is_help=True)

STATUSES = [s.value for s in ExecutionStatus]


def _statuses(status: str | None) -> list[str] | None:
    if status is None:
        return None
    wanted = [s.strip().lower() for s in status.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown or not wanted:
        given = f"unknown status {unknown[0]!r}" if unknown else "--status needs a status"
        raise UsageError(f"{given}; use one of {', '.join(STATUSES)}")
    return wanted


def _table(executions: list[Execution], hold: str | None) -> None:
    from emdx.cli.table import print_table

    # What an active run is doing beyond its status (waiting, retrying, held), when any is.
    notes = {ex.id: state_note(ex, hold) for ex in executions}
    noted = any(notes.values())
    # Team mode: which host runs each (a row no worker took yet has none).
    hosted = any(ex.worker_id is not None for ex in executions)
    rows = []
    for ex in executions:
        doc = f"#{ex.doc_id} {ex.doc_title}" if ex.doc_id is not None else ex.doc_title
        row: tuple[str | tuple[str, str], ...] = (
            str(ex.id),
            doc,
            ex.exec_type,
            (ex.status.value, STATUS_STYLES.get(ex.status.value, "")),
            # A run that never started has no start time (its creation is in `show`).
            short_time(ex.started_at),
            duration(ex.duration_s),
            "-" if ex.exit_code is None else str(ex.exit_code),
            money(ex.cost_usd),
        )
        if hosted:
            row = (*row, (ex.host or "-") if ex.worker_id is not None else "-")
        rows.append((*row, notes[ex.id]) if noted else row)
    headers: tuple[str, ...] = ("id", "document", "type", "status", "started", "duration", "exit")
    headers += ("cost", "host") if hosted else ("cost",)
    print_table((*headers, "note") if noted else headers, rows, right=(0, 5, 6, 7), flexible=1)


@app.command("list")
def exec_list(
    status: str | None = typer.Option(None, "--status", "-s", help="Only these statuses (a,b)."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=MAX_INT, help="At most this many."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List executions, newest first."""
    with open_service(sweep="exec list") as service:
        executions = service.list_executions(_statuses(status), limit)
        hold = service.hold_reason() if any(e.status.is_active for e in executions) else None
    if as_json:
        print_json([e.to_dict() for e in executions])
    elif executions:
        _table(executions, hold)
    else:
        print("no executions")


@app.command("show")
def exec_show(
    ref: str = typer.Argument(..., metavar="ID", help="Execution id (or a migrated text id)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the log until the run ends."),
    lines: int = typer.Option(20, "--lines", "-n", min=0, max=MAX_INT, help="Log lines to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show an execution: its metadata and the tail of its log."""
    with open_service(sweep="exec show") as service:
        execution = service.reconcile(service.get_execution(ref))
        if as_json:
            print_json(execution.to_dict())
            return
        hold = service.hold_reason() if execution.status.is_active else None
        try:
            log: Path | None = service.log_path(execution)
            why_not = ""
        except EmdxError as exc:
            log, why_not = None, str(exc)
        _panel(execution, missing=log is None and not execution.status.is_active, hold=hold)
        if follow:
            for entry in service.follow_execution(execution.id, last=lines):
                print(log_line(entry), flush=True)
            final = service.get_execution(execution.id)
            raise typer.Exit(final.exit_code if final.exit_code is not None else 1)
    if log is None:
        # Shown, not an error: `show` is about the run, and the run was shown.
        print(f"({one_line(why_not)})")
        return
    for entry in service.log_entries(execution, lines) if lines else []:
        print(log_line(entry))


def _panel(ex: Execution, missing: bool = False, hold: str | None = None) -> None:
    from rich.panel import Panel

    note = state_note(ex, hold)
    tokens = f"{ex.input_tokens or 0} in / {ex.output_tokens or 0} out"
    if ex.cache_read_tokens or ex.cache_creation_tokens:
        tokens += (
            f" (cache: {ex.cache_read_tokens or 0} read, {ex.cache_creation_tokens or 0} made)"
        )
    rows = [
        ("status", ex.status.value),
        ("document", f"#{ex.doc_id} {ex.doc_title}"),
        ("type", ex.exec_type),
        ("exit code", "-" if ex.exit_code is None else str(ex.exit_code)),
        ("created", short_time(ex.created_at)),
        ("started", short_time(ex.started_at)),
        ("completed", short_time(ex.completed_at)),
        ("duration", duration(ex.duration_s)),
        ("heartbeat", f"{duration(ex.heartbeat_age_s)} ago" if ex.heartbeat_at else "-"),
        ("runner pid", str(ex.pid or "-")),
        ("agent pid", str(ex.agent_pid or "-")),
        ("session", ex.session_id or "-"),
        ("model", ex.model or "-"),
        ("turns", "-" if ex.num_turns is None else str(ex.num_turns)),
        ("cost", money(ex.cost_usd)),
        ("tokens", tokens),
        ("working dir", ex.working_dir or "-"),
        ("branch", ex.branch or "-"),
        ("log", f"{ex.log_file or '-'}{' (missing)' if missing else ''}"),
    ]
    if note:
        rows.insert(1, ("now", note))
    if ex.attempt > 1:
        rows.insert(2 if note else 1, ("attempt", str(ex.attempt)))
    if ex.claude_code_version:
        rows.insert(rows.index(("model", ex.model or "-")) + 1, ("claude", ex.claude_code_version))
    if ex.old_id:
        rows.insert(0, ("old id", ex.old_id))
    if ex.output_doc_id:
        rows.append(("output doc", f"#{ex.output_doc_id}"))
    if ex.worker_id is not None or ex.job_id is not None:
        # Team mode: where it runs (its pids and paths are that host's), and its job.
        worker = f" (worker #{ex.worker_id})" if ex.worker_id is not None else ""
        where = f"{ex.host or '-'}{worker}" if ex.worker_id is not None else "- (not taken yet)"
        rows.insert(rows.index(("runner pid", str(ex.pid or "-"))), ("host", where))
        rows.append(("job", "-" if ex.job_id is None else str(ex.job_id)))
    style = STATUS_STYLES.get(ex.status.value, "")

    def shown(key: str, value: str) -> str:
        # Every value is user, agent or system text: sanitised, on one line, markup escaped (so
        # `[x]` prints as typed); only the status gets a colour.
        text = markup_safe(one_line(value))
        if key != "status":
            return text
        reason = f" ({markup_safe(one_line(ex.reason))})" if ex.reason else ""
        return (f"[{style}]{text}[/]" if style else text) + reason

    body = "\n".join(f"[bold]{key:>11}[/] {shown(key, value)}" for key, value in rows)
    # Why it ended so: the reason's meaning and fix, the API error, refused tools, errors.
    why = reason_lines(ex)
    if why:
        body += "\n" + "\n".join(f"[bold]{'why' if i == 0 else '':>11}[/] "
                                  f"{markup_safe(line)}" for i, line in enumerate(why))  # fmt: skip
    console().print(Panel(body, title=f"execution #{ex.id}", expand=False))


@app.command("logs")
def exec_logs(
    ref: str = typer.Argument(..., metavar="ID"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the end."),
    raw: bool = typer.Option(
        False, "--raw", help="Print the entries as JSON lines (control characters escaped)."
    ),
) -> None:
    """Print an execution's whole log (an error when it has none)."""
    import sys

    with open_service(sweep="exec logs") as service:
        execution = service.get_execution(ref)
        if follow and execution.status.is_active:
            entries = service.follow_execution(execution.id)
        else:
            # Entry by entry: a capped log is 64 MiB, which read whole took ~460 MB.
            entries = service.iter_log(execution)
        out = sys.stdout
        for entry in entries:
            out.write((json_dumps(entry) if raw else log_line(entry)) + "\n")
            if follow:
                out.flush()
        out.flush()


@app.command("tail")
def exec_tail(ref: str = typer.Argument(..., metavar="ID")) -> None:
    """Follow an execution's log until it ends (= show --follow)."""
    exec_show(ref, follow=True, lines=20, as_json=False)


@app.command("stats")
def exec_stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Totals, success rate, durations, cost and tokens."""
    with open_service(sweep="exec stats") as service:
        stats = service.execution_stats()
    if as_json:
        print_json(stats.to_dict())
        return
    rate = "-" if stats.success_rate is None else f"{stats.success_rate * 100:.1f}%"
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_status.items())) or "none"
    recent = ", ".join(f"{k} {v}" for k, v in sorted(stats.last_24h.items())) or "none"
    by_status, recent = one_line(by_status), one_line(recent)
    print(f"executions: {stats.total} ({by_status})")
    print(f"last 24 h:  {recent}")
    print(f"success:    {rate}")
    print(
        f"duration:   median {duration(stats.median_duration_s)}, "
        f"p95 {duration(stats.p95_duration_s)}"
    )
    print(
        f"cost:       {money(stats.total_cost_usd)} "
        f"({stats.total_input_tokens} tokens in, {stats.total_output_tokens} out)"
    )
    for row in stats.per_type:
        exec_type = one_line(str(row["exec_type"]))
        runs = plural(int(row["runs"]), "run")
        print(f"  {exec_type:<9} {runs:>11}  {money(row['cost_usd'])}")
    spent = f"today:      {money(stats.spent_today_usd)} spent"
    if stats.daily_budget_usd is not None:
        spent += f" of {money(stats.daily_budget_usd)} (EMDX_DAILY_BUDGET_USD)"
    print(spent)
    print(
        f"now:        {stats.running} running, {stats.waiting} waiting, {stats.queued} queued, "
        f"{len(stats.zombies)} zombie"
    )
    if stats.held:
        print(f"held:       {one_line(stats.held)} (queued runs wait)")


@app.command("kill")
def exec_kill(
    ref: str = typer.Argument(..., metavar="ID"),
    force: bool = typer.Option(False, "--force", help="SIGKILL at once, no grace period."),
) -> None:
    """Stop a run: SIGTERM to all its processes, grace period, SIGKILL."""
    with open_service(sweep="exec kill") as service:
        result = service.kill_execution(ref, force=force)
    ex = result.execution
    if result.already_final:
        # Nothing to do for a named run is an invalid state (docs/decisions.md, "CLI").
        raise InvalidStateError(
            f"execution #{ex.id} already {ex.status.value} (exit {ex.exit_code}); nothing to kill"
        )
    how = " (SIGKILL was needed)" if result.needed_sigkill else ""
    print(f"execution #{ex.id} {ex.status.value}, exit {ex.exit_code}{how}")


@app.command("killall")
def exec_killall(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force", help="SIGKILL at once, no grace period."),
) -> None:
    """Stop every running and queued execution."""
    import sys

    with open_service(sweep="exec killall") as service:
        active = service.list_executions([s.value for s in ACTIVE_STATUSES], None)
        if not active:
            print("nothing is running")
            return
        if not yes:
            if sys.stdin is None or not sys.stdin.isatty():
                raise UsageError(
                    f"{plural(len(active), 'execution')} would be killed; confirm with --yes "
                    "(stdin is not a terminal)"
                )
            if not typer.confirm(f"kill {plural(len(active), 'execution')}?", default=False):
                print("nothing killed")
                return
        for ex in active:
            result = service.kill_execution(ex.id, force=force)
            done = result.execution
            ended = "already ended: " if result.already_final else ""
            print(f"execution #{ex.id} {ended}{done.status.value}, exit {done.exit_code}")


@app.command("retry")
def exec_retry(ref: str = typer.Argument(..., metavar="ID")) -> None:
    """Run the same document again with the same options (a new, linked execution)."""
    from emdx.cli.claude import describe_start

    with open_service(sweep="exec retry") as service:
        old = service.get_execution(ref)
        execution = service.retry_execution(old.id)
    print(describe_start(execution))
    # The run asked for: a retried resume is linked to the run whose session it continues.
    again = f"retry of #{old.id}"
    if execution.options.resume_session and execution.parent_execution_id != old.id:
        session = one_line(execution.options.resume_session)
        again += f" (resumes session {session} of #{execution.parent_execution_id})"
    print(f"  {again}; follow: emdx exec show {execution.id} --follow")


@app.command("resume")
def exec_resume(
    ref: str = typer.Argument(..., metavar="ID"),
    prompt: str = typer.Argument(..., help="What to tell the agent next."),
) -> None:
    """Continue a finished run's agent session as a new execution in the same directory."""
    from emdx.cli.claude import describe_start

    if not prompt.strip():
        raise UsageError("give a prompt to continue the session with")

    with open_service(sweep="exec resume") as service:
        execution = service.resume_execution(ref, prompt)
    print(describe_start(execution))
    print(
        f"  resumes session {one_line(execution.options.resume_session or '-')} of "
        f"#{execution.parent_execution_id}; follow: emdx exec show {execution.id} --follow"
    )


# The live views (running, health, monitor) register on this app from their own module.
from emdx.cli import watch as _watch  # noqa: E402, F401
