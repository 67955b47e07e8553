"""A real network outage between team-mode processes and the PostgreSQL server: a TCP proxy on
127.0.0.1 that forwards to the server until it is taken down — every connection through it
closed at once, and new ones refused (the server stopped, restarting) or left hanging (a failover,
a partition: the connect waits, nothing answers) — and brought back. Unlike
`team_helpers.drop_connections` (the server cuts its own backends and takes new ones at once), a
client sees no server at all for as long as the outage lasts.

Threads only, bounded: at most `MAX_CONNECTIONS` at once, each pumped by two threads; `close()`
ends every one of them. Used as a context manager."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

MAX_CONNECTIONS = 200
CHUNK = 64 * 1024


class PgProxy:
    def __init__(self, target_url: str, mode: str = "refuse") -> None:
        if mode not in ("refuse", "hang"):
            raise ValueError(f"mode {mode!r}: refuse or hang")
        self.target_url = target_url
        """The server's own URL (what the proxy forwards to: still up during an outage)."""
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.mode = mode
        self._parts = parts
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._held: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.down_since: float | None = None
        self.outages: list[tuple[float, float]] = []
        self.accepted = 0
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._listener: socket.socket | None = None
        self._listen()

    @property
    def url(self) -> str:
        """The target URL with the proxy's address in place of the server's."""
        netloc = self._parts.netloc.rsplit("@", 1)
        user = f"{netloc[0]}@" if len(netloc) == 2 else ""
        return urlunsplit(
            (
                self._parts.scheme,
                f"{user}127.0.0.1:{self.port}",
                self._parts.path,
                self._parts.query,
                "",
            )
        )

    # -- up and down --------------------------------------------------------------------

    def down(self) -> None:
        """Every connection through the proxy closed; new ones refused or left hanging."""
        with self._lock:
            self.down_since = time.monotonic()
            pairs, self._pairs = self._pairs, []
            if self.mode == "refuse" and self._listener is not None:
                _close(self._listener)
                self._listener = None
        for client, server in pairs:
            _close(client)
            _close(server)

    def up(self) -> None:
        """Forward again (connections held while down are dropped: their clients retry)."""
        with self._lock:
            if self.down_since is not None:
                self.outages.append((self.down_since, time.monotonic()))
            self.down_since = None
            held, self._held = self._held, []
        for sock in held:
            _close(sock)
        if self._listener is None:
            self._listen()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.down()
        try:
            yield
        finally:
            self.up()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
            held, self._held = self._held, []
        if listener is not None:
            _close(listener)
        for client, server in pairs:
            _close(client)
            _close(server)
        for sock in held:
            _close(sock)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forwarding ---------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        self._spawn(self._accept, listener)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: down (refuse) or the end
            with self._lock:
                if self._closed:
                    _close(client)
                    return
                if self.down_since is not None or len(self._pairs) >= MAX_CONNECTIONS:
                    # Down in hang mode: accepted, never answered (until up() drops it).
                    if len(self._held) < MAX_CONNECTIONS:
                        self._held.append(client)
                    else:
                        _close(client)
                    continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self.down_since is not None or self._closed:
                    _close(client)
                    _close(server)
                    continue
                self._pairs.append((client, server))
                self.accepted += 1
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        _close(source)
        _close(sink)
        with self._lock:
            self._pairs = [p for p in self._pairs if source not in p]


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
