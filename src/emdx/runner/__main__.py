"""Entry point of the supervisor process: `python -m emdx.runner EXECUTION_ID`.

Like the CLI, this is a shell: the supervisor owns the run until its final state is recorded;
then this process does what any emdx command would do next — the run's post-actions and the
sweep that starts the next queued run — through the service, so that they live in one place and
a supervisor that dies in between stalls nothing (the next command's sweep does it).
"""

import signal
import sys
from types import FrameType

# Installed before the heavy imports below: a kill that arrives while Python is still importing
# must become a recorded `killed`, not a silent death by the default SIGTERM action.
_early: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _early.append(signum)


for _signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_signum, _remember)

import contextlib  # noqa: E402
import os  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402

from emdx import settings, system  # noqa: E402
from emdx.errors import EmdxError, EnvironmentProblem  # noqa: E402
from emdx.masking import Masker, MaskingStream  # noqa: E402
from emdx.models import ExecutionStatus  # noqa: E402
from emdx.runner.finish import warn  # noqa: E402
from emdx.runner.supervisor import START_RETRY_S, Supervisor  # noqa: E402
from emdx.store import Store, open_store  # noqa: E402
from emdx.store.connection import retry_transient  # noqa: E402


def main(
    argv: list[str],
    early_signals: list[int] | None = None,
    on_resume: Callable[[Store], object] | None = None,
) -> int:
    try:
        # Handed over on a pipe (never in our environment): read first, and masked like the rest.
        url = settings.database_url()
    except EmdxError as exc:
        warn(f"emdx runner: {exc}")
        return 1
    masker = Masker.from_env({**os.environ, settings.DATABASE_URL: url or ""})
    if masker:
        # Our stderr is logs/<key>.runner.err: tracebacks and notes quote exception texts.
        sys.stderr = MaskingStream(sys.stderr, masker)
    if len(argv) != 1 or not argv[0].isdigit():
        warn("usage: python -m emdx.runner EXECUTION_ID")
        return 2
    try:
        # A database that blips as we start (a flapping server, a short outage) is waited out:
        # the run is claimed already, and nobody else starts it.
        store = retry_transient(open_store, START_RETRY_S)
        execution = retry_transient(lambda: store.executions.get(int(argv[0])), START_RETRY_S)
    except EmdxError as exc:
        warn(f"emdx runner: {exc}")
        return 1
    key = os.environ.get(system.MARKER_KEY)
    if key and execution.run_key != key:
        # The id belongs to another run now (a restored backup handed it out again).
        warn(f"emdx runner: execution {execution.id} is not run {key}")
        return 1
    if execution.status is not ExecutionStatus.RUNNING or execution.run_key is None:
        # Killed while queued, or already finished: nothing to supervise.
        warn(f"emdx runner: execution {execution.id} is {execution.status.value}")
        return 0
    supervisor = Supervisor(store, execution, early_signals, masker, on_resume)
    try:
        return supervisor.run()
    except Exception as exc:
        # A bug in emdx must still end the run, kill what it started and say why.
        with contextlib.suppress(OSError, ValueError):
            traceback.print_exc()
        supervisor.abort(exc)
        return 1


def after_run(argv: list[str]) -> None:
    """The service's part after a supervised run: its post-actions, then the sweep (the next
    queued run). Never raises: the run's outcome is recorded already."""
    if len(argv) != 1 or not argv[0].isdigit():
        return
    try:
        from emdx.service import repair

        with open_store() as store:
            execution = store.executions.get(int(argv[0]))
            if execution.run_key and execution.run_key == os.environ.get(system.MARKER_KEY):
                repair.apply_post_actions(store, execution)
            repair.sweep(store, "the supervisor of a finished run")
    except EnvironmentProblem:
        return  # `main` said it already: the same store, opened the same way
    except Exception as exc:
        with contextlib.suppress(OSError, ValueError):
            print(f"emdx runner: after the run: {type(exc).__name__}: {exc}", file=sys.stderr)


def queue_pass(store: object) -> None:
    from emdx.service.scheduler import fill_slots
    from emdx.store import Store

    if isinstance(store, Store):
        fill_slots(store)


code = main(sys.argv[1:], _early, queue_pass)
after_run(sys.argv[1:])
sys.exit(code)
