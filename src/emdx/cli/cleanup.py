"""`emdx cleanup`: repair stuck rows, kill orphaned processes, remove old dirs and branches."""

import sys
from typing import TYPE_CHECKING

import typer

from emdx.cli.render import open_service, parse_duration, print_json
from emdx.errors import UsageError
from emdx.format import plural

if TYPE_CHECKING:
    from emdx.service.cleanup import Action

app = typer.Typer(
    help="Clean up after executions (every command has --dry-run).", no_args_is_help=True
)

DRY_RUN = typer.Option(False, "--dry-run", "-n", help="Show what would be done; change nothing.")
AS_JSON = typer.Option(False, "--json", help="Print JSON.")


FAILED = ("failed", "no permission")


def show(actions: "list[Action]", as_json: bool, dry_run: bool, title: str) -> None:
    """The actions as a table (or JSON); exit 1 after it when any of them failed."""
    _print(actions, as_json, dry_run, title)
    if any(a.result in FAILED for a in actions):
        raise typer.Exit(1)


def _print(actions: "list[Action]", as_json: bool, dry_run: bool, title: str) -> None:
    if as_json:
        print_json({"dry_run": dry_run, "actions": [a.to_dict() for a in actions]})
        return
    if not actions:
        print(f"{title}: nothing to do")
        return
    from emdx.cli.table import print_table

    colours = {"done": "green", "would do": "cyan", "failed": "red", "no permission": "red"}
    rows = [(a.kind, a.target, a.detail, (a.result, colours.get(a.result, ""))) for a in actions]
    heading = f"{title}{' (dry run: nothing changed)' if dry_run else ''}"
    # The detail is why something was done or kept: wrapped, never cut, at any width.
    print_table(("what", "target", "detail", "result"), rows, flexible=2, wrap=True, title=heading)


def _confirmed(question: str, yes: bool) -> bool:
    if yes:
        return True
    if sys.stdin is None or not sys.stdin.isatty():
        return False
    return typer.confirm(question, default=False)


@app.command("processes")
def cleanup_processes(dry_run: bool = DRY_RUN, as_json: bool = AS_JSON) -> None:
    """Zombie executions, orphaned agent processes (by their EMDX_EXECUTION_ID marker) and runs
    past their timeout: kill what must die (whole tree) and fix the rows."""
    with open_service() as service:
        show(service.cleanup_processes(dry_run), as_json, dry_run, "processes")


@app.command("executions")
def cleanup_executions(
    timeout: str = typer.Option("30m", "--timeout", help="Only rows running longer than this."),
    dry_run: bool = DRY_RUN,
    as_json: bool = AS_JSON,
) -> None:
    """Rows still `running` past --timeout with no live process → failed (124, stuck)."""
    seconds = parse_duration(timeout, allow_zero=True) or 0.0
    with open_service() as service:
        show(service.cleanup_executions(seconds, dry_run), as_json, dry_run, "executions")


@app.command("dirs")
def cleanup_dirs(
    older_than: str = typer.Option("7d", "--older-than", help="Finished at least this long ago."),
    dry_run: bool = DRY_RUN,
    as_json: bool = AS_JSON,
) -> None:
    """Remove run directories and worktrees of finished runs, and directories with no row."""
    seconds = parse_duration(older_than, allow_zero=True) or 0.0
    with open_service() as service:
        show(service.cleanup_dirs(seconds, dry_run), as_json, dry_run, "dirs")


@app.command("branches")
def cleanup_branches(
    force: bool = typer.Option(False, "--force", help="Also delete unmerged exec-* branches."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dry_run: bool = DRY_RUN,
    as_json: bool = AS_JSON,
) -> None:
    """List exec-* branches (merged? in use?) and delete merged ones, worktrees first."""
    with open_service() as service:
        plan = service.cleanup_branches(force=force, dry_run=True)
        doomed = [a for a in plan if a.result == "would do"]
        if dry_run or not doomed:
            # Nothing deletable is no dry run: say which one the user asked for.
            show(plan, as_json, dry_run, "branches")
            return
        if not _confirmed(f"delete {plural(len(doomed), 'branch', 'branches')}?", yes):
            if sys.stdin is None or not sys.stdin.isatty():
                raise UsageError(
                    f"{plural(len(doomed), 'branch', 'branches')} would be deleted; confirm "
                    "with --yes (stdin is not a terminal)"
                )
            print("nothing deleted")
            return
        show(service.cleanup_branches(force=force), as_json, False, "branches")


@app.command("all")
def cleanup_all(
    dry_run: bool = DRY_RUN,
    force: bool = typer.Option(False, "--force", help="Also delete unmerged exec-* branches."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete branches without asking."),
    timeout: str = typer.Option("30m", "--timeout", help="Stuck-row age for `executions`."),
    older_than: str = typer.Option("7d", "--older-than", help="Directory age for `dirs`."),
    as_json: bool = AS_JSON,
) -> None:
    """processes → executions → dirs → branches, with one summary."""
    from emdx.service.cleanup import Action

    stuck_s = parse_duration(timeout, allow_zero=True) or 0.0
    dir_s = parse_duration(older_than, allow_zero=True) or 0.0
    actions: list[Action] = []
    with open_service() as service:
        actions += service.cleanup_processes(dry_run)
        actions += service.cleanup_executions(stuck_s, dry_run)
        actions += service.cleanup_dirs(dir_s, dry_run, keep_going=True)
        repo = service.repository_here()
        if repo is None:
            actions.append(Action("branch", "-", "not in a git repository", "kept"))
        else:
            plan = service.cleanup_branches(repo, force=force, dry_run=True)
            doomed = [a for a in plan if a.result == "would do"]
            if dry_run or not doomed:
                actions += plan
            elif _confirmed(f"delete {plural(len(doomed), 'branch', 'branches')}?", yes):
                actions += service.cleanup_branches(repo, force=force)
            else:
                actions += [a for a in plan if a.result != "would do"]
                actions.append(
                    Action(
                        "branch",
                        plural(len(doomed), "branch", "branches"),
                        "not deleted: confirm with --yes",
                        "kept",
                    )
                )
    _print(actions, as_json, dry_run, "cleanup all")
    failed = sum(1 for a in actions if a.result in FAILED)
    if not as_json:
        done = sum(1 for a in actions if a.result in ("done", "would do"))
        verb = "would change" if dry_run else "changed"
        print(
            f"summary: {verb} {done}, kept {sum(1 for a in actions if a.result == 'kept')}, "
            f"failed {failed}"
        )
    if failed:
        raise typer.Exit(1)
