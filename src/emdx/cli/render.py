"""Output helpers shared by the command modules: JSON, errors, durations, money."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from emdx.service import Service


def open_service(sweep: str | None = None) -> Service:
    """The service, imported on first use so that `emdx --help` stays fast. A command that
    looks at runs passes its name as `sweep`: the sweep (undo abandoned starts, finish runs
    whose supervisor died, owed post-actions, the queue pass) runs first, so that no row stays
    non-final without a live owner however its supervisor ended."""
    from emdx.service import Service

    service = Service()
    if sweep is not None:
        try:
            service.sweep(f"`emdx {sweep}`")
        except BaseException:
            service.close()
            raise
    return service


def error(message: str) -> None:
    print(f"emdx: error: {message}", file=sys.stderr)


def print_json(data: Any) -> None:
    # Compact: with `indent` json falls back to its pure-Python encoder (10 ms on 50 runs).
    # Pipe through `jq` for reading.
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def short_time(iso: str | None) -> str:
    from emdx.models import parse_time

    moment = parse_time(iso)
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | None, allow_zero: bool = False) -> float | None:
    """`90`, `30s`, `5m`, `1h30m`, `7d` → seconds; None stays None; nonsense is a usage error."""
    import re

    import typer

    if text is None or text == "":
        return None
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        value = float(cleaned)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", cleaned)
        if not parts or "".join(n + u for n, u in parts) != cleaned:
            raise typer.BadParameter(f"{text!r} is not a duration (examples: 90, 30s, 5m, 1h30m)")
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    if value < 0 or (value == 0 and not allow_zero):
        raise typer.BadParameter(f"{text!r}: a duration must be positive")
    return value


STATUS_STYLES = {
    "queued": "cyan",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "killed": "magenta",
}
