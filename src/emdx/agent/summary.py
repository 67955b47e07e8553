"""One short line (icon, text) for each stream-json event: what the log renderer shows."""

from __future__ import annotations

import re
from typing import Any

from emdx.agent.stream import StreamEvent

TOOL_ICONS = {
    "Bash": "💻",
    "Read": "📖",
    "Write": "📝",
    "Edit": "✏️",
    "MultiEdit": "✏️",
    "Glob": "🔎",
    "Grep": "🔎",
    "LS": "📂",
    "TodoWrite": "📋",
    "WebFetch": "🌐",
    "WebSearch": "🌐",
    "Task": "🤖",
}


def _clip(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _tool_detail(tool_input: Any) -> str:
    if not isinstance(tool_input, dict):
        return ""
    for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def summarize(event: StreamEvent) -> tuple[str, str]:
    """(icon, text) for one event; never raises, whatever the event holds."""
    data = event.data or {}
    if event.kind == "malformed":
        return "⚠️", f"unparsable output: {_clip(event.text or '')}"
    if event.kind == "system":
        if event.subtype == "init":
            tools = data.get("tools")
            count = len(tools) if isinstance(tools, list) else 0
            version = data.get("claude_code_version") or "?"
            return (
                "🚀",
                f"session {data.get('session_id', '?')} · {data.get('model', '?')} · "
                f"{count} tools · claude {version}",
            )
        special = _system(event.subtype, data)
        if special is not None:
            return special
        return "⚙️", f"system {event.subtype or ''}".strip()
    if event.kind == "rate_limit_event":
        return _rate_limit(data.get("rate_limit_info"))
    if event.kind == "assistant":
        return _assistant(data)
    if event.kind == "user":
        return _user(data)
    if event.kind == "result":
        return _result(data)
    return "•", f"{event.kind} {event.subtype or ''}".strip()


# What an error result's subtype means, said plainly (an API error says its status instead).
_ENDINGS = {
    "error_max_turns": "turn limit reached",
    "error_max_budget_usd": "budget limit reached",
    "error_during_execution": "error during execution",
    "error_max_structured_output_retries": "structured output retries exhausted",
    "success": "error",  # is_error true with no API status: not a success whatever it says
}
_API_PREFIX = re.compile(r"^API Error:\s*\d+\s*")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cost(data: dict[str, Any]) -> str:
    """` · $0.0123`; for a run that continues a session, its own cost and the session's
    (`total_cost_usd` is the whole session's since 2.1.330; the per-process figure is the
    costs in `model_usage_since_last_result`)."""
    total = _number(data.get("total_cost_usd"))
    if total is None:
        return ""
    since = data.get("model_usage_since_last_result")
    own = None
    if isinstance(since, dict) and since:
        costs = [_number(u.get("costUSD")) for u in since.values() if isinstance(u, dict)]
        own = sum(c for c in costs if c is not None)
    if own is None or abs(own - total) < 0.00005:
        return f" · ${total:.4f}"
    if data.get("result_index") in (None, 0):
        return f" · ${own:.4f} (session ${total:.4f})"
    # A later result of the same process: "since the last result" is not this run's cost.
    return f" · session ${total:.4f}"


def _result(data: dict[str, Any]) -> tuple[str, str]:
    turns = data.get("num_turns")
    took = f"{turns} turn{'' if turns == 1 else 's'}" if isinstance(turns, int) else "? turns"
    cost = _cost(data)
    text = str(data.get("result") or "")
    if data.get("is_error") is False and data.get("subtype") == "success":
        return "✅", f"done in {took}{cost}: {_clip(text)}"
    status = data.get("api_error_status")
    subtype = str(data.get("subtype") or "error")
    if isinstance(status, int) and not isinstance(status, bool):
        ending = f"API error {status}"
        text = _API_PREFIX.sub("", text)  # the text repeats it: "API Error: 400 …"
    else:
        ending = _ENDINGS.get(subtype, subtype)
    errors = data.get("errors")
    if not text and isinstance(errors, list):
        text = " ".join(str(e) for e in errors)
    return "❌", f"{ending} after {took}{cost}: {_clip(text or subtype)}"


def _system(subtype: str | None, data: dict[str, Any]) -> tuple[str, str] | None:
    """Readable lines for the system events that matter to someone watching a run."""
    if subtype == "api_retry":
        attempt, most = data.get("attempt", "?"), data.get("max_retries", "?")
        delay = _number(data.get("retry_delay_ms"))
        wait = f" in {delay / 1000:.1f} s" if delay is not None else ""
        status = data.get("error_status")
        cause = " ".join(str(p) for p in (status, data.get("error")) if p not in (None, ""))
        return "🔁", f"retry {attempt}/{most}{wait}" + (f" after {cause}" if cause else "")
    if subtype == "task_started":
        what = data.get("description") or data.get("task_type") or data.get("task_id") or ""
        where = "background task" if data.get("is_backgrounded") is True else "task"
        return "⏳", _clip(f"{where} started: {what}".strip())
    if subtype == "task_notification":
        status = data.get("status") or "update"
        what = data.get("summary") or data.get("description") or data.get("task_id") or ""
        return "📣", _clip(f"task {status}: {what}".strip())
    if subtype == "background_tasks_changed":
        tasks = data.get("tasks")
        count = len(tasks) if isinstance(tasks, list) else data.get("count")
        return "⏳", f"background tasks: {count if count is not None else '?'} open"
    if subtype == "permission_denied":
        tool = data.get("tool_name") or data.get("tool") or "?"
        return "🚫", _clip(f"tool not allowed: {tool} {_tool_detail(data.get('tool_input'))}")
    return None


def _rate_limit(info: Any) -> tuple[str, str]:
    if not isinstance(info, dict):
        return "⏱️", "rate limit event"
    status = info.get("status") or "?"
    kind = info.get("rateLimitType") or ""
    resets = _number(info.get("resetsAt"))
    when = ""
    if resets is not None:
        from datetime import datetime

        when = " · resets " + datetime.fromtimestamp(resets).strftime("%H:%M")
    if status == "rejected":
        return "⛔", f"usage limit{' (' + str(kind) + ')' if kind else ''} reached{when}"
    return "⏱️", f"rate limit {status}{' (' + str(kind) + ')' if kind else ''}{when}"


def _assistant(data: dict[str, Any]) -> tuple[str, str]:
    message = data.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return "💬", ""
    tools = []
    texts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use":
            name = str(block.get("name") or "?")
            detail = _tool_detail(block.get("input"))
            tools.append((name, detail))
        elif block.get("type") == "text" and block.get("text"):
            texts.append(str(block["text"]))
        elif block.get("type") == "thinking":
            texts.append("(thinking)")
    if tools:
        name, detail = tools[0]
        extra = f" (+{len(tools) - 1} more)" if len(tools) > 1 else ""
        return TOOL_ICONS.get(name, "🔧"), _clip(f"{name}: {detail}{extra}" if detail else name)
    return "💬", _clip(" ".join(texts))


def _user(data: dict[str, Any]) -> tuple[str, str]:
    message = data.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                body = block.get("content")
                if isinstance(body, list):
                    body = " ".join(str(b.get("text", "")) for b in body if isinstance(b, dict))
                icon = "🟥" if block.get("is_error") else "↩️"
                return icon, _clip(f"result: {body}" if body else "result")
    return "👤", "input"
