"""Output helpers shared by the command modules: the service, JSON, errors, the console.

What they print goes through `emdx.format` (one sanitiser for everything shown to a person).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from emdx.format import json_dumps, one_line

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
    """`emdx: error: …` on stderr, one line: messages can quote agent or document text."""
    print(f"emdx: error: {one_line(message)}", file=sys.stderr)


def print_json(data: Any) -> None:
    """`data` as one compact JSON document on stdout (pipe through `jq` for reading)."""
    sys.stdout.write(json_dumps(data) + "\n")
    sys.stdout.flush()


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


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
