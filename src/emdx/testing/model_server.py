"""A scripted Anthropic Messages API server for running the real Claude Code CLI offline.

Integration tests point the CLI at this server (``ANTHROPIC_BASE_URL``) so that a real
``claude -p`` process runs real tools in a real working directory, while the "model" follows a
script written as plain JSON data.

Script format
-------------
A script is a list of turns. Each turn is a dict with one of:

* ``{"text": "..."}`` -- an ``end_turn`` answer.
* ``{"tool_use": {"name": "Bash", "input": {...}}}`` -- a ``tool_use`` answer, optionally with a
  leading ``"text"``. ``tool_use`` may also be a list of such dicts (one API turn with several
  tool calls: Claude Code prints one ``assistant`` event per content block, all with the same
  ``message.id``); an ``"id"`` key is optional. A Bash call with ``"run_in_background": true``
  in its input starts a background task: the CLI answers the call at once, and when the task
  ends (after the turn's ``result`` if it outlives it) sends another request, the next turn.
* ``{"error": {"status": 400, "type": "invalid_request_error", "message": "..."}}`` -- an HTTP
  error in Anthropic's error JSON shape, optionally with ``"headers": {...}`` and
  ``"rate_limit": {...}`` (below) sent with the error only. With
  ``"times": K`` only the first K requests for this turn (of one conversation) get the error,
  later ones (the CLI's retries, or a ``--resume``) get the turn's ``text``/``tool_use`` -- e.g.
  "529 twice, then succeed". Without ``times`` every request gets it (Claude Code then retries
  10 times over about three minutes; see ``offline_claude_env(max_retries=...)``).

and optionally:

* ``"sleep": seconds`` -- delay before anything is sent (stall tests). A turn with only
  ``sleep`` answers like the end-of-script turn.
* ``"usage": {"input_tokens": N, "output_tokens": M, ...}`` -- token counts to report; any
  other keys (``cache_read_input_tokens``, ``cache_creation_input_tokens``,
  ``server_tool_use``...) are passed through. ``message_start`` carries them all with
  ``output_tokens: 1``, ``message_delta`` the final ``output_tokens``, as the real API does.
* ``"headers": {"name": "value"}`` -- response headers of every answer of this turn, success
  or error (e.g. ``retry-after``, ``x-should-retry``).
* ``"rate_limit": {"status": "allowed_warning", "reset_in": 3600}`` -- on the turn (every
  answer) or in its ``error`` (the error answers only, e.g. ``{"status": 429, "type":
  "rate_limit_error", "message": "...", "times": 1, "rate_limit": {"reset_in": 20}}``): the
  subscription rate-limit headers (``anthropic-ratelimit-unified-*``: status, reset,
  representative claim, the ``5h``/``7d`` windows, overage status and disabled reason, and
  ``retry-after`` with a rejection) computed when the turn is answered: ``reset_in`` seconds
  from now, or ``resets_at`` (epoch seconds). ``status`` is ``rejected`` (the default),
  ``allowed`` or ``allowed_warning``; ``claim`` ``five_hour``, ``seven_day``,
  ``seven_day_opus`` or ``seven_day_sonnet``; ``utilization``, ``overage_status``,
  ``overage_disabled_reason`` and ``retry_after: false`` adjust the details. Claude Code reads
  them only on the subscriber path (``offline_claude_env(oauth=True)``): a rejected 429 then
  becomes a ``rate_limit_event`` and a usage-limit ``result``, with no retry. ``headers`` wins
  over generated ones of the same name.

``{cwd}`` in any string of a turn is replaced by the CLI's working directory (read from the
"Primary working directory" line of its environment notes), for runs whose directory is made at
run time.

Turn selection is stateless: the turn index is the number of model answers (``assistant``
messages) in the request. Retries therefore get the same turn, concurrent CLI runs can share one
server, and ``--resume`` continues the script where the first run stopped (a resume after a
turn that failed asks for that turn again). The only state is the per-turn request count behind
``error.times``, kept per conversation (script, session id, subagent). Past the end of the
script the server answers ``{"text": "done"}``.

Several named scripts may share one server; a conversation selects one by putting the marker
``[[script:NAME]]`` anywhere in its first user message, otherwise ``"default"`` is used. An
Agent-tool subagent is a conversation of its own, so a marker in the subagent's prompt scripts it.

Requests that are not the main conversation (auxiliary calls, ``count_tokens``, unknown
endpoints) get a quick generic answer, are not counted as turns, and are recorded separately in
:attr:`ScriptedModelServer.aux_requests`. :attr:`ScriptedModelServer.log` lists every request
with its headers, the script and turn it was answered from and the HTTP status it got. The
server accepts any credentials: the API-key path sends ``x-api-key``, the subscriber path
``Authorization: Bearer``.

Run standalone with ``python -m emdx.testing.model_server --script FILE.json [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, Self

__all__ = [
    "DEFAULT_SCRIPT",
    "FINAL_TURN",
    "OFFLINE_API_KEY",
    "OFFLINE_OAUTH_TOKEN",
    "ScriptedModelServer",
    "offline_claude_env",
    "unified_rate_limit_headers",
]

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


def unified_rate_limit_headers(
    *,
    status: str = "rejected",
    claim: str = "five_hour",
    resets_at: int,
    now: float | None = None,
    utilization: float | None = None,
    overage_status: str = "rejected",
    overage_disabled_reason: str | None = "org_level_disabled",
    retry_after: bool = True,
) -> dict[str, str]:
    """The ``anthropic-ratelimit-unified-*`` response headers of a subscription (OAuth) account.

    ``claim`` names the window that decides (``five_hour``, ``seven_day``...); it gets
    ``status`` and ``resets_at``, the other window is reported as comfortably allowed. A
    rejection also refuses overage (``overage_status``), otherwise Claude Code would just carry
    on "using overage". ``retry-after`` (seconds until the reset) accompanies a rejection, as on
    the real API.
    """
    current = time.time() if now is None else now
    used = utilization if utilization is not None else (1.0 if status == "rejected" else 0.5)
    window = _CLAIM_WINDOWS[claim]
    other = "7d" if window == "5h" else "5h"
    other_reset = int(current) + (7 * 86400 if other == "7d" else 5 * 3600)
    headers = {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": str(resets_at),
        "anthropic-ratelimit-unified-representative-claim": claim,
        f"anthropic-ratelimit-unified-{window}-status": status,
        f"anthropic-ratelimit-unified-{window}-reset": str(resets_at),
        f"anthropic-ratelimit-unified-{window}-utilization": f"{used:g}",
        f"anthropic-ratelimit-unified-{other}-status": "allowed",
        f"anthropic-ratelimit-unified-{other}-reset": str(other_reset),
        f"anthropic-ratelimit-unified-{other}-utilization": "0.25",
        "anthropic-ratelimit-unified-overage-status": overage_status,
    }
    if overage_status == "rejected" and overage_disabled_reason:
        headers["anthropic-ratelimit-unified-overage-disabled-reason"] = overage_disabled_reason
    if status == "rejected" and retry_after:
        headers["retry-after"] = str(max(0, int(resets_at - current)))
    return headers


def _rate_limit_headers(limit: Any, now: float) -> dict[str, str]:
    if not isinstance(limit, Mapping):
        return {}
    if "resets_at" in limit:
        resets_at = int(limit["resets_at"])
    else:
        resets_at = int(now + float(limit.get("reset_in", 3600)))
    return unified_rate_limit_headers(
        status=str(limit.get("status", "rejected")),
        claim=str(limit.get("claim", "five_hour")),
        resets_at=resets_at,
        now=now,
        utilization=limit.get("utilization"),
        overage_status=str(limit.get("overage_status", "rejected")),
        overage_disabled_reason=limit.get("overage_disabled_reason", "org_level_disabled"),
        retry_after=bool(limit.get("retry_after", True)),
    )


def _answer_headers(turn: Turn, error: Mapping[str, Any] | None, now: float) -> dict[str, str]:
    """The response headers of one answer of a turn: the turn's ``rate_limit`` and ``headers``
    go with every answer, an error's own ``rate_limit`` and ``headers`` only with that error
    (so the answer after ``times`` failures is a clean success). Later ones win: the turn's
    ``rate_limit``, the error's, the error's ``headers``, the turn's ``headers``."""
    headers = _rate_limit_headers(turn.get("rate_limit"), now)
    if error is not None:
        headers.update(_rate_limit_headers(error.get("rate_limit"), now))
        headers.update({str(k): str(v) for k, v in dict(error.get("headers") or {}).items()})
    headers.update({str(k): str(v) for k, v in dict(turn.get("headers") or {}).items()})
    return headers


def _usage(turn: Turn) -> JSON:
    usage: JSON = dict(_DEFAULT_USAGE)
    extra = turn.get("usage")
    if isinstance(extra, Mapping):
        usage.update(extra)
    return usage


def _content_blocks(turn: Turn) -> list[JSON]:
    blocks: list[JSON] = []
    uses = turn.get("tool_use")
    text = turn.get("text")
    # The real API never sends an empty text block in front of a tool call.
    if isinstance(text, str) and (text or uses is None):
        blocks.append({"type": "text", "text": text})
    if uses is not None:
        for use in uses if isinstance(uses, list) else [uses]:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": use.get("id") or _new_id("toolu"),
                    "name": use["name"],
                    "input": dict(use.get("input", {})),
                }
            )
    if not blocks:
        blocks.append({"type": "text", "text": FINAL_TURN["text"]})
    return blocks


def _stop_reason(blocks: Sequence[JSON]) -> str:
    return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"


def _message(model: str, blocks: list[JSON], usage: JSON) -> JSON:
    return {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": _stop_reason(blocks),
        "stop_sequence": None,
        "usage": usage,
    }


def _sse_events(model: str, blocks: list[JSON], usage: JSON) -> Iterator[tuple[str, JSON]]:
    """Yield ``(event, data)`` pairs in the order the real API streams them."""
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"}
    # The real API reports a small provisional output count in message_start and the final
    # count in message_delta; the CLI takes the latter.
    start_usage["output_tokens"] = 1
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": _new_id("msg"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in _chunks(block["text"]):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        else:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": block["id"],
                        "name": block["name"],
                        "input": {},
                    },
                },
            )
            for piece in _chunks(json.dumps(block["input"])):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(blocks), "stop_sequence": None},
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        },
    )
    yield "message_stop", {"type": "message_stop"}


class _Server(ThreadingHTTPServer):
    # Handler threads must never keep the interpreter (or a test run) alive, and stop() must not
    # wait for a CLI that keeps an idle keep-alive connection open: close_connections() ends
    # those instead of joining their threads.
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: ScriptedModelServer

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def open_count(self) -> int:
        with self._open_lock:
            return len(self._open)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            # shutdown() rather than close(): it wakes a handler blocked in recv() and lets the
            # handler's own cleanup close the descriptor exactly once.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 with keep-alive, like the real API; the CLI reuses its connections.
    protocol_version = "HTTP/1.1"
    server: _Server
    # Safety net for a client that neither talks nor closes (e.g. a SIGSTOPped CLI). Kept long:
    # dropping a keep-alive connection while the CLI runs a slow tool invites a reset on reuse,
    # which the CLI reports as a spurious api_retry. A killed CLI's sockets close by themselves.
    timeout = 600

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            # The CLI dropped an idle keep-alive connection (it resets them after a few idle
            # minutes, e.g. while it waits for a background task), or was killed: nothing to
            # answer, and no traceback on stderr.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            sys.stderr.write(f"model_server: {format % args}\n")

    # --- plumbing -------------------------------------------------------------------------

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", _new_id("req"))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, kind: str, message: str, **headers: str) -> None:
        self._send_json(
            status,
            {
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": _new_id("req"),
            },
            headers,
        )

    def _send_sse(
        self, events: Iterator[tuple[str, JSON]], headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", _new_id("req"))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        for event, data in events:
            frame = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _answer(
        self, body: Mapping[str, Any], turn: Turn, headers: Mapping[str, str] | None = None
    ) -> None:
        model = str(body.get("model") or "claude-sonnet-4-5")
        blocks = _content_blocks(turn)
        usage = _usage(turn)
        if body.get("stream"):
            self._send_sse(_sse_events(model, blocks, usage), headers)
        else:
            self._send_json(200, _message(model, blocks, usage), headers)

    # --- endpoints ------------------------------------------------------------------------

    def do_POST(self) -> None:
        try:
            self._post()
        except OSError:
            # The CLI was killed (timeouts, stall tests), or stop() shut the socket, while we
            # were answering; there is nobody left to answer.
            self.close_connection = True

    def _post(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        if (
            path == "/v1/messages"
            and isinstance(body, Mapping)
            and _is_main_conversation(body, self.headers)
        ):
            self._main_turn(body)
            return
        owner._record_aux(self.command, self.path, dict(self.headers.items()), body)
        if path == "/v1/messages/count_tokens":
            size = len(json.dumps(body)) if body is not None else 0
            self._send_json(200, {"input_tokens": max(1, size // 4)})
        elif path == "/v1/messages" and isinstance(body, Mapping):
            self._answer(body, {"text": _AUX_TEXT, "usage": {"input_tokens": 10}})
        else:
            self._send_error(404, "not_found_error", f"no such endpoint: {self.command} {path}")

    def _main_turn(self, body: Mapping[str, Any]) -> None:
        owner = self.server.owner
        messages = body["messages"]
        name = owner._script_name(messages)
        index = sum(1 for m in messages if _is_model_turn(m))
        # Subagent loops (Agent tool) are conversations of their own; the CLI tags them.
        agent = self.headers.get("x-claude-code-agent-id")
        script = owner.scripts.get(name)
        turn: Turn = FINAL_TURN
        if script is not None and index < len(script):
            turn = script[index]
        attempt = owner._count_attempt(name, _session_of(body, self.headers), agent, index)
        error = turn.get("error")
        times = error.get("times") if isinstance(error, Mapping) else None
        failing = isinstance(error, Mapping) and (times is None or attempt < times)
        status = int(error.get("status", 400)) if failing and isinstance(error, Mapping) else 200
        if script is None:
            status = 400
        owner._record_main(
            self.command, self.path, body, dict(self.headers.items()), name, index, agent, status
        )
        if script is None:
            self._send_error(400, "invalid_request_error", f"unknown script {name!r}")
            return
        delay = turn.get("sleep")
        # An Event instead of time.sleep so stop() does not wait out a long stall.
        if isinstance(delay, int | float) and delay > 0 and owner._stopping.wait(delay):
            self.close_connection = True
            return
        if failing and isinstance(error, Mapping):
            self._send_error(
                status,
                str(error.get("type", "invalid_request_error")),
                str(error.get("message", "scripted error")),
                **_answer_headers(turn, error, time.time()),
            )
            return
        self._answer(body, _with_cwd(turn, _cwd_of(body)), _answer_headers(turn, None, time.time()))

    def do_GET(self) -> None:
        self.server.owner._record_aux(self.command, self.path, dict(self.headers.items()), None)
        self._send_error(404, "not_found_error", f"no such endpoint: GET {self.path}")

    def do_HEAD(self) -> None:
        # Connectivity probe (HEAD /api/hello) sent when non-essential traffic is allowed.
        self.server.owner._record_aux(self.command, self.path, dict(self.headers.items()), None)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class ScriptedModelServer:
    """An in-process Anthropic Messages API that answers from a script.

    ``requests`` holds the JSON bodies of conversation requests in arrival order;
    ``aux_requests`` holds ``{"method", "path", "headers", "body"}`` records of everything else
    and ``log`` a short record of both. All return snapshots, so they are safe to read while the
    server is busy.
    """

    def __init__(
        self,
        script: Script | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scripts: Mapping[str, Script] | Script | None = None,
        verbose: bool = False,
    ) -> None:
        self.scripts: dict[str, list[JSON]] = _normalize_scripts(script, scripts)
        self.host = host
        self.port = port
        self.verbose = verbose
        self._lock = threading.Condition()
        self._requests: list[JSON] = []
        self._aux: list[JSON] = []
        self._log: list[JSON] = []
        self._attempts: dict[tuple[str, str | None, str | None, int], int] = {}
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        httpd = _Server((self.host, self.port))
        httpd.owner = self
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"model-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """How many client connections are open (accepted and not yet finished)."""
        return self._httpd.open_count() if self._httpd is not None else 0

    # --- recorded traffic -----------------------------------------------------------------

    @property
    def requests(self) -> list[JSON]:
        with self._lock:
            return list(self._requests)

    @property
    def aux_requests(self) -> list[JSON]:
        with self._lock:
            return list(self._aux)

    @property
    def log(self) -> list[JSON]:
        """Every request in arrival order as ``{kind, method, path, status, script, turn, agent,
        headers}``.

        ``kind`` is ``"main"`` or ``"aux"``; ``status`` (the HTTP status answered), ``script``
        and ``turn`` are None for aux requests; ``agent`` is the CLI's subagent id for requests
        made by an Agent-tool subagent; ``headers`` are the request's headers.
        """
        with self._lock:
            return list(self._log)

    def _count_attempt(self, script: str, session: str | None, agent: str | None, turn: int) -> int:
        """How many earlier requests asked for this turn of this conversation (0 for the
        first), counting this one."""
        key = (script, session, agent, turn)
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            return attempt

    def _record_main(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any],
        headers: JSON,
        script: str,
        turn: int,
        agent: str | None,
        status: int,
    ) -> None:
        entry = {"kind": "main", "method": method, "path": path, "status": status}
        with self._lock:
            self._requests.append(dict(body))
            self._log.append(
                {**entry, "script": script, "turn": turn, "agent": agent, "headers": headers}
            )
            self._lock.notify_all()

    def _record_aux(self, method: str, path: str, headers: JSON, body: Any) -> None:
        with self._lock:
            self._aux.append({"method": method, "path": path, "headers": headers, "body": body})
            self._log.append(
                {
                    "kind": "aux",
                    "method": method,
                    "path": path,
                    "status": None,
                    "script": None,
                    "turn": None,
                    "agent": None,
                    "headers": headers,
                }
            )

    @staticmethod
    def _script_name(messages: Sequence[Any]) -> str:
        for message in messages:
            if isinstance(message, Mapping) and message.get("role") == "user":
                match = _MARKER_RE.search(_text_of(message.get("content")))
                return match.group(1) if match else DEFAULT_SCRIPT
        return DEFAULT_SCRIPT


def _load_script_file(path: str) -> Mapping[str, Script] | Script:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, list | dict):
        raise SystemExit(f"{path}: expected a list of turns or an object of named scripts")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emdx.testing.model_server",
        description="Serve a scripted Anthropic Messages API for the Claude Code CLI.",
    )
    parser.add_argument(
        "--script",
        required=True,
        help="JSON file: a list of turns, or an object mapping script names to lists",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    try:
        server = ScriptedModelServer(
            host=args.host,
            port=args.port,
            scripts=_load_script_file(args.script),
            verbose=args.verbose,
        )
    except (OSError, ValueError) as exc:
        print(f"model_server: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    try:
        # A parent process reads this line to learn the port; flush so it is not stuck in a
        # pipe buffer.
        print(f"MODEL_SERVER_URL={server.url}", flush=True)
        # Wake up periodically: signal handlers only run between bytecodes of the main thread.
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
