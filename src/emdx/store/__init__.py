"""The knowledge base: one SQLite file, migrated when opened; the only module that speaks SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from emdx import paths
from emdx.errors import StoreError
from emdx.store.connection import connect, describe
from emdx.store.documents import DocumentStore
from emdx.store.executions import ExecutionStore
from emdx.store.migrations import LATEST_VERSION, current_version, migrate

__all__ = ["LATEST_VERSION", "Store", "open_store"]


class Store:
    """An open, migrated knowledge base."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.documents = DocumentStore(conn, path)
        self.executions = ExecutionStore(conn, path)

    @property
    def version(self) -> int:
        return current_version(self.conn)

    def integrity_ok(self) -> bool:
        return bool(self.conn.execute("PRAGMA quick_check").fetchone()[0] == "ok")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: Path | None = None) -> Store:
    """Open (creating and migrating as needed) the knowledge base at `path` or in EMDX_HOME."""
    if path is None:
        paths.ensure_home()
        path = paths.db_path()
    conn = connect(path)
    try:
        migrate(conn, path=str(path))
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(describe(exc, path)) from exc
    except BaseException:
        conn.close()
        raise
    return Store(conn, path)
