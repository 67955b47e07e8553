"""Why a run ended the way it did: the `Reason` every ending emdx records carries, and what each
means with its usual fix (`exec show` prints it), written once."""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why a run ended the way it did (stored in `executions.reason`); `REASON_HELP` says what
    each means and the usual fix, once (`exec show` prints it)."""

    SUCCESS = "success"
    USAGE_LIMIT = "usage_limit"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    INVALID_REQUEST = "invalid_request"
    AUTH_ERROR = "auth_error"
    MAX_TURNS = "max_turns"
    MAX_BUDGET = "max_budget"
    ERROR_DURING_EXECUTION = "error_during_execution"
    AGENT_ERROR = "agent_error"
    NO_RESULT = "no_result"
    EXIT_CODE = "nonzero_exit"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    HUNG_AFTER_RESULT = "hung_after_result"
    AGENT_NOT_FOUND = "agent_not_found"
    SPAWN_FAILED = "spawn_failed"
    DEPENDENCY_FAILED = "dependency_failed"
    SUPERVISOR_ERROR = "supervisor_error"
    KILLED = "killed_by_user"
    OVERDUE = "overdue"
    RUNNER_LOST = "runner_lost"
    HOST_LOST = "host_lost"
    DATABASE_LOST = "database_lost"
    STUCK = "stuck"
    START_INTERRUPTED = "start_interrupted"
    BUDGET_HELD = "daily_budget"


REASON_HELP: dict[str, tuple[str, str]] = {
    Reason.SUCCESS: ("the agent finished and said its work succeeded", ""),
    Reason.USAGE_LIMIT: (
        "the subscription's usage limit was reached",
        "it resets at the time shown; runs wait for it unless --no-wait-limit",
    ),
    Reason.RATE_LIMITED: (
        "the API rate-limited the requests (429) until Claude Code's own retries gave up",
        "run fewer at once (EMDX_MAX_PARALLEL) or retry later; --retries N retries for you",
    ),
    Reason.OVERLOADED: (
        "the API was overloaded (529) until Claude Code's own retries gave up",
        "retry later; --retries N retries with a backoff",
    ),
    Reason.SERVER_ERROR: (
        "the API failed (5xx) until Claude Code's own retries gave up",
        "retry later; --retries N retries with a backoff",
    ),
    Reason.INVALID_REQUEST: (
        "the API refused the request (400: too long, bad model, bad parameters)",
        "read the error text; shorten the document or change --model",
    ),
    Reason.AUTH_ERROR: (
        "the API refused the credentials (401/403)",
        "check ANTHROPIC_API_KEY / the Claude Code login (`claude` once, interactively)",
    ),
    Reason.MAX_TURNS: ("the agent used all its --max-turns", "raise --max-turns or split the task"),
    Reason.MAX_BUDGET: (
        "the run reached its --max-budget-usd",
        "raise --max-budget-usd, or resume it (`emdx exec resume`) to go on",
    ),
    Reason.ERROR_DURING_EXECUTION: (
        "Claude Code stopped with an error during execution (or was interrupted)",
        "read the log's last lines; retry",
    ),
    Reason.AGENT_ERROR: (
        "the agent's result said it failed, with no more precise cause",
        "read the error text and the log",
    ),
    Reason.NO_RESULT: (
        "the agent exited without a result event",
        "read its stderr in the log (a crash, a killed process)",
    ),
    Reason.EXIT_CODE: (
        "the agent reported success but exited non-zero",
        "read its stderr in the log",
    ),
    Reason.TIMEOUT: ("the run reached its --timeout and was stopped", "raise --timeout"),
    Reason.STALLED: (
        "the agent printed nothing for --stall-timeout and was stopped",
        "raise --stall-timeout if a tool is legitimately slow",
    ),
    Reason.HUNG_AFTER_RESULT: (
        "the agent printed its result but did not exit, and was stopped",
        "the result is in the log; a stuck tool may have held it",
    ),
    Reason.AGENT_NOT_FOUND: (
        "the agent binary could not be found or run",
        "`emdx claude check-env`; set EMDX_CLAUDE_BIN",
    ),
    Reason.SPAWN_FAILED: (
        "the supervisor or the agent could not be started",
        "read runner.err (`emdx exec show`); check disk space and EMDX_HOME",
    ),
    Reason.DEPENDENCY_FAILED: (
        "the run it was to start --after did not complete",
        "fix that run, then `emdx exec retry` this one",
    ),
    Reason.SUPERVISOR_ERROR: (
        "a bug in emdx's supervisor ended the run (the agent was stopped)",
        "the traceback is in runner.err: please report it",
    ),
    Reason.KILLED: ("stopped by the user", ""),
    Reason.OVERDUE: (
        "its supervisor stopped enforcing --timeout; emdx stopped the run",
        "look for a frozen process or a stuck database lock",
    ),
    Reason.RUNNER_LOST: (
        "its supervisor died (killed, reboot, out of memory) while the run went",
        "`emdx exec retry` or `emdx exec resume`",
    ),
    Reason.HOST_LOST: (
        "the worker host running it stopped answering (team mode)",
        "`emdx exec retry` runs it again on a live worker",
    ),
    Reason.DATABASE_LOST: (
        "the team's database was out of its supervisor's reach longer than "
        "EMDX_OUTAGE_TOLERANCE_SECONDS (default 900): nobody could see or stop it, so it stopped",
        "`emdx exec resume` goes on with its session once the database is back",
    ),
    Reason.STUCK: (
        "a row of an earlier emdx release that was running when its process died",
        "nothing to do: it is closed",
    ),
    Reason.START_INTERRUPTED: (
        "its start was interrupted before the agent ran",
        "start it again",
    ),
    Reason.BUDGET_HELD: (
        "today's spend reached EMDX_DAILY_BUDGET_USD; new runs wait",
        "raise EMDX_DAILY_BUDGET_USD or wait for tomorrow",
    ),
    # Rows written by emdx before reasons were renamed.
    "error_max_turns": ("the agent used all its --max-turns", "raise --max-turns"),
}


def reason_help(reason: str | None) -> tuple[str, str] | None:
    """(what it means, the usual fix) for a stored reason; None for an unknown one."""
    return REASON_HELP.get(reason or "")
