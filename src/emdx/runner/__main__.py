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

from emdx.runner.supervisor import main  # noqa: E402


def after_run(argv: list[str]) -> None:
    """The service's part after a supervised run: its post-actions, then the sweep (the next
    queued run). Never raises: the run's outcome is recorded already."""
    if len(argv) != 1 or not argv[0].isdigit():
        return
    try:
        from emdx import system
        from emdx.service import repair
        from emdx.store import open_store

        with open_store() as store:
            execution = store.executions.get(int(argv[0]))
            if execution.run_key and execution.run_key == os.environ.get(system.MARKER_KEY):
                repair.apply_post_actions(store, execution)
            repair.sweep(store, "the supervisor of a finished run")
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
