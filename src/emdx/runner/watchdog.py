"""The supervisor's watchdogs as pure functions of monotonic clock readings (tested with a fake
clock): the wall-clock timeout, the stall watchdog, and the grace after a result."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Alarm(enum.Enum):
    """Why the supervisor stops an agent on its own."""

    TIMEOUT = "timeout"
    """--timeout passed since the agent started."""
    STALLED = "stalled"
    """No agent event for --stall-timeout."""
    HUNG_AFTER_RESULT = "hung_after_result"
    """The agent printed its result but did not exit within the grace (no background task
    open), or within the CLI's own background-task ceiling (tasks open)."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float | None
    stall_s: float | None
    result_grace_s: float
    background_ceiling_s: float


@dataclass
class Readings:
    """Monotonic times the pump records as the run goes."""

    began: float
    last_event: float
    result_at: float | None = None
    background_open: int = 0


def due(limits: Limits, readings: Readings, now: float) -> Alarm | None:
    """The alarm that fires at `now`, if any (the timeout first, then a stall, then a hang)."""
    if limits.timeout_s is not None and now - readings.began >= limits.timeout_s:
        return Alarm.TIMEOUT
    if limits.stall_s is not None and now - readings.last_event >= limits.stall_s:
        return Alarm.STALLED
    if readings.result_at is not None:
        # Claude Code waits for its background tasks after a result (and may take another turn):
        # only once none is open does a silent agent count as hung.
        open_tasks = readings.background_open > 0
        grace = limits.background_ceiling_s if open_tasks else limits.result_grace_s
        if now - readings.result_at >= grace:
            return Alarm.HUNG_AFTER_RESULT
    return None
