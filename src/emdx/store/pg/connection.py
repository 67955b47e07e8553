"""PostgreSQL connections for the store: opening one, transactions, and one-line errors."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.adapt import Loader
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.string import StrDumperUnknown

from emdx.errors import StoreError, StoreUnavailable
from emdx.masking import Masker, secret_values

CONNECT_TIMEOUT_S = 10
# A statement waiting on a row or advisory lock longer than this is a stuck peer, not a busy
# one: the same order of magnitude as SQLite's busy timeout.
LOCK_TIMEOUT_MS = 30_000
SURROGATE = re.compile("[\ud800-\udfff]")
# Connection failures, a server shutting down or starting up, lock and serialisation
# conflicts, and exhausted resources (disk, memory, connection slots): time may cure them.
_TRANSIENT_SQLSTATES = ("08", "40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53")


def is_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def display_url(url: str) -> str:
    """The URL without its password (what messages and `exec`/`check-env` may show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the PostgreSQL URL given"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))


def masker_for(url: str) -> Masker:
    """Masks the URL's password and any PG* secret (PGPASSWORD) in error texts."""
    env = {name: value for name, value in os.environ.items() if name.startswith("PG")}
    env["EMDX_DATABASE_URL"] = url
    return Masker(secret_values(env))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe(exc: BaseException, url: str) -> str:
    """One line a user can act on, for a psycopg error met on `url` (password masked)."""
    where = display_url(url)
    text = _one_line(str(exc)) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if "connection option" in text or "invalid connection" in text or isinstance(exc, ValueError):
        message = f"cannot use the PostgreSQL URL {where}: {text}"
    elif isinstance(exc, psycopg.OperationalError) and not sqlstate:
        message = f"cannot reach PostgreSQL at {where}: {text}"
    elif sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
        message = f"lost the connection to PostgreSQL at {where}: {text} (try again)"
    elif sqlstate in ("55P03", "40001", "40P01"):
        message = f"database {where} is busy (lock or conflict): {text}; try again"
    elif sqlstate == "53100":
        message = f"cannot write to {where}: {text} (free some disk space on the server)"
    elif sqlstate.startswith("28"):
        message = f"PostgreSQL at {where} refused the credentials: {text}"
    elif sqlstate == "3D000":
        message = f"PostgreSQL database {where} does not exist: {text}"
    elif isinstance(exc, psycopg.ProgrammingError | psycopg.InterfaceError) and not sqlstate:
        message = f"cannot use the PostgreSQL URL {where}: {text}"
    else:
        message = f"database error on {where}: {text}"
    return masker_for(url).mask(message)


def is_transient(exc: BaseException, conn: psycopg.Connection[Any] | None = None) -> bool:
    if conn is not None and (conn.broken or conn.closed):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.OperationalError) and not sqlstate:
        return True
    return sqlstate.startswith(_TRANSIENT_SQLSTATES)


def store_error(exc: BaseException, url: str, conn: psycopg.Connection[Any] | None) -> StoreError:
    kind = StoreUnavailable if is_transient(exc, conn) else StoreError
    return kind(describe(exc, url))


class _NulSafeStr(StrDumperUnknown):
    """PostgreSQL text cannot hold NUL (SQLite's can) nor, being UTF-8, a lone surrogate (what
    a JSON `\\udcff` escape decodes to): an agent-controlled field with one (a model name, an
    error text, a result saved as a document) must not make a write fail, so either is stored as
    U+FFFD — the one way a PostgreSQL row differs from what was written."""

    def dump(self, obj: str) -> bytes:
        if "\x00" in obj:
            obj = obj.replace("\x00", "\ufffd")
        try:
            return obj.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE.sub("\ufffd", obj).encode("utf-8")


class _IsoTimestamptz(Loader):
    """TIMESTAMPTZ read straight into emdx's ISO-8601 form (`models.to_iso`), which is what the
    store returns: rewriting the server's text (UTC session, ISO DateStyle) is several times
    cheaper than a datetime round trip, and `exec list` reads seven times a row."""

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._fallback = TimestamptzLoader(oid, context)

    def load(self, data: Any) -> str:
        text = bytes(data).decode("ascii")
        # "2026-11-24 06:02:03.12+00": date, time, optional fraction, zero offset.
        if len(text) >= 22 and text[10] == " " and text.endswith("+00") and text[4] == "-":
            clock = text[11:-3]
            whole, _, fraction = clock.partition(".")
            if len(whole) == 8 and len(fraction) <= 6:
                return f"{text[:10]}T{whole}.{fraction.ljust(6, '0')}+00:00"
        moment = self._fallback.load(data)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")


def connect(url: str) -> psycopg.Connection[Any]:
    """Autocommit (transactions are explicit), rows as dicts, UTC session, bounded lock waits."""
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            row_factory=dict_row,
            application_name="emdx",
            client_encoding="utf8",
        )
    except (psycopg.Error, ValueError) as exc:
        raise store_error(exc, url, None) from None
    try:
        conn.adapters.register_dumper(str, _NulSafeStr)
        conn.adapters.register_loader("timestamptz", _IsoTimestamptz)
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET DateStyle = 'ISO, YMD'")
        conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    except psycopg.Error as exc:
        conn.close()
        raise store_error(exc, url, conn) from None
    return conn


class Connection:
    """One psycopg connection shared by a store's parts: reconnects after the server went away
    (the next call, not the failed one: a write whose COMMIT was lost is not replayed), and
    serialises threads so that one thread's transaction never takes another's statements."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cancelled: Callable[[], bool] | None = None
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = connect(url)

    def _live(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            self._conn = None
            self._conn = conn = connect(self.url)
        return conn

    @contextlib.contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for statements that write nothing (each its own snapshot); cancelled
        on the server when `cancelled` says so."""
        with self._lock:
            conn = self._live()
            try:
                with self._watched(conn):
                    yield conn
            except psycopg.Error as exc:
                raise store_error(exc, self.url, conn) from None

    @contextlib.contextmanager
    def _watched(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        check = self.cancelled
        if check is None:
            yield
            return
        if check():
            raise StoreError("cancelled")
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                if check():
                    with contextlib.suppress(psycopg.Error):
                        conn.cancel_safe()
                    return

        watcher = threading.Thread(target=watch, name="emdx-pg-cancel", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    @contextlib.contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        """BEGIN … COMMIT, rolled back on any error; psycopg errors become StoreError."""
        with self._lock:
            conn = self._live()
            try:
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise store_error(exc, self.url, conn) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None


__all__ = [
    "Connection",
    "connect",
    "describe",
    "display_url",
    "is_url",
    "masker_for",
]
