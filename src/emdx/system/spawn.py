"""Starting a detached supervisor process: its own session, no terminal, stderr to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from emdx import paths
from emdx.system.process import process_start_time


def supervisor(
    execution_id: int, env: Mapping[str, str], stderr: Path, cwd: Path
) -> tuple[int, float | None]:
    """`python -m emdx.runner ID` in a new session (it outlives whoever started it), stdin from
    /dev/null, stderr appended to `stderr` (a private file, never through a link); returns its
    pid and start time."""
    fd = paths.open_private(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emdx.runner", str(execution_id)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            cwd=str(cwd),
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    return proc.pid, process_start_time(proc.pid)
