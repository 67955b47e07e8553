"""Epoch seconds as the supervisor records them (ISO-8601 UTC) and says them in its notes (the
local time of day, a short span)."""

from __future__ import annotations

from datetime import UTC, datetime

from emdx.models import to_iso


def iso(epoch: float) -> str:
    return to_iso(datetime.fromtimestamp(epoch, UTC))


def time_of_day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def span(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
