"""Where emdx keeps its data: EMDX_HOME and the files below it, created private (0700/0600)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

from emdx import settings
from emdx.errors import EnvironmentProblem

DIR_MODE = 0o700
FILE_MODE = 0o600


def emdx_home() -> Path:
    """The data directory: $EMDX_HOME, else ~/.config/emdx (where earlier releases kept data)."""
    env = settings.home()
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


def prepared_path(run_key: str) -> Path:
    """Team mode: the host that made the run's directory here (a shared home has several)."""
    return run_file(run_key, "prepared")


def runner_err_path(run_key: str) -> Path:
    """The supervisor's own stderr (tracebacks of emdx bugs)."""
    return run_file(run_key, "runner.err")


def final_path(run_key: str) -> Path:
    """The outcome, written (fsync'd) before the final database write."""
    return run_file(run_key, "final.json")


def env_path(run_key: str) -> Path:
    """The environment the run was started (or queued) with: 0600, never in the database."""
    return run_file(run_key, "env.json")


def forget_environment(run_key: str | None) -> None:
    """Delete a run's captured environment (it holds its secrets) once the run has ended, how
    ever it ended: by its supervisor, a kill, a repair, a failed dependency or spawn."""
    if run_key:
        with contextlib.suppress(OSError):
            env_path(run_key).unlink()


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
    (neither the file nor its directory), only a regular file (a FIFO an agent put in place of
    one would block the opener for good), not inherited by children."""
    private_dir(path.parent)
    return _open_regular(path, flags)


def _open_regular(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (what put it there?)", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_reading(path: Path) -> BinaryIO:
    """A file emdx keeps in EMDX_HOME, opened to read as an agent may have left it: never
    through a symbolic link, and only a regular file (a FIFO would block the reader for good, a
    device never ends); OSError otherwise. Callers bound how much they read."""
    fd = _open_regular(path, os.O_RDONLY)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The whole of a file in EMDX_HOME (see `open_for_reading`); OSError when it is larger
    than `max_bytes`."""
    with open_for_reading(path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
    return data


def is_real_dir(path: str | Path) -> bool:
    """A directory, not a symbolic link to one (an agent may have swapped its directory)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_tree(path: Path, inside: Path) -> None:
    """Delete the directory `path`, a direct child of `inside`, and everything in it, without
    ever leaving it: no link is followed (links are unlinked), no mount point is crossed (a
    filesystem mounted inside — a bind mount, sshfs — is refused and left untouched), every
    directory is opened relative to its parent and checked to be the one listed, and the walk is
    iterative with two descriptors open at most (a tree 100 000 deep is no problem)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise EnvironmentProblem(f"{path} is not a directory (a link?); not removed")
    if path.name in ("", ".", "..") or os.path.realpath(path.parent) != os.path.realpath(inside):
        raise EnvironmentProblem(f"{path} is not inside {inside}; not removed")
    mounts = mounts_under(path)
    if mounts:
        raise EnvironmentProblem(
            f"{path} holds a mount point ({mounts[0]}): unmount it first; not removed"
        )
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags)
    top = os.fstat(fd)
    if not os.path.samestat(top, info):
        os.close(fd)
        raise EnvironmentProblem(f"{path} changed while it was being removed; not removed")
    # From the top down to the directory being emptied: (name in its parent, device, inode).
    chain: list[tuple[str, int, int]] = [("", top.st_dev, top.st_ino)]
    try:
        while True:
            child = _empty_or_descend(fd, top.st_dev, path)
            if child is not None:
                name, child_fd, child_info = child
                chain.append((name, child_info.st_dev, child_info.st_ino))
                os.close(fd)
                fd = child_fd
                continue
            if len(chain) == 1:
                break
            name, _, _ = chain.pop()
            parent_fd = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent_fd
            _, dev, ino = chain[-1]
            here = os.fstat(fd)
            if (here.st_dev, here.st_ino) != (dev, ino):
                raise EnvironmentProblem(f"{path} was moved while it was being removed; stopped")
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from /proc/self/mountinfo; a bind mount of a directory
    of the same filesystem shows nowhere else)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    root = os.path.realpath(path)
    found = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        # Octal escapes for space, tab, newline and backslash.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == root or point.startswith(root.rstrip("/") + "/"):
            found.append(point)
    return found


def _empty_or_descend(fd: int, device: int, top: Path) -> tuple[str, int, os.stat_result] | None:
    """Unlink the non-directories in the directory `fd`; the first subdirectory found is
    opened and returned (name, descriptor, stat) to descend into, None once it is empty."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.scandir(fd) as entries:
        for entry in entries:
            listed = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(listed.st_mode):
                os.unlink(entry.name, dir_fd=fd)
                continue
            if listed.st_dev != device:
                raise EnvironmentProblem(
                    f"{top} holds a mount point ({entry.name}, another filesystem): unmount it; "
                    "not removed"
                )
            child = os.open(entry.name, flags, dir_fd=fd)
            opened = os.fstat(child)
            if not os.path.samestat(opened, listed) or opened.st_dev != device:
                os.close(child)
                raise EnvironmentProblem(f"{top} changed while it was being removed; stopped")
            return entry.name, child, opened
    return None
