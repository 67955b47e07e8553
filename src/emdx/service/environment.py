"""The environment a run starts with: captured when it was created (not that of whichever
process frees its slot), plus EMDX_HOME and the run's markers."""

from __future__ import annotations

import json
import os

from emdx import jsonio, paths, system
from emdx.models import Execution

ENV_MAX = 16 * 1024 * 1024


def capture_environment() -> bytes:
    """This process's environment, as the run will start with it (see `run_environment`)."""
    return json.dumps(dict(os.environ), ensure_ascii=False).encode("utf-8", "surrogateescape")


def run_environment(execution: Execution) -> dict[str, str]:
    """The environment captured when the run was created — not that of whichever process
    frees its slot — plus EMDX_HOME and the run's markers. A row without one (an earlier
    release's) gets the caller's."""
    env: dict[str, str] | None = None
    if execution.run_key:
        try:
            data = jsonio.loads(paths.read_bounded(paths.env_path(execution.run_key), ENV_MAX))
            if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
                env = {str(k): v for k, v in data.items()}
        except (OSError, ValueError):
            env = None
    env = dict(os.environ) if env is None else env
    for name in (system.MARKER, system.MARKER_KEY, system.MARKER_DB):
        env.pop(name, None)
    env["EMDX_HOME"] = str(paths.emdx_home())
    env.update(system.run_markers(execution.id, execution.run_key or "", paths.db_path()))
    return env
