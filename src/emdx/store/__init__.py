"""The knowledge base: one SQLite file, migrated when opened; the only module that speaks SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from emdx import paths
from emdx.errors import StoreError
from emdx.store.connection import connect, describe, read, write_transaction
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
        try:
            return current_version(self.conn)
        except sqlite3.Error as exc:
            raise StoreError(describe(exc, self.path)) from exc

    def integrity_ok(self) -> bool:
        rows = read(self.conn, self.path, "PRAGMA quick_check")
        return bool(rows and rows[0][0] == "ok")

    def complete_post_actions(
        self,
        execution_id: int,
        output: tuple[str, str, str | None, list[str], int] | None,
        add_tags: list[str],
        remove_tags: list[str],
    ) -> tuple[bool, int | None]:
        """A completed run's post-actions, exactly once: the output document (title, content,
        project, tags, parent) and the source's tags, in the same transaction that moves
        `post_actions` from pending to done. (False, None) when they were done already."""
        with write_transaction(self.conn, self.path) as conn:
            row = conn.execute(
                "SELECT post_actions, doc_id FROM executions WHERE id = ?", (execution_id,)
            ).fetchone()
            if row is None or row["post_actions"] != "pending":
                return False, None
            output_id = None
            if output is not None:
                title, content, project, tags, parent = output
                output_id = DocumentStore.insert(conn, title, content, project, tags, parent)
            source = row["doc_id"]
            if (
                source is not None
                and conn.execute("SELECT 1 FROM documents WHERE id = ?", (source,)).fetchone()
            ):
                DocumentStore.link_tags(conn, source, add_tags)
                DocumentStore.unlink_tags(conn, source, remove_tags)
            conn.execute(
                "UPDATE executions SET post_actions = 'done', "
                "output_doc_id = COALESCE(?, output_doc_id) WHERE id = ?",
                (output_id, execution_id),
            )
        return True, output_id

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
