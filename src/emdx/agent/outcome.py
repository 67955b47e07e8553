"""How a run ended, decided from the final `result` event and the agent's exit code (DESIGN §5):
a pure function of what the process reported, tested on recorded Claude Code output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emdx.models import ExecutionStatus
from emdx.reasons import Reason

EXIT_TIMEOUT = 124
EXIT_NOT_FOUND = 127
EXIT_SIGKILL = 137
EXIT_SIGTERM = 143

# What the API's own error type says, when the HTTP status does not (or is missing).
_BY_API_ERROR = {
    "overloaded_error": Reason.OVERLOADED,
    "rate_limit_error": Reason.RATE_LIMITED,
    "authentication_error": Reason.AUTH_ERROR,
    "permission_error": Reason.AUTH_ERROR,
    "invalid_request_error": Reason.INVALID_REQUEST,
    "not_found_error": Reason.INVALID_REQUEST,
    "request_too_large": Reason.INVALID_REQUEST,
    "api_error": Reason.SERVER_ERROR,
    "usage_limit_reached": Reason.USAGE_LIMIT,
}
# Endings worth retrying automatically (--retries): Claude Code's own retries gave up on them.
TRANSIENT = frozenset({Reason.OVERLOADED, Reason.SERVER_ERROR, Reason.RATE_LIMITED})


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


def api_reason(result: dict[str, Any]) -> Reason | None:
    """The precise reason of an API error result: by HTTP status, then by the error's type."""
    status = result.get("api_error_status")
    if isinstance(status, int) and not isinstance(status, bool):
        if status == 429:
            return Reason.RATE_LIMITED
        if status == 529:
            return Reason.OVERLOADED
        if status in (401, 403):
            return Reason.AUTH_ERROR
        if 500 <= status < 600:
            return Reason.SERVER_ERROR
        if 400 <= status < 500:
            return Reason.INVALID_REQUEST
    for key in ("api_error_type", "api_error"):
        value = result.get(key)
        if isinstance(value, str) and value in _BY_API_ERROR:
            return _BY_API_ERROR[value]
    return None


def decide(
    returncode: int | None,
    result: dict[str, Any] | None,
    *,
    timed_out: bool = False,
    stalled: bool = False,
    killed: bool = False,
    needed_sigkill: bool = False,
    usage_limit: bool = False,
) -> Outcome:
    """The final state of one agent process. `is_error` wins over `subtype`; no result event
    means failed; a usage limit (from its `rate_limit_event` or assistant error, never from the
    result text) wins over the 429 it came with."""
    if killed:
        code = EXIT_SIGKILL if needed_sigkill else EXIT_SIGTERM
        return Outcome(ExecutionStatus.KILLED, code, Reason.KILLED)
    if timed_out:
        return Outcome(ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.TIMEOUT)
    if stalled:
        return Outcome(ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.STALLED)
    code = exit_code_of(returncode)
    failed = code if code else 1
    if usage_limit:
        return Outcome(ExecutionStatus.FAILED, failed, Reason.USAGE_LIMIT)
    if result is None:
        return Outcome(ExecutionStatus.FAILED, failed, Reason.NO_RESULT)
    subtype = result.get("subtype")
    if subtype == "error_max_turns":
        return Outcome(ExecutionStatus.FAILED, failed, Reason.MAX_TURNS)
    if subtype == "error_max_budget_usd":
        return Outcome(ExecutionStatus.FAILED, failed, Reason.MAX_BUDGET)
    if subtype == "error_during_execution":
        return Outcome(ExecutionStatus.FAILED, failed, Reason.ERROR_DURING_EXECUTION)
    if result.get("is_error") is not False:
        # API errors arrive as subtype "success" with is_error true; a missing flag is no success.
        return Outcome(ExecutionStatus.FAILED, failed, api_reason(result) or Reason.AGENT_ERROR)
    if code != 0:
        return Outcome(ExecutionStatus.FAILED, code, Reason.EXIT_CODE)
    return Outcome(ExecutionStatus.COMPLETED, 0, Reason.SUCCESS)
