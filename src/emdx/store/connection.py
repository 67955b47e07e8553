"""SQLite connections with the PRAGMAs emdx relies on, and the helpers every write uses."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from emdx.errors import StoreError, StoreUnavailable

# Long enough that a heartbeat or a final write waits out another writer's transaction; the
# runner's final write retries past this (see retry_transient) because a lost final state is worse.
BUSY_TIMEOUT_MS = 30_000

T = TypeVar("T")


def describe(exc: sqlite3.Error, path: Path | str) -> str:
    """One line a user can act on, for an sqlite3 error met on `path`."""
    text = str(exc)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return f"{path} is not a usable emdx database ({text}); move it aside to start fresh"
    if "disk is full" in lowered or "disk i/o" in lowered:
        return f"cannot write to {path}: {text} (free some disk space and try again)"
    if "readonly" in lowered or "read-only" in lowered:
        return f"cannot write to {path}: the database or its directory is read-only"
    if "unable to open" in lowered:
        return f"cannot open database {path}: check that its directory exists and is writable"
    if "locked" in lowered or "busy" in lowered:
        return f"database {path} is locked by another process; try again"
    return f"database error on {path}: {text}"


def read(
    conn: sqlite3.Connection, path: Path | str, sql: str, params: Sequence[object] = ()
) -> list[sqlite3.Row]:
    """Every row of a read; sqlite3 errors become StoreError as on writes (a corrupt page in a
    database that still opens is met by the first read that touches it, not by `connect`)."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(describe(exc, path)) from exc


def read_one(
    conn: sqlite3.Connection, path: Path | str, sql: str, params: Sequence[object] = ()
) -> sqlite3.Row | None:
    rows = read(conn, path, sql, params)
    return rows[0] if rows else None


def connect(path: Path) -> sqlite3.Connection:
    """Open `path` in autocommit mode (transactions are explicit), WAL, foreign keys on."""
    new_file = not path.exists()
    try:
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(describe(exc, path)) from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(describe(exc, path)) from exc
    with contextlib.suppress(OSError):
        # Also tightens files written by earlier releases with the default umask.
        if new_file or path.stat().st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out other writers: SQLite does not apply the busy timeout to this
    switch, so a database still in rollback mode (a fresh or legacy file) opened while another
    process writes it would otherwise fail at once with "database is locked"."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if not is_locked(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def write_transaction(
    conn: sqlite3.Connection, path: Path | str = ""
) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error; sqlite errors become StoreError."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(describe(exc, path)) from exc
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(describe(exc, path)) from exc
        raise


def is_locked(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    text = str(cause).lower()
    return isinstance(cause, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def is_transient(exc: BaseException) -> bool:
    """An error that time may cure: a lock, a full disk, an I/O error (or, on PostgreSQL, a
    server that cannot be reached right now)."""
    if isinstance(exc, StoreUnavailable):
        return True
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    if not isinstance(cause, sqlite3.OperationalError | sqlite3.DatabaseError):
        return False
    text = str(cause).lower()
    return any(
        part in text for part in ("locked", "busy", "disk is full", "disk i/o", "unable to open")
    )


def retry_transient(
    action: Callable[[], T],
    deadline_s: float,
    pause_s: float = 0.5,
    on_retry: Callable[[StoreError], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`, retrying through locks, a full disk and I/O errors (each reported to
    `on_retry`) until `deadline_s` has passed; the last error is raised then."""
    return _retry(action, deadline_s, pause_s, is_transient, on_retry, clock, sleep)


def _retry(
    action: Callable[[], T],
    deadline_s: float,
    pause_s: float,
    retryable: Callable[[BaseException], bool],
    on_retry: Callable[[StoreError], None] | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> T:
    give_up = clock() + deadline_s
    while True:
        try:
            return action()
        except StoreError as exc:
            if not retryable(exc) or clock() >= give_up:
                raise
            if on_retry is not None:
                on_retry(exc)
            sleep(pause_s)
