"""How a run ended, decided from the final `result` event and the agent's exit code (DESIGN §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emdx.models import ExecutionStatus, Reason

EXIT_TIMEOUT = 124
EXIT_NOT_FOUND = 127
EXIT_SIGKILL = 137
EXIT_SIGTERM = 143


@dataclass(frozen=True)
class Outcome:
    status: ExecutionStatus
    exit_code: int
    reason: str


def exit_code_of(returncode: int | None) -> int:
    """Shell convention: a death by signal N is 128 + N."""
    if returncode is None:
        return EXIT_SIGKILL
    return 128 - returncode if returncode < 0 else returncode


def decide(
    returncode: int | None,
    result: dict[str, Any] | None,
    *,
    timed_out: bool = False,
    stalled: bool = False,
    killed: bool = False,
    needed_sigkill: bool = False,
) -> Outcome:
    """The final state of a run. `is_error` wins over `subtype`; no result event means failed."""
    if killed:
        code = EXIT_SIGKILL if needed_sigkill else EXIT_SIGTERM
        return Outcome(ExecutionStatus.KILLED, code, Reason.KILLED)
    if timed_out:
        return Outcome(ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.TIMEOUT)
    if stalled:
        return Outcome(ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.STALLED)
    code = exit_code_of(returncode)
    if result is None:
        return Outcome(ExecutionStatus.FAILED, code if code else 1, Reason.NO_RESULT)
    subtype = result.get("subtype")
    if subtype == "error_max_turns":
        return Outcome(ExecutionStatus.FAILED, code if code else 1, Reason.MAX_TURNS)
    if result.get("is_error") is not False:
        # API errors arrive as subtype "success" with is_error true; a missing flag is no success.
        return Outcome(ExecutionStatus.FAILED, code if code else 1, Reason.AGENT_ERROR)
    if code != 0:
        return Outcome(ExecutionStatus.FAILED, code, Reason.EXIT_CODE)
    return Outcome(ExecutionStatus.COMPLETED, 0, Reason.SUCCESS)
