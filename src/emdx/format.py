"""Text shown to a person, for both shells: the one sanitiser, JSON output, log lines, units.

Everything an agent or a document can put on a screen (log messages, tool output, stderr, titles,
content, model and session fields) is hostile (DESIGN §8): a raw ESC, BEL or C1 byte lets it set
the window title, write the clipboard (OSC 52), clear the screen or hide text. `sanitize` shows
those characters visibly escaped instead; every shell prints through it. Rich is imported lazily,
only by `markup_safe`: `emdx --help` imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from emdx import jsonio
from emdx.models import Execution, parse_time

# C0 but newline and tab, DEL, C1, U+061C / U+200E / U+200F (bidi marks), U+2028 / U+2029 (line
# and paragraph separators), U+202A–U+202E and U+2066–U+2069 (bidi embeddings, overrides and
# isolates, which reorder what follows: "Trojan Source"), and lone surrogates (what
# `surrogateescape` makes of bytes that are not UTF-8). None of them is `str.isprintable()`.
_UNSAFE_CLASS = (
    r"\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
)
# A CRLF line end is shown as a newline: a `\r` right before `\n` cannot hide anything, and
# documents written on Windows stay readable. A lone `\r` (which lets later text overwrite the
# line) is escaped like the rest.
_UNSAFE = re.compile(rf"\r\n|[{_UNSAFE_CLASS}]")
# What json.dumps(ensure_ascii=False) leaves raw of that set (it escapes C0 itself).
_JSON_RAW = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# A run of whitespace holding anything but plain spaces (a line break, a tab, a form feed…).
_BREAK_RUN = re.compile(r" *[^\S ]\s*")
# A bracket after a backslash that starts no tag: Rich reads `\[` there as `[` (and
# `rich.markup.escape` leaves it), so the typed backslash would vanish.
_BARE_BRACKET = re.compile(r"(?<=\\)\[(?![a-z#/@][^\[]*?\])")


def _escaped(match: re.Match[str]) -> str:
    text = match.group()
    if text == "\r\n":
        return "\n"
    code = ord(text)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitize(text: str) -> str:
    """`text` safe for a terminal: control characters but newline and tab, DEL, C1 controls,
    bidi controls, line/paragraph separators and lone surrogates become visible escapes
    (`\\x1b`, `\\x9b`, `\\u202e`, `\\udcff`); everything else, backslashes included, is kept."""
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escaped, text)


def one_line(text: str) -> str:
    """`sanitize` for a single line (a table cell, a title): every run of whitespace that holds
    a line break, a tab or another non-space whitespace character becomes one space first."""
    if text.isprintable():
        return text
    return sanitize(_BREAK_RUN.sub(" ", text))


def markup_safe(text: str) -> str:
    """`sanitize`, then Rich markup escaped, for text put into Rich markup: `[bold]` and `\\[`
    print as typed. Trailing backslashes are doubled so that they cannot escape a tag that
    follows (where none follows, Rich shows them doubled)."""
    from rich.markup import escape

    shown = sanitize(text)
    safe = _BARE_BRACKET.sub(r"\\[", escape(shown))
    trailing = len(shown) - len(shown.rstrip("\\"))
    if trailing:  # `escape` doubles one trailing backslash, not an even run of them
        safe = safe.rstrip("\\") + "\\" * (2 * trailing)
    return safe


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_dumps(data: Any) -> str:
    """The one JSON encoder for `--json` and `--raw` output: compact, UTF-8 text kept readable,
    and every character `sanitize` would escape written as a `\\uXXXX` escape (json leaves DEL,
    C1, bidi controls, U+2028/U+2029 and lone surrogates raw), so the output is still JSON that
    decodes to `data`, and no terminal it reaches interprets it. (A lone high surrogate right
    before a lone low one is written as the pair, which JSON reads as the character they
    encode: JSON has no other way to write them.)"""
    # No `indent`: with it json falls back to its pure-Python encoder (10 ms on 50 runs).
    text = jsonio.dumps(data, ensure_ascii=False, default=str)
    # Outside strings JSON is ASCII, so every match is inside a string, where `\uXXXX` is valid.
    return _JSON_RAW.sub(_json_escaped, text) if _JSON_RAW.search(text) else text


def tag_text(tags: Sequence[str]) -> str:
    """A document's tags on one line, comma-separated: a tag may contain spaces."""
    return one_line(", ".join(tags))


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 turn`, `2 turns`, `0 runs`; `nouns` for an irregular plural (`branches`)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


_LEVEL_ICONS = {"warning": "⚠️", "error": "❌"}


def log_line(entry: Mapping[str, Any]) -> str:
    """`HH:MM:SS icon message`, the one readable form of a run-log entry (local time), on one
    line whatever the message holds, so that an entry can never pass for another."""
    moment = parse_time(entry.get("ts"))
    stamp = moment.astimezone().strftime("%H:%M:%S") if moment else "--:--:--"
    icon = entry.get("icon") or _LEVEL_ICONS.get(str(entry.get("level")), "•")
    return f"{stamp} {one_line(str(icon))} {one_line(str(entry.get('message', '')))}"


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h10m`, `3d04h`; `-` for none."""
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
    """A stored time as local `YYYY-MM-DD HH:MM:SS`; `-` for none or nonsense."""
    moment = parse_time(iso)
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLES = {
    "preparing": "dim",
    "queued": "cyan",
    "running": "yellow",
    "waiting": "blue",
    "completed": "green",
    "failed": "red",
    "killed": "magenta",
}
"""Colour of each execution status, in both shells."""


def clock_time(iso: str | None) -> str:
    """`23:54` (local), or `Dec 02 23:54` when not today."""
    moment = parse_time(iso)
    if moment is None:
        return "-"
    local = moment.astimezone()
    today = datetime.now().astimezone().date()
    return local.strftime("%H:%M" if local.date() == today else "%b %d %H:%M")


def state_note(execution: Execution, hold: str | None = None) -> str:
    """What an active run is doing beyond its status, in words every view shows the same way:
    "waiting for usage limit until 23:54 (4h12m)", "retrying 3/10 after 529 overloaded",
    "held: usage limit until 23:54", "2 background tasks open". Empty when nothing to say."""
    from emdx.models import ExecutionStatus, reference_now

    status = execution.status
    if status is ExecutionStatus.WAITING:
        what = {"usage_limit": "usage limit", "retry_backoff": "retry backoff"}.get(
            execution.waiting_reason or "", execution.waiting_reason or "?"
        )
        until = parse_time(execution.waiting_until)
        left = (until - reference_now()).total_seconds() if until else None
        span = f" ({duration(max(0.0, left))})" if left is not None else ""
        return one_line(f"waiting for {what} until {clock_time(execution.waiting_until)}{span}")
    if status is ExecutionStatus.QUEUED and hold:
        return one_line(f"held: {hold}")
    if status is ExecutionStatus.RUNNING:
        retrying = execution.details.get("retrying")
        if isinstance(retrying, dict):
            cause = " ".join(
                str(part)
                for part in (retrying.get("error_status"), retrying.get("error"))
                if part not in (None, "")
            )
            attempt = f"{retrying.get('attempt', '?')}/{retrying.get('max_retries', '?')}"
            return one_line(f"retrying {attempt}" + (f" after {cause}" if cause else ""))
        open_tasks = execution.details.get("background_open")
        if isinstance(open_tasks, int) and open_tasks > 0:
            return f"{plural(open_tasks, 'background task')} open"
    return ""


_API_ERROR_PREFIX = re.compile(r"^API Error:\s*\d*\s*")


def reason_lines(execution: Execution) -> list[str]:
    """Why a finished run ended so: the reason's meaning and usual fix, the API error, the
    tools that were refused, the CLI's errors — for `exec show` and the TUI."""
    from emdx.reasons import reason_help

    lines = []
    found = reason_help(execution.reason)
    if found is not None and execution.status.is_final:
        meaning, fix = found
        lines.append(f"{meaning}" + (f" — {fix}" if fix else ""))
    details = execution.details
    if execution.resets_at:
        lines.append(f"usage limit resets {clock_time(execution.resets_at)}")
    status = details.get("api_error_status")
    text = details.get("error_text")
    if status or text:
        kind = details.get("api_error") or details.get("api_error_type") or ""
        head = " ".join(str(p) for p in ("API error", status, kind) if p)
        if text:
            text = _API_ERROR_PREFIX.sub("", str(text))  # the text repeats "API Error: 529"
        lines.append(f"{head}: {text}" if text else head)
    for error in details.get("errors") or []:
        lines.append(f"error: {error}")
    for denial in details.get("permission_denials") or []:
        if isinstance(denial, dict):
            tool_input = denial.get("tool_input")
            shown = json_dumps(tool_input) if tool_input is not None else ""
            lines.append(f"denied: {denial.get('tool_name', '?')} {shown[:200]}".rstrip())
    return [one_line(line) for line in lines]


def tag_label(name: str) -> str:
    """A tag as shown: its emoji with the word it stands for (`🎯 gameplan`), else as is."""
    from emdx import tags

    return tags.label(name)


def branch_note(execution: Execution) -> str:
    """`branch: exec-4-fix-2 (exec-4-fix already existed)` for a run in a worktree."""
    from emdx.smart import branch_name

    if not execution.branch:
        return ""
    wanted = branch_name(execution.id, execution.doc_title)
    taken = f" ({wanted} already existed)" if execution.branch != wanted else ""
    return f"branch: {one_line(execution.branch)}{taken}"
