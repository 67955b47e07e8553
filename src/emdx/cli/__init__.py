"""The `emdx` command: a thin Typer shell over `emdx.service`."""

import importlib
import os
import sys

import typer

from emdx import __version__, settings
from emdx.cli import documents, gui, team
from emdx.cli.render import error
from emdx.errors import EmdxError

app = typer.Typer(
    name="emdx",
    help="Knowledge base of prompt documents, run through Claude Code as supervised executions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emdx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        metavar="URL",
        help="Team mode: the team's postgresql:// database (as EMDX_DATABASE_URL).",
    ),
) -> None:
    """emdx: keep prompt documents, run them through Claude Code, watch every run."""
    if db is not None:
        # Through the environment: the supervisors and workers this command starts inherit it.
        os.environ["EMDX_DATABASE_URL"] = db


documents.register(app)
gui.register(app)
team.register(app)
TOP_LEVEL = frozenset(info.name for info in app.registered_commands if info.name)

# Command groups are imported and registered only when the command line needs them: typer
# builds and introspects every registered command on each run, and listings are run often.
GROUPS = {"claude": "emdx.cli.claude", "exec": "emdx.cli.executions", "cleanup": "emdx.cli.cleanup"}
_registered: set[str] = set()


def register_groups(argv: list[str]) -> None:
    """Register the group `argv` names, none for a top-level command, all for anything else
    (`--help`, no arguments, a typo: the usage message must list every command)."""
    words = [word for word in argv if not word.startswith("-")]
    first = words[0] if words else None
    if first in GROUPS:
        wanted = [first]
    elif first in TOP_LEVEL:
        wanted = []
    else:
        wanted = list(GROUPS)
    for name in wanted:
        if name not in _registered:
            app.add_typer(importlib.import_module(GROUPS[name]).app, name=name)
            _registered.add(name)


def db_option(args: list[str]) -> tuple[str | None, list[str]]:
    """The value of `--db URL` (or `--db=URL`) among the options before the command, and the
    arguments without it (a root option is read there only, as typer reads it)."""
    for index, arg in enumerate(args):
        if arg == "--db" and index + 1 < len(args):
            return args[index + 1], args[:index] + args[index + 2 :]
        if arg.startswith("--db="):
            return arg[len("--db=") :], args[:index] + args[index + 1 :]
        if not arg.startswith("-"):
            break
    return None, args


def hide_database_url(args: list[str]) -> None:
    """Team mode: a command given the URL (and its password) with `--db` or EMDX_DATABASE_URL
    starts again as itself without it, handed the URL on a pipe (`system.spawn`), so that
    /proc/PID/cmdline (readable by every user) and /proc/PID/environ (by the user's agents)
    of a worker, a run being followed or the TUI never show it. Nothing to do, and nothing
    imported, without a URL or for `--help` and `--version`."""
    db, rest = db_option(args)
    if db is None and not settings.database_url_in_environment():
        return
    if any(arg in ("-h", "--help", "--version") for arg in args):
        return
    # sys.orig_argv is the interpreter's command line, which ends with our arguments.
    head = sys.orig_argv[: len(sys.orig_argv) - len(args)]
    if not args or not head or sys.orig_argv[len(head) :] != args or not sys.executable:
        return
    url = (db.strip() or None) if db is not None else settings.database_url()
    from emdx.errors import EnvironmentProblem
    from emdx.system import spawn

    try:
        spawn.reexec_without_url([*head, *rest], url)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot start again with the database URL out of view: {exc.strerror or exc}"
        ) from None


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: emdx errors → one line on stderr and exit 1, usage errors → exit 2."""
    try:
        if argv is None:
            hide_database_url(sys.argv[1:])
        # A URL handed over on a pipe is read here, where a failure is one line.
        settings.database_url()
        register_groups(sys.argv[1:] if argv is None else argv)
        # Standalone mode: typer itself turns usage errors into exit 2 and `--help` into exit 0.
        app(args=argv, prog_name="emdx")
    except EmdxError as exc:
        fixes = getattr(exc, "fixes", [])
        # One line, always: scripts read the first line of stderr.
        error(f"{exc} (fix: {'; '.join(fixes)})" if fixes else str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        # `emdx list | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
