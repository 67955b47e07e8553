"""Entry point of the supervisor process: `python -m emdx.runner EXECUTION_ID`."""

from __future__ import annotations

import sys

from emdx.runner.supervisor import main

sys.exit(main(sys.argv[1:]))
