"""Environment validation: is this machine ready to run an agent? Each problem with its fix."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emdx import agent, paths
from emdx.errors import AgentNotFound, AgentNotRunnable, EmdxError, EnvironmentProblem
from emdx.system import git, spawn

INSTALL_CLAUDE = "npm install -g @anthropic-ai/claude-code@2.1.332 (or set EMDX_CLAUDE_BIN)"
INSTALL_NODE = "install Node.js 20 or newer: https://nodejs.org/ (or your package manager)"
# The real CLI answers in about a second; a cold start of its 400 MB binary on a loaded machine
# takes longer.
VERSION_TIMEOUT_S = 30.0

__all__ = ["AgentNotFound", "AgentNotRunnable", "Check", "ensure_ready", "full_report"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shebang(binary: Path) -> list[str]:
    """The words of the binary's `#!` line (the kernel reads its first 256 bytes); none when it
    is no script."""
    try:
        with binary.open("rb") as handle:
            head = handle.read(256)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()


def _needs_node(binary: Path) -> bool:
    return any("node" in word for word in _shebang(binary))


def _unusable(name: str) -> str | None:
    """Why an EMDX_CLAUDE_BIN path that exists cannot be the agent (None when it may be)."""
    if os.sep not in name:
        return None  # looked up on PATH, which skips what cannot run
    path = Path(name).expanduser()
    if path.is_dir():
        return f"{name} is a directory, not the claude program (EMDX_CLAUDE_BIN)"
    if path.exists() and not os.access(path, os.X_OK):
        return f"{name} is not executable (EMDX_CLAUDE_BIN; chmod +x it, or point at claude)"
    return None


def _identity(binary: Path) -> dict[str, Any] | None:
    """What the cached check is keyed by: the file the binary resolves to, as it is now — and,
    for a script, its interpreter's (`#!/usr/bin/env node`: node on PATH), so that an
    interpreter removed or replaced is checked again."""
    found = _file_identity(binary)
    if found is None:
        return None
    interpreter = _interpreter(binary)
    if interpreter is not None:
        found["interpreter"] = _file_identity(interpreter) or str(interpreter)
    return found


def _file_identity(path: Path) -> dict[str, Any] | None:
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError:
        return None
    return {
        "path": real,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "inode": info.st_ino,
        "device": info.st_dev,
        "mode": info.st_mode,
    }


def _interpreter(binary: Path) -> Path | None:
    """The program a `#!` line names (through `env`, what PATH finds), or None."""
    words = _shebang(binary)
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        args = [w for w in words[1:] if not w.startswith("-")]
        where = shutil.which(args[0]) if args else None
        return Path(where) if where else Path(args[0] if args else words[0])
    return Path(words[0])


def _cached_version(identity: dict[str, Any] | None) -> str | None:
    if identity is None:
        return None
    try:
        data = json.loads(paths.agent_check_path().read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("binary") != identity:
        return None
    version = data.get("version")
    return version if isinstance(version, str) else None


def _remember(identity: dict[str, Any] | None, version: str) -> None:
    """Keep a successful check (a file in EMDX_HOME): the next start need not run it again.
    Written to a temporary name and renamed, so concurrent starts never read half a file;
    a home that cannot take it only costs the check next time."""
    if identity is None:
        return
    data = json.dumps({"binary": identity, "version": version}).encode()
    with contextlib.suppress(OSError, EmdxError):
        paths.write_private(paths.agent_check_path(), data, sync=True)


def check_agent(run_version: bool, use_cache: bool = False) -> list[Check]:
    """The agent binary: found, runnable (`--version` answers, when `run_version`), and node
    on PATH when it is a node script. With `use_cache`, a binary that passed before, and has
    not changed since (same file, size, mtime, inode), is not run again."""
    name = agent.configured_binary()
    problem = _unusable(name)
    if problem is not None:
        return [Check("claude", False, problem, INSTALL_CLAUDE)]
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
        if node is None:
            run_version = False  # it cannot run; the node check says why
    if not run_version:
        checks.insert(0, Check("claude", True, str(binary)))
        return checks
    identity = _identity(binary)
    cached = _cached_version(identity) if use_cache else None
    if cached is not None:
        ok, said = True, cached
    else:
        ok, said = spawn.version_of(binary, VERSION_TIMEOUT_S)
        if ok:
            _remember(identity, said)
    detail = f"{binary} ({said})" if ok else said
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


def check_writable(where: Path) -> Check:
    """A directory emdx writes in, written to (a file made and removed): its modes say nothing
    of an immutable directory or a read-only mount."""
    try:
        paths.private_dir(where)
        fd, probe = tempfile.mkstemp(dir=where, prefix=".emdx-check-")
        os.close(fd)
        os.unlink(probe)
    except (OSError, EmdxError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Check(
            where.name, False, f"{where} cannot be written: {why}", f"make {where} writable"
        )
    return Check(where.name, True, str(where))


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
    """The pre-flight run before every start: raises before any row is created. The agent is
    run (`--version`) unless this very binary passed before (see `check_agent`)."""
    name = agent.configured_binary()
    problem = _unusable(name)
    if problem is not None:
        raise AgentNotRunnable(f"Claude Code cannot run: {problem}", [INSTALL_CLAUDE])
    agent_checks = check_agent(run_version=True, use_cache=True)
    if agent.resolve_binary(name) is None:
        raise AgentNotFound(f"Claude Code not found: {agent_checks[0].detail}", [INSTALL_CLAUDE])
    if not agent_checks[0].ok:
        raise AgentNotRunnable(
            f"Claude Code cannot run: {agent_checks[0].detail}", [INSTALL_CLAUDE]
        )
    for check in [*agent_checks[1:], check_data_dir()] + ([check_git(True)] if worktree else []):
        if not check.ok:
            raise EnvironmentProblem(
                f"{check.name}: {check.detail}", [check.fix] if check.fix else []
            )
    if worktree and git.toplevel() is None:
        raise EnvironmentProblem(
            "--worktree needs a git repository: run emdx from inside one", ["cd into a git repo"]
        )
