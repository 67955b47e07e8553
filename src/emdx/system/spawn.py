"""Starting a detached supervisor process: its own session, no terminal, stderr to a file; and
handing the team's database URL to an emdx process on a pipe, never in its environment or
command line (what /proc/PID/environ and cmdline show other processes for its whole life)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from emdx import paths, settings
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
    returns its pid and start time. In team mode it is handed the database URL on a pipe."""
    env = without_url(env)
    url = settings.database_url()
    handed = url_pipe(url) if url is not None else None
    if handed is not None:
        env[settings.DATABASE_URL_FD] = str(handed)
    try:
        fd = paths.open_private(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "emdx.runner", str(execution_id)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=fd,
                cwd=str(cwd),
                env=env,
                start_new_session=True,
                close_fds=True,
                pass_fds=() if handed is None else (handed,),
                preexec_fn=process.die_with_parent if die_with_parent else None,
            )
        finally:
            os.close(fd)
    finally:
        if handed is not None:
            os.close(handed)
    started = process_start_time(proc.pid)
    if started is not None:
        launched.add((proc.pid, started))
    return proc.pid, started


def without_url(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the database URL, and without a pipe's number that is not the child's."""
    names = (settings.DATABASE_URL, settings.DATABASE_URL_FD)
    return {name: value for name, value in env.items() if name not in names}


def url_pipe(url: str) -> int:
    """The read end of a pipe that holds `url`, its write end already closed (the reader gets
    the URL, then end of file: it can never wait for a writer). The pipe's buffer holds it: a
    URL longer than that is refused."""
    data = url.encode("utf-8", "surrogateescape")
    if len(data) > settings.URL_MAX_BYTES:
        raise OSError(errno.E2BIG, f"a database URL of more than {settings.URL_MAX_BYTES} bytes")
    read, write = os.pipe()
    try:
        os.set_blocking(write, False)
        if os.write(write, data) != len(data):
            raise OSError(errno.EAGAIN, "the database URL does not fit in a pipe")
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    return read


def reexec_without_url(argv: Sequence[str], url: str | None) -> NoReturn:
    """Become `argv` again (the same pid, so whatever tracks this process still does) with the
    URL out of the environment, handed over on a pipe instead: /proc/PID/environ and cmdline
    show what a process was started with, and this one was started with the URL in one of
    them. `argv[0]` is the interpreter's; the caller has taken the URL out of the rest."""
    env = without_url(os.environ)
    if url is not None:
        handed = url_pipe(url)
        os.set_inheritable(handed, True)
        env[settings.DATABASE_URL_FD] = str(handed)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(argv), env)


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
