"""The Claude Code adapter: finding the binary, building argv and environment, the tool lists."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from emdx import settings

DEFAULT_BINARY = "claude"

# Variables that must not leak from a parent Claude Code session into the agent we start:
# CLAUDECODE makes the CLI believe it is nested and changes its behaviour.
# Nesting markers (the CLI would think it runs inside another session), and the team's database
# URL (with its password) or the number of the pipe it came on: the agent needs neither, and a
# hostile one must not be handed the queue every host trusts (it runs as the user, so this is
# one layer, not a wall: docs/decisions.md).
DROPPED_ENV = (
    "CLAUDECODE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_CODE_SSE_PORT",
    settings.DATABASE_URL,
    settings.DATABASE_URL_FD,
)

READ_ONLY_TOOLS = ("Read", "Glob", "Grep", "LS", "WebFetch", "WebSearch")
ANALYSIS_TOOLS = (*READ_ONLY_TOOLS, "Write")
FULL_TOOLS = (
    "Bash",
    "Read",
    "Write",
    "Edit",
    "MultiEdit",
    "Glob",
    "Grep",
    "LS",
    "TodoWrite",
    "WebFetch",
    "WebSearch",
)


# What Claude Code names a session (a UUID); the id is read from the agent's own output, which
# anything it runs can write into, so one that could be read as an option is never taken.
_SESSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")


def is_session_id(value: object) -> bool:
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def configured_binary() -> str:
    return settings.claude_bin() or DEFAULT_BINARY


def resolve_binary(name: str | None = None) -> Path | None:
    """Absolute path of the agent binary (EMDX_CLAUDE_BIN or `claude` on PATH), None if absent."""
    name = name or configured_binary()
    if os.sep in name:
        path = Path(name).expanduser()
        return path.resolve() if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(name)
    return Path(found) if found else None


def build_argv(
    binary: str | Path,
    tools: Sequence[str],
    model: str | None = None,
    max_turns: int | None = None,
    resume_session: str | None = None,
    max_budget_usd: float | None = None,
) -> list[str]:
    """argv for a headless run; the prompt itself goes on stdin, never here (E2BIG at 128 KiB)."""
    argv = [
        str(binary),
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "dontAsk",
    ]
    if tools:
        argv += ["--allowedTools", ",".join(tools)]
    if model:
        argv += ["--model", model]
    if max_turns:
        argv += ["--max-turns", str(max_turns)]
    if resume_session:
        if not is_session_id(resume_session):
            raise ValueError(f"not a session id: {resume_session!r}")
        # One argument: `--resume` takes an optional value, so a separate one is re-parsed.
        argv.append(f"--resume={resume_session}")
    if max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{max_budget_usd:g}"]
    return argv


def agent_env(base: Mapping[str, str], execution_id: int) -> dict[str, str]:
    """The agent's environment: the caller's, minus nesting markers, plus the emdx marker."""
    env = {k: v for k, v in base.items() if k not in DROPPED_ENV}
    env["EMDX_EXECUTION_ID"] = str(execution_id)  # EMDX_DB comes from the supervisor's env
    return env
