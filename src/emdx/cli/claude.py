"""`emdx claude`: execute a document through Claude Code, and check the environment for it."""

import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from emdx.service import Service

from emdx.cli.render import error, open_service, parse_duration, print_json
from emdx.errors import InvalidStateError, UsageError
from emdx.format import branch_note, log_line, one_line, plural
from emdx.models import DEFAULT_STALL_TIMEOUT_S, MAX_INT, ExecOptions, Execution

app = typer.Typer(help="Run documents through Claude Code.", no_args_is_help=True)


def describe_start(execution: Execution) -> str:
    where = one_line(execution.working_dir or "-")
    kind = one_line(execution.exec_type)
    if execution.status.value == "queued":
        if execution.options.after_id:
            waiting = f"after execution #{execution.options.after_id}"
        elif execution.job_id is not None:
            waiting = f"for a worker (job {execution.job_id})"
        else:
            waiting = "for a free slot (EMDX_MAX_PARALLEL)"
        return f"queued execution #{execution.id} ({kind}) — waiting {waiting}"
    text = (
        f"{execution.status.value} execution #{execution.id} ({kind}) "
        f"for document #{execution.doc_id}: {one_line(execution.doc_title)}\n"
        f"  working dir: {where}"
    )
    if execution.branch:
        text += f"\n  {branch_note(execution)}"
    return text


def not_started(service: "Service", execution: Execution) -> str:
    """Why a run that ended as it was created did not start."""
    text = (
        f"execution #{execution.id} did not start: {execution.status.value} "
        f"({execution.reason}, exit {execution.exit_code})"
    )
    after = execution.options.after_id
    if after is not None:
        dependency = service.get_execution(after)
        text += f"; it was to run after execution #{after}, which {dependency.status.value}"
    return text


def summary_line(execution: Execution) -> str:
    cost = f", ${execution.cost_usd:.4f}" if execution.cost_usd is not None else ""
    turns = f", {plural(execution.num_turns, 'turn')}" if execution.num_turns is not None else ""
    duration = execution.duration_s
    took = f" in {duration:.1f}s" if duration is not None else ""
    return (
        f"execution #{execution.id} {execution.status.value}{took} "
        f"(exit {execution.exit_code}, {one_line(str(execution.reason))}{turns}{cost})"
    )


@app.command("execute")
def execute(
    doc_id: int = typer.Argument(..., metavar="DOC", help="Document id."),
    background: bool = typer.Option(False, "--background", "-b", help="Start and return."),
    tools: str | None = typer.Option(None, "--tools", help="Comma-separated allowed tools."),
    smart: bool = typer.Option(True, "--smart/--no-smart", help="Pick the run type from tags."),
    worktree: bool | None = typer.Option(
        None,
        "--worktree/--no-worktree",
        help="Run in a git worktree on branch exec-<id>-<slug> (default: gameplans in a repo).",
    ),
    timeout: str | None = typer.Option(None, "--timeout", help="Wall-clock limit (e.g. 30m)."),
    stall_timeout: str | None = typer.Option(
        None, "--stall-timeout", help="Stop when the agent says nothing this long [default: 30m]."
    ),
    model: str | None = typer.Option(None, "--model", help="Model name passed to Claude Code."),
    max_turns: int | None = typer.Option(
        None, "--max-turns", min=1, max=MAX_INT, help="Turn limit."
    ),
    after: int | None = typer.Option(None, "--after", help="Start after this run completes."),
    max_budget_usd: float | None = typer.Option(
        None, "--max-budget-usd", min=0.0, help="Stop the run once it has cost this much (USD)."
    ),
    wait_limit: bool = typer.Option(
        True,
        "--wait-limit/--no-wait-limit",
        help="On a usage limit, wait for its reset and resume the session (default), or fail.",
    ),
    retries: int = typer.Option(
        0,
        "--retries",
        min=0,
        max=20,
        help="Retry an overloaded / server-error / rate-limited ending this many times.",
    ),
    queue: str | None = typer.Option(
        None, "--queue", help="Team mode: the workers' queue to run on (default: emdx)."
    ),
    priority: int = typer.Option(
        0, "--priority", min=-1000, max=1000, help="Team mode: higher starts first."
    ),
) -> None:
    """Execute a document with Claude Code, supervised; foreground unless --background."""
    tool_list = None
    if tools is not None:
        tool_list = tuple(t.strip() for t in tools.split(",") if t.strip())
        if not tool_list:
            raise UsageError("--tools needs at least one tool name")
    options = ExecOptions(
        tools=tool_list,
        smart=smart,
        worktree=worktree,
        timeout_s=parse_duration(timeout),
        stall_timeout_s=parse_duration(stall_timeout) or DEFAULT_STALL_TIMEOUT_S,
        model=model,
        max_turns=max_turns,
        after_id=after,
        max_budget_usd=max_budget_usd,
        wait_limit=wait_limit,
        retries=retries,
        queue=queue.strip() if queue and queue.strip() else None,
        priority=priority,
    )
    with open_service() as service:
        execution = service.start_execution(doc_id, options)
        if execution.status.is_final:
            # It ended at once (its --after dependency had failed): a start that did not
            # happen is an error, not a success (docs/decisions.md, "CLI").
            raise InvalidStateError(not_started(service, execution))
        print(describe_start(execution), file=sys.stderr if not background else sys.stdout)
        if background:
            if execution.status.is_active:
                print(f"  follow it: emdx exec show {execution.id} --follow")
            return
        final = follow_to_end(service, execution.id)
    print(summary_line(final), file=sys.stderr)
    raise typer.Exit(final.exit_code if final.exit_code is not None else 1)


def follow_to_end(service: "Service", execution_id: int) -> Execution:
    """Print the run's log until it ends; Ctrl-C kills the run (and still waits for its end)."""
    try:
        for entry in service.follow_execution(execution_id):
            print(log_line(entry), flush=True)
    except KeyboardInterrupt:
        error(f"interrupted: killing execution #{execution_id}")
        service.kill_execution(execution_id)
    return service.wait_for_final(execution_id, 60.0)


@app.command("check-env")
def check_env(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show passing checks' details."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check that Claude Code, Node, git, Python and the data directory are ready."""
    from emdx.service import preflight

    checks = preflight.full_report()
    ready = all(c.ok for c in checks if c.required)
    if as_json:
        print_json({"ready": ready, "checks": [c.to_dict() for c in checks]})
    else:
        for check in checks:
            mark = "✅" if check.ok else ("❌" if check.required else "⚠️")
            line = f"{mark} {check.name}"
            if verbose or not check.ok:
                # Details quote what the agent binary printed (its --version output).
                line += f": {check.detail}"
            print(one_line(line))
            if check.fix and not check.ok:
                print(f"   fix: {one_line(check.fix)}")
        print("ready" if ready else "not ready")
    raise typer.Exit(0 if ready else 1)
