"""Starting a detached supervisor process: its own session, no terminal, stderr to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from emdx import paths
from emdx.system import process
from emdx.system.process import process_start_time

# Every supervisor this process started (pid, start time): another run's, never a leftover of
# ours, though it is our child (a supervisor that resumes runs the queue pass).
launched: set[tuple[int, float]] = set()


def supervisor(
    execution_id: int,
    env: Mapping[str, str],
    stderr: Path,
    cwd: Path,
    die_with_parent: bool = False,
) -> tuple[int, float | None]:
    """`python -m emdx.runner ID` in a new session (it outlives whoever started it, unless
    `die_with_parent`: a team worker's runs end with their worker, as with a lost host), stdin
    from /dev/null, stderr appended to `stderr` (a private file, never through a link);
    returns its pid and start time."""
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
            preexec_fn=process.die_with_parent if die_with_parent else None,
        )
    finally:
        os.close(fd)
    started = process_start_time(proc.pid)
    if started is not None:
        launched.add((proc.pid, started))
    return proc.pid, started


def version_of(binary: Path, timeout_s: float) -> tuple[bool, str]:
    """Run `binary --version` (the pre-flight's check that an agent binary can run): (it
    answered, what it said or why not). No shell, stdin from /dev/null, bounded in time."""
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"{binary} --version did not answer within {timeout_s:g} s"
    except OSError as exc:
        # ENOEXEC: a file with the x bit that is no program (npm's 500-byte stub when its
        # postinstall did not run).
        return False, f"{binary} cannot run: {exc.strerror or exc}"
    version = (done.stdout or done.stderr).strip().splitlines()
    if done.returncode != 0:
        said = " ".join(version)[:200] or "no output"
        return False, f"{binary} --version exited {done.returncode}: {said}"
    return True, version[0] if version else "no version output"
