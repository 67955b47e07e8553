"""The clocks emdx measures with: the boot clock, which a stepped wall clock cannot move."""

from __future__ import annotations

import time


def boot_clock() -> float:
    """Seconds since boot, counting suspend: the clock of /proc's process start times, so
    ages computed from it do not move when the wall clock is stepped."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()
