"""Entry point of the supervisor process: `python -m emdx.runner EXECUTION_ID`."""

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

from emdx.runner.supervisor import main  # noqa: E402

sys.exit(main(sys.argv[1:], _early))
