"""The scripts the server plays: their format checked, turns picked; the offline CLI environment."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from email.message import Message
from typing import Any, Final

JSON = dict[str, Any]
Turn = Mapping[str, Any]
Script = Sequence[Turn]

DEFAULT_SCRIPT: Final = "default"
OFFLINE_API_KEY: Final = "test-key"
OFFLINE_OAUTH_TOKEN: Final = "sk-ant-oat01-offline-test-token"
FINAL_TURN: Final[Turn] = {"text": "done"}

_MARKER_RE: Final = re.compile(r"\[\[script:([A-Za-z0-9_.\-]+)\]\]")
_DEFAULT_USAGE: Final[Mapping[str, int]] = {"input_tokens": 100, "output_tokens": 20}
# Small pieces, so the CLI's streaming code paths (partial text, partial tool JSON) are
# exercised the way a real model response exercises them.
_CHUNK: Final = 24
_AUX_TEXT: Final = "OK"
# Request labels the 2.1.x CLI can attach (found in the binary; not sent to a third-party base
# URL in our runs, so the body-based fallback below is what normally decides).
_CLASS_HEADER: Final = "x-claude-code-request-class"
_AUX_HEADER: Final = "x-claude-code-auxiliary-type"
_CONVERSATION_CLASSES: Final = frozenset({"main", "subagent", "workflow"})
_TURN_KEYS: Final = frozenset(
    {"text", "tool_use", "error", "sleep", "usage", "headers", "rate_limit"}
)
_ERROR_KEYS: Final = frozenset({"status", "type", "message", "headers", "times", "rate_limit"})
_RATE_LIMIT_KEYS: Final = frozenset(
    {
        "status",
        "claim",
        "reset_in",
        "resets_at",
        "utilization",
        "overage_status",
        "overage_disabled_reason",
        "retry_after",
    }
)
_RATE_LIMIT_STATUSES: Final = frozenset({"allowed", "allowed_warning", "rejected"})
# The representative claim names a window; the window's own headers use a short name.
_CLAIM_WINDOWS: Final[Mapping[str, str]] = {
    "five_hour": "5h",
    "seven_day": "7d",
    "seven_day_opus": "7d",
    "seven_day_sonnet": "7d",
}


def offline_claude_env(
    base_url: str,
    config_dir: str,
    home: str | None = None,
    *,
    tmp_dir: str | None = None,
    oauth: bool = False,
    max_retries: int | None = None,
) -> dict[str, str]:
    """Return the environment overrides that make the Claude Code CLI talk only to ``base_url``.

    Callers must also drop ``CLAUDECODE`` from the inherited environment (when set, the CLI
    believes it is nested inside another Claude Code session) and should drop other inherited
    ``ANTHROPIC_*``/``CLAUDE_*`` variables, which can change the model or credentials.

    ``tmp_dir`` also relocates the per-run scratch files the CLI otherwise leaves in ``/tmp``
    (``claude-<uid>/`` task notes and background-task output, the ``cc-socks/<pid>.sock``
    messaging socket).

    ``oauth=True`` takes the subscriber path instead of the API-key path: a dummy
    ``CLAUDE_CODE_OAUTH_TOKEN`` and no ``ANTHROPIC_API_KEY`` (which would win, so the caller's
    environment must not carry one either). The CLI then sends ``Authorization: Bearer`` and the
    ``oauth-2025-04-20`` beta, reads the ``anthropic-ratelimit-unified-*`` headers into
    ``rate_limit_event`` lines and reports a rejected 429 as a usage limit.

    ``max_retries`` sets ``CLAUDE_CODE_MAX_RETRIES`` (the CLI's default is 10 retries over about
    three minutes of backoff; ``retry-after`` can lengthen a wait but not shorten it, so this
    is the way to make "retried until it gave up" quick).
    """
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "DISABLE_TELEMETRY": "1",
        # Also stops the HEAD /api/hello connectivity probe against the base URL.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        # Keeps sessions, settings and project memory of test runs out of the real ~/.claude.
        "CLAUDE_CONFIG_DIR": config_dir,
    }
    if oauth:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = OFFLINE_OAUTH_TOKEN
    else:
        # A dummy key: the server ignores it, but without one the CLI wants to log in.
        env["ANTHROPIC_API_KEY"] = OFFLINE_API_KEY
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    if home is not None:
        env["HOME"] = home
    if tmp_dir is not None:
        env["TMPDIR"] = tmp_dir
        env["CLAUDE_CODE_TMPDIR"] = tmp_dir
        env["XDG_RUNTIME_DIR"] = tmp_dir
    return env


def _new_id(prefix: str) -> str:
    return f"{prefix}_01{uuid.uuid4().hex[:22]}"


def _chunks(text: str) -> Iterator[str]:
    for start in range(0, len(text), _CHUNK):
        yield text[start : start + _CHUNK]


def _text_of(content: Any) -> str:
    """Concatenate the text of a message ``content`` (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
    return "\n".join(parts)


_CWD_RE: Final = re.compile(r"Primary working directory: ([^\s\\]+)")


def _cwd_of(body: Mapping[str, Any]) -> str | None:
    """The CLI's working directory, as its environment notes state it (2.1.330 sends them in a
    ``role: system`` message, older versions in the system prompt)."""
    match = _CWD_RE.search(json.dumps(body.get("messages"))) or _CWD_RE.search(
        json.dumps(body.get("system"))
    )
    return match.group(1) if match else None


def _with_cwd(turn: Turn, cwd: str | None) -> Turn:
    """Replace ``{cwd}`` in a turn's strings with the CLI's working directory, so scripts can
    name absolute paths (Write and Read need them) in directories created at run time."""
    if cwd is None:
        return turn

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{cwd}", cwd)
        if isinstance(value, Mapping):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    filled: Turn = fill(turn)
    return filled


# 2.1.197 fills the gap after a user message that never got an answer (an API error, a usage
# limit) with this assistant message when the session is resumed; 2.1.330+ merges the next
# prompt into that user message instead. It is not a model turn.
_FILLER_TEXT: Final = "No response requested."


def _is_model_turn(message: Any) -> bool:
    """Whether a request message is an answer the model gave (and so a turn of the script)."""
    if not isinstance(message, Mapping) or message.get("role") != "assistant":
        return False
    content = message.get("content")
    blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
    return _text_of(blocks).strip() != _FILLER_TEXT or any(
        isinstance(b, Mapping) and b.get("type") != "text" for b in blocks
    )


def _session_of(body: Mapping[str, Any], headers: Message) -> str | None:
    """The CLI's session id: its ``X-Claude-Code-Session-Id`` header, else the ``session_id``
    in ``metadata.user_id`` (a JSON string). A ``--resume`` keeps the session id."""
    session = headers.get("x-claude-code-session-id")
    if session:
        return str(session)
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    if isinstance(user_id, str):
        with contextlib.suppress(ValueError):
            parsed = json.loads(user_id)
            if isinstance(parsed, Mapping) and isinstance(parsed.get("session_id"), str):
                return str(parsed["session_id"])
    return None


def _is_main_conversation(body: Any, headers: Message) -> bool:
    """Tell an agent conversation apart from the CLI's auxiliary model calls.

    When the CLI labels a request (``x-claude-code-request-class``, sent only in some
    configurations) the label decides. Otherwise an agent loop always offers its tool set, while
    auxiliary calls (titles, summaries, classifiers, quota probes) are single-shot completions
    without tools or carry ``x-claude-code-auxiliary-type``.
    """
    request_class = headers.get(_CLASS_HEADER)
    if request_class:
        return request_class in _CONVERSATION_CLASSES
    if headers.get(_AUX_HEADER):
        return False
    if not isinstance(body, Mapping):
        return False
    tools = body.get("tools")
    messages = body.get("messages")
    return (
        isinstance(tools, list)
        and len(tools) > 0
        and isinstance(messages, list)
        and len(messages) > 0
    )


def _normalize_scripts(
    script: Script | None, scripts: Mapping[str, Script] | Script | None
) -> dict[str, list[JSON]]:
    if script is not None and scripts is not None:
        raise ValueError("pass either script or scripts, not both")
    source: Mapping[str, Script]
    if scripts is None:
        source = {DEFAULT_SCRIPT: script or []}
    elif isinstance(scripts, Mapping):
        source = scripts
    else:
        source = {DEFAULT_SCRIPT: scripts}
    result: dict[str, list[JSON]] = {}
    for name, turns in source.items():
        checked: list[JSON] = []
        for index, turn in enumerate(turns):
            _validate_turn(name, index, turn)
            checked.append(dict(turn))
        result[name] = checked
    return result


def _validate_turn(name: str, index: int, turn: Any) -> None:
    # Fail at construction time: a typo in a script would otherwise surface as a confusing
    # CLI failure deep inside an integration test.
    where = f"script {name!r} turn {index}"
    if not isinstance(turn, Mapping):
        raise ValueError(f"{where}: a turn must be an object, got {type(turn).__name__}")
    unknown = set(turn) - _TURN_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if not ({"text", "tool_use", "error", "sleep"} & set(turn)):
        raise ValueError(f"{where}: needs one of text, tool_use, error, sleep")
    if "tool_use" in turn:
        uses = turn["tool_use"]
        for use in uses if isinstance(uses, list) else [uses]:
            if not isinstance(use, Mapping) or not isinstance(use.get("name"), str):
                raise ValueError(f"{where}: tool_use needs a 'name'")
            if not isinstance(use.get("input", {}), Mapping):
                raise ValueError(f"{where}: tool_use 'input' must be an object")
    if "error" in turn:
        error = turn["error"]
        if not isinstance(error, Mapping) or not isinstance(error.get("status", 400), int):
            raise ValueError(f"{where}: error must be an object with an integer 'status'")
        unknown = set(error) - _ERROR_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown error keys {sorted(unknown)}")
        times = error.get("times")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise ValueError(f"{where}: error 'times' must be an integer")
        if times is None and ("tool_use" in turn or "text" in turn):
            # Without 'times' the error is the turn's only answer: a text would never be sent.
            raise ValueError(
                f"{where}: 'error' combines with 'text' or 'tool_use' only with 'times'"
            )
        _validate_headers(where, error.get("headers", {}))
        if "rate_limit" in error:
            _validate_rate_limit(where, error["rate_limit"])
    _validate_headers(where, turn.get("headers", {}))
    if "rate_limit" in turn:
        _validate_rate_limit(where, turn["rate_limit"])
    if "sleep" in turn and not isinstance(turn["sleep"], int | float):
        raise ValueError(f"{where}: sleep must be a number of seconds")
    if "usage" in turn and not isinstance(turn["usage"], Mapping):
        raise ValueError(f"{where}: usage must be an object of token counts")


def _validate_headers(where: str, headers: Any) -> None:
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in headers.items()
    ):
        raise ValueError(f"{where}: headers must map names to strings or numbers")


def _validate_rate_limit(where: str, limit: Any) -> None:
    if not isinstance(limit, Mapping):
        raise ValueError(f"{where}: rate_limit must be an object")
    unknown = set(limit) - _RATE_LIMIT_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown rate_limit keys {sorted(unknown)}")
    if "reset_in" in limit and "resets_at" in limit:
        raise ValueError(f"{where}: rate_limit takes reset_in or resets_at, not both")
    for key in ("reset_in", "resets_at", "utilization"):
        if key in limit and (
            isinstance(limit[key], bool) or not isinstance(limit[key], int | float)
        ):
            raise ValueError(f"{where}: rate_limit {key!r} must be a number")
    if limit.get("status", "rejected") not in _RATE_LIMIT_STATUSES:
        raise ValueError(
            f"{where}: rate_limit status must be one of {sorted(_RATE_LIMIT_STATUSES)}"
        )
    if limit.get("claim", "five_hour") not in _CLAIM_WINDOWS:
        raise ValueError(f"{where}: rate_limit claim must be one of {sorted(_CLAIM_WINDOWS)}")
