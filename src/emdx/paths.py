"""Where emdx keeps its data: EMDX_HOME and the files below it, created private (0700/0600)."""

from __future__ import annotations

import os
from pathlib import Path

from emdx.errors import EnvironmentProblem

DIR_MODE = 0o700
FILE_MODE = 0o600


def emdx_home() -> Path:
    """The data directory: $EMDX_HOME, else ~/.config/emdx (where earlier releases kept data)."""
    env = os.environ.get("EMDX_HOME")
    if env:
        # Absolute, so that a supervisor started elsewhere (its cwd differs) finds the same data.
        return Path(env).expanduser().absolute()
    return Path.home() / ".config" / "emdx"


def db_path() -> Path:
    return emdx_home() / "knowledge.db"


def logs_dir() -> Path:
    return emdx_home() / "logs"


def runs_dir() -> Path:
    return emdx_home() / "runs"


def run_log_path(execution_id: int) -> Path:
    return logs_dir() / f"{execution_id}.jsonl"


def prompt_path(execution_id: int) -> Path:
    return logs_dir() / f"{execution_id}.prompt.md"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700; tighten it if it already exists."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o777 != DIR_MODE:
            path.chmod(DIR_MODE)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot create data directory {path}: {exc.strerror or exc}",
            [f"make {path.parent} writable or set EMDX_HOME to a writable directory"],
        ) from exc
    return path


def ensure_home() -> Path:
    home = ensure_private_dir(emdx_home())
    ensure_private_dir(logs_dir())
    ensure_private_dir(runs_dir())
    return home
