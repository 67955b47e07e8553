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


def _tool_detail(name: str, tool_input: Any) -> str:
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
        return "⚙️", f"system {event.subtype or ''}".strip()
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
        return (
            "❌",
            f"{data.get('subtype', 'error')} after {turns} turns{cost_text}: {_clip(str(detail))}",
        )
    return "•", f"{event.kind} {event.subtype or ''}".strip()


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
            detail = _tool_detail(name, block.get("input"))
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
