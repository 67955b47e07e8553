"""Where emdx keeps its data: EMDX_HOME and the files below it, created private (0700/0600)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from emdx.errors import EnvironmentProblem

DIR_MODE = 0o700
FILE_MODE = 0o600


def emdx_home() -> Path:
    """The data directory: $EMDX_HOME, else ~/.config/emdx (where earlier releases kept data)."""
    env = os.environ.get("EMDX_HOME")
    # Resolved, so that a supervisor started elsewhere (its cwd differs) finds the same data, and
    # a home spelled through a symbolic link is the same home (paths are compared resolved).
    home = Path(env).expanduser() if env else Path.home() / ".config" / "emdx"
    return Path(os.path.realpath(home))


def db_path() -> Path:
    return emdx_home() / "knowledge.db"


def logs_dir() -> Path:
    return emdx_home() / "logs"


def runs_dir() -> Path:
    return emdx_home() / "runs"


def run_file(run_key: str, kind: str) -> Path:
    """`logs/<run key>.<kind>`: a run's files are named by its unique key, never by its id (ids
    repeat across databases and restored backups). Kinds: see the helpers below."""
    return logs_dir() / f"{run_key}.{kind}"


def run_log_path(run_key: str) -> Path:
    """The run's structured log (JSONL)."""
    return run_file(run_key, "jsonl")


def prompt_path(run_key: str) -> Path:
    """The prompt the agent reads on stdin."""
    return run_file(run_key, "prompt.md")


def runner_err_path(run_key: str) -> Path:
    """The supervisor's own stderr (tracebacks of emdx bugs)."""
    return run_file(run_key, "runner.err")


def final_path(run_key: str) -> Path:
    """The outcome, written (fsync'd) before the final database write."""
    return run_file(run_key, "final.json")


def env_path(run_key: str) -> Path:
    """The environment the run was started (or queued) with: 0600, never in the database."""
    return run_file(run_key, "env.json")


def agent_check_path() -> Path:
    """The last successful pre-flight run of the agent binary (what it was, what it said)."""
    return emdx_home() / "agent-check.json"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700; tighten it if it already exists. A symbolic
    link is never followed, nor chmodded through (see `private_dir`)."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return path  # refused by `private_dir` when something needs it
    if stat.S_IMODE(info.st_mode) != DIR_MODE:
        try:
            os.chmod(path, DIR_MODE)
        except OSError as exc:
            raise _unwritable(path, exc) from exc
    return path


def _unwritable(path: Path, exc: OSError) -> EnvironmentProblem:
    if path.exists() and not path.is_dir():
        fix = f"{path} is a file, not a directory: move it aside or set EMDX_HOME elsewhere"
    else:
        fix = f"make {path.parent} writable or set EMDX_HOME to a writable directory"
    return EnvironmentProblem(f"cannot create data directory {path}: {exc.strerror or exc}", [fix])


def private_dir(path: Path) -> Path:
    """`path` (a directory emdx writes inside EMDX_HOME), refused with a one-line error if it is
    a symbolic link or not a directory: an agent may have planted it, and following it would
    make emdx write or delete outside its home."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        ensure_private_dir(path)
        info = os.lstat(path)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        raise EnvironmentProblem(
            f"{path} is a symbolic link (to {target}); emdx never follows links inside its home",
            [f"move {path} aside and check what put it there"],
        )
    if not stat.S_ISDIR(info.st_mode):
        raise EnvironmentProblem(
            f"{path} is not a directory", [f"move {path} aside and check what put it there"]
        )
    return path


def ensure_home() -> Path:
    home = ensure_private_dir(emdx_home())
    ensure_private_dir(logs_dir())
    ensure_private_dir(runs_dir())
    return home


def write_private(path: Path, data: bytes, *, new: bool = True, sync: bool = False) -> None:
    """Write a private file in EMDX_HOME (see `open_private`); `new` refuses an existing one,
    `sync` makes it durable (written to a temporary name, fsync'd, then renamed)."""
    target = path
    if sync:
        path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if new or sync else os.O_TRUNC)
    fd = open_private(path, flags)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if sync:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    if sync:
        os.replace(path, target)
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def open_private(path: Path, flags: int) -> int:
    """`os.open` of a file emdx keeps in EMDX_HOME: mode 0600, never through a symbolic link
    (neither the file nor its directory), not inherited by children."""
    private_dir(path.parent)
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


def remove_tree(path: Path, inside: Path) -> None:
    """Delete the directory `path`, a direct child of `inside`, never following a link: not
    `path` itself (refused), nor anything below it (shutil's fd-based rmtree)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise EnvironmentProblem(f"{path} is not a directory (a link?); not removed")
    if path.name in ("", ".", "..") or os.path.realpath(path.parent) != os.path.realpath(inside):
        raise EnvironmentProblem(f"{path} is not inside {inside}; not removed")
    if not shutil.rmtree.avoids_symlink_attacks:
        raise EnvironmentProblem("this platform cannot remove directories without following links")
    shutil.rmtree(path)
