"""The scripted server itself (`ScriptedModelServer`): its lifecycle and the traffic it recorded;
the HTTP handling is `handler`'s."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from emdx.testing.model_server.handler import _Server
from emdx.testing.model_server.scripts import (
    _MARKER_RE,
    DEFAULT_SCRIPT,
    JSON,
    Script,
    _normalize_scripts,
    _text_of,
)


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
