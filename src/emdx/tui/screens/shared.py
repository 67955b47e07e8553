"""What both screens share: how often their live views refresh, and table cells made from user
or agent text (every string that reaches a widget goes through `emdx.format`)."""

from __future__ import annotations

from rich.text import Text
from textual.app import App

from emdx.format import STATUS_STYLES, markup_safe, one_line

REFRESH_S = 1.0


def refresh_interval(app: App[None]) -> float:
    """How often live views refresh (EmdxApp's refresh_s; 0 = never)."""
    return float(getattr(app, "refresh_s", REFRESH_S))


def status_text(status: str) -> Text:
    return Text(one_line(status), style=STATUS_STYLES.get(status, ""))


def cell(text: str) -> str:
    """A table cell from user or agent text: one line, sanitised, markup escaped."""
    return markup_safe(one_line(text))
