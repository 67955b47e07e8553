"""Why new runs must not start now: a usage limit a run waits out, or today's budget spent."""

from __future__ import annotations

from datetime import datetime

from emdx import settings
from emdx.models import now_iso, parse_time, to_iso
from emdx.store import Store


def hold_reason(store: Store) -> str | None:
    """Why new runs must not start now, if they must not: a usage limit is active (a run
    waits for it to reset: starting others would only fail them), or today's spend reached
    EMDX_DAILY_BUDGET_USD. Queued runs wait, and every view says why."""
    limited = store.executions.usage_limit_until(now_iso())
    if limited is not None:
        return f"usage limit until {_local(limited)}"
    budget = settings.daily_budget_usd()
    if budget is not None:
        spent = store.executions.spent_since(local_midnight())
        if spent >= budget:
            return f"daily budget {_usd(budget)} spent ({_usd(spent)} today)"
    return None


def _usd(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 1 else f"${amount:.4f}"


def local_midnight() -> str:
    """The start of today (local time) as an ISO-8601 UTC time: the daily budget's day."""
    now = datetime.now().astimezone()
    return to_iso(now.replace(hour=0, minute=0, second=0, microsecond=0))


def _local(iso: str) -> str:
    moment = parse_time(iso)
    return moment.astimezone().strftime("%H:%M") if moment else iso
