"""Environment validation: is this machine ready to run an agent? Each problem with its fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emdx import agent, paths
from emdx.errors import EmdxError, EnvironmentProblem
from emdx.system import git

INSTALL_CLAUDE = "npm install -g @anthropic-ai/claude-code@2.1.332 (or set EMDX_CLAUDE_BIN)"
INSTALL_NODE = "install Node.js 20 or newer: https://nodejs.org/ (or your package manager)"


class AgentNotFound(EnvironmentProblem):
    """The agent binary is missing: like a shell, emdx exits 127."""

    exit_code = 127


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _needs_node(binary: Path) -> bool:
    try:
        with binary.open("rb") as handle:
            head = handle.read(128)
    except OSError:
        return False
    return head.startswith(b"#!") and b"node" in head.split(b"\n", 1)[0]


def check_agent(run_version: bool) -> list[Check]:
    name = agent.configured_binary()
    binary = agent.resolve_binary(name)
    if binary is None:
        return [
            Check("claude", False, f"{name!r} not found (PATH or EMDX_CLAUDE_BIN)", INSTALL_CLAUDE)
        ]
    checks = []
    if _needs_node(binary):
        node = shutil.which("node")
        checks.append(
            Check(
                "node", node is not None, node or "node not on PATH", None if node else INSTALL_NODE
            )
        )
    if not run_version:
        checks.insert(0, Check("claude", True, str(binary)))
        return checks
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        version = (done.stdout or done.stderr).strip().splitlines()
        ok = done.returncode == 0
        detail = f"{binary} ({version[0] if version else 'no version output'})"
        if not ok:
            detail = f"{binary} --version exited {done.returncode}: {' '.join(version)[:200]}"
    except (OSError, subprocess.SubprocessError) as exc:
        ok, detail = False, f"{binary} cannot run: {exc}"
    checks.insert(0, Check("claude", ok, detail, None if ok else INSTALL_CLAUDE))
    return checks


def check_data_dir() -> Check:
    home = paths.emdx_home()
    try:
        paths.ensure_home()
    except EnvironmentProblem as exc:
        return Check("data dir", False, str(exc), exc.fixes[0] if exc.fixes else None)
    if not os.access(home, os.W_OK):
        return Check("data dir", False, f"{home} is not writable", f"chmod u+w {home}")
    return Check("data dir", True, str(home))


def check_git(required: bool) -> Check:
    found = git.available()
    fix = "install git (e.g. apt-get install git)"
    return Check(
        "git", found is not None, found or "git not on PATH", None if found else fix, required
    )


def check_database() -> Check:
    from emdx.store import open_store

    try:
        with open_store() as store:
            ok = store.integrity_ok()
            version = store.version
    except EmdxError as exc:
        return Check("database", False, str(exc), "move the file aside to start a fresh database")
    return Check(
        "database", ok, f"{paths.db_path()} (schema v{version})" if ok else "integrity check failed"
    )


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", ok, f"{sys.executable} {version}", None if ok else "use Python 3.11+")


def check_emdx_on_path() -> Check:
    found = shutil.which("emdx")
    fix = "pip install -e . (or add the virtualenv's bin to PATH)"
    return Check(
        "emdx on PATH", found is not None, found or "not found", None if found else fix, False
    )


def full_report() -> list[Check]:
    """Everything `emdx claude check-env` shows."""
    return [
        check_python(),
        *check_agent(run_version=True),
        check_git(required=False),
        check_emdx_on_path(),
        check_data_dir(),
        check_database(),
    ]


def ensure_ready(worktree: bool = False) -> None:
    """The fast pre-flight run before every start: raises before any row is created."""
    agent_checks = check_agent(run_version=False)
    if not agent_checks[0].ok:
        raise AgentNotFound(f"Claude Code not found: {agent_checks[0].detail}", [INSTALL_CLAUDE])
    for check in [*agent_checks[1:], check_data_dir()] + ([check_git(True)] if worktree else []):
        if not check.ok:
            raise EnvironmentProblem(
                f"{check.name}: {check.detail}", [check.fix] if check.fix else []
            )
    if worktree and git.toplevel() is None:
        raise EnvironmentProblem(
            "--worktree needs a git repository: run emdx from inside one", ["cd into a git repo"]
        )
