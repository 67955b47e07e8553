"""One short line (icon, text) for each stream-json event: what the log renderer shows."""

from __future__ import annotations

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
        cost = data.get("total_cost_usd")
        cost_text = f" · ${cost:.4f}" if isinstance(cost, int | float) else ""
        turns = data.get("num_turns", "?")
        if data.get("is_error") is False and data.get("subtype") == "success":
            return "✅", f"done in {turns} turns{cost_text}: {_clip(str(data.get('result', '')))}"
        detail = data.get("result") or data.get("subtype") or "error"
        # API errors arrive as subtype "success" with is_error true: say what they are.
        label = data.get("subtype")
        if label in (None, "success"):
            status = data.get("api_error_status")
            label = f"API error {status}" if isinstance(status, int) else "error"
        return "❌", f"{label} after {turns} turns{cost_text}: {_clip(str(detail))}"
    return "•", f"{event.kind} {event.subtype or ''}".strip()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


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
