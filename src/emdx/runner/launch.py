"""The start of one agent process: its binary found, its working directory checked, its argv
built, then spawned (`AgentProcess`); each way it cannot start is an outcome, with a note."""

from __future__ import annotations

import os
from collections.abc import Callable

from emdx import agent, paths
from emdx.agent.outcome import EXIT_NOT_FOUND, Outcome, decide
from emdx.agent.stream import line_max_bytes
from emdx.models import ExecOptions, ExecutionStatus
from emdx.reasons import Reason
from emdx.runner.agent_process import AgentProcess
from emdx.runner.finish import Note

# Of each stderr line at most this much is kept (the rest is counted and dropped): memory stays
# bounded whatever the agent prints.
STDERR_LINE_MAX_BYTES = 64 * 1024


def launch(
    options: ExecOptions,
    working_dir: str | None,
    execution_id: int,
    prompt: bytes,
    resume: str | None,
    on_stderr: Callable[[bytes, bool], None],
    *,
    stopped: Callable[[], bool],
    note: Note,
) -> AgentProcess | Outcome:
    """The started agent (the prompt on its stdin, resuming session `resume` if given), or the
    outcome of a start that did not happen: no binary, no directory, a failed spawn, or a stop
    asked for before the spawn (killed)."""
    binary = agent.resolve_binary()
    if binary is None:
        note(f"agent binary {agent.configured_binary()!r} not found", "error", "❌")
        return Outcome(ExecutionStatus.FAILED, EXIT_NOT_FOUND, Reason.AGENT_NOT_FOUND)
    workdir = working_dir or str(paths.runs_dir())
    if not paths.is_real_dir(workdir):
        note(f"the working directory {workdir} is not a directory (a link?)", "error", "🛡️")
        return Outcome(ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED)
    tools = options.tools if options.tools is not None else agent.FULL_TOOLS
    argv = agent.build_argv(
        binary, tools, options.model, options.max_turns, resume, options.max_budget_usd
    )
    if stopped():
        return decide(None, None, killed=True)
    proc = AgentProcess(
        argv,
        workdir,
        agent.agent_env(os.environ, execution_id),
        prompt,
        line_max_bytes(),
        min(STDERR_LINE_MAX_BYTES, line_max_bytes()),
        on_stderr,
    )
    try:
        proc.start()
    except FileNotFoundError:
        note(f"agent binary {binary} not found", "error", "❌")
        return Outcome(ExecutionStatus.FAILED, EXIT_NOT_FOUND, Reason.AGENT_NOT_FOUND)
    except PermissionError as exc:
        note(f"agent binary {binary} cannot be executed: {exc}", "error", "❌")
        return Outcome(ExecutionStatus.FAILED, EXIT_NOT_FOUND, Reason.AGENT_NOT_FOUND)
    except OSError as exc:
        note(f"cannot start the agent: {exc}", "error", "❌")
        return Outcome(ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED)
    return proc
