"""What the supervisor does after an agent process ended badly: wait for a usage limit to reset
and resume, retry a transient failure after a backoff, or finish. Pure functions of the ending,
the options and the clock (tested with plain values)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from emdx.agent.outcome import TRANSIENT, Outcome
from emdx.agent.progress import UsageLimit
from emdx.models import ExecOptions, ExecutionStatus
from emdx.reasons import Reason

MAX_BACKOFF_S = 3600.0

CONTINUATION_PROMPT = (
    "Your previous attempt was interrupted ({why}). Continue the task from where you stopped: "
    "check what is already done, do what is left, and end with your complete final answer."
)


@dataclass(frozen=True)
class Wait:
    until: float
    """Epoch seconds (the wall clock: a usage limit resets at a time of day)."""
    reason: str
    """`usage_limit` or `retry_backoff` (stored as the row's waiting_reason)."""
    why: str
    """For the log and the continuation prompt."""


def next_wait(
    outcome: Outcome,
    options: ExecOptions,
    usage_limit: UsageLimit | None,
    *,
    now: float,
    waited_s: float,
    retries_done: int,
    max_wait_s: float,
    jitter_s: float,
    backoff_s: float,
    rng: random.Random | None = None,
) -> Wait | None:
    """A wait, or None to finish with `outcome`."""
    if outcome.status is not ExecutionStatus.FAILED:
        return None
    if outcome.reason == Reason.USAGE_LIMIT:
        if not options.wait_limit or usage_limit is None or usage_limit.resets_at is None:
            return None
        jitter = (rng or random).uniform(0, jitter_s) if jitter_s > 0 else 0.0
        until = max(now, usage_limit.resets_at) + jitter
        if waited_s + (until - now) > max_wait_s:
            return None
        kind = f" ({usage_limit.kind})" if usage_limit.kind else ""
        return Wait(until, "usage_limit", f"usage limit{kind} reached")
    if outcome.reason in TRANSIENT and retries_done < options.retries:
        delay = min(backoff_s * (2**retries_done), MAX_BACKOFF_S)
        return Wait(now + delay, "retry_backoff", f"{outcome.reason}, retry {retries_done + 1}")
    return None
