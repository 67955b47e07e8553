"""The HTTP side of the scripted server: a threading server that keeps track of its open
connections, and the handler that answers each request from the owner's scripts."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from emdx.testing.model_server.answers import (
    _answer_headers,
    _content_blocks,
    _message,
    _sse_events,
    _usage,
)
from emdx.testing.model_server.scripts import (
    _AUX_TEXT,
    FINAL_TURN,
    JSON,
    Turn,
    _cwd_of,
    _is_main_conversation,
    _is_model_turn,
    _new_id,
    _session_of,
    _with_cwd,
)

if TYPE_CHECKING:
    from emdx.testing.model_server.server import ScriptedModelServer


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
