"""The supervisor's watchdogs as pure functions of monotonic clock readings (tested with a fake
clock): the wall-clock timeout, the stall watchdog, and the grace after a result."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

# Claude Code waits for open background tasks up to CLAUDE_CODE_PRINT_BG_WAIT_CEILING_MS after
# its result (default 10 min); past that plus this margin it is hung. A background Bash shell is
# not bounded by that ceiling (2.1.330+: a 4 s ceiling let a 40 s shell finish) but by its own
# 10-minute limit, after which the CLI takes one more turn: never less than that.
DEFAULT_BG_CEILING_S = 600.0
BACKGROUND_SHELL_LIMIT_S = 600.0
BG_CEILING_MARGIN_S = 60.0


class Alarm(enum.Enum):
    """Why the supervisor stops an agent on its own."""

    TIMEOUT = "timeout"
    """--timeout passed since the agent started."""
    STALLED = "stalled"
    """No agent event for --stall-timeout."""
    HUNG_AFTER_RESULT = "hung_after_result"
    """The agent printed its result but did not exit within the grace (no background task
    open), or within the CLI's own background-task ceiling (tasks open)."""
    DATABASE_LOST = "database_lost"
    """Team mode: the team's database out of the supervisor's reach for the outage tolerance."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float | None
    stall_s: float | None
    result_grace_s: float
    background_ceiling_s: float
    database_s: float | None = None
    """Team mode: how long the row may go unwritten (the database out of reach)."""


@dataclass
class Readings:
    """Monotonic times the pump records as the run goes."""

    began: float
    last_event: float
    result_at: float | None = None
    background_open: int = 0
    unreached_since: float | None = None
    """Since when the row writer has not reached the database (None: it has, last time)."""


def due(limits: Limits, readings: Readings, now: float) -> Alarm | None:
    """The alarm that fires at `now`, if any (the timeout first, then a stall, then a hang)."""
    if limits.timeout_s is not None and now - readings.began >= limits.timeout_s:
        return Alarm.TIMEOUT
    if limits.stall_s is not None and now - readings.last_event >= limits.stall_s:
        return Alarm.STALLED
    cut_off = readings.unreached_since
    if limits.database_s is not None and cut_off is not None and now - cut_off >= limits.database_s:
        return Alarm.DATABASE_LOST
    if readings.result_at is not None:
        # Claude Code waits for its background tasks after a result (and may take another turn):
        # only once none is open does a silent agent count as hung.
        open_tasks = readings.background_open > 0
        grace = limits.background_ceiling_s if open_tasks else limits.result_grace_s
        if now - readings.result_at >= grace:
            return Alarm.HUNG_AFTER_RESULT
    return None


def background_ceiling(env: Mapping[str, str]) -> float:
    """How long after a result an agent with background tasks open may stay."""
    try:
        ceiling = float(env.get("CLAUDE_CODE_PRINT_BG_WAIT_CEILING_MS", "")) / 1000
    except ValueError:
        ceiling = DEFAULT_BG_CEILING_S
    ceiling = ceiling if ceiling > 0 else DEFAULT_BG_CEILING_S
    return max(ceiling, BACKGROUND_SHELL_LIMIT_S) + BG_CEILING_MARGIN_S


def alarm_text(alarm: Alarm, limits: Limits) -> str:
    if alarm is Alarm.TIMEOUT:
        return f"wall-clock timeout of {limits.timeout_s:g}s reached"
    if alarm is Alarm.STALLED:
        return f"no agent event for {limits.stall_s:g}s: stalled"
    if alarm is Alarm.DATABASE_LOST:
        return (
            f"the team's database has been out of reach for {limits.database_s:g}s "
            "(EMDX_OUTAGE_TOLERANCE_SECONDS): stopping the agent"
        )
    return f"agent did not exit {limits.result_grace_s:g}s after its result"
