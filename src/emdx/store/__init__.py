"""The knowledge base, migrated when opened; the only package that speaks SQL.

One SQLite file in EMDX_HOME by default; in team mode (`EMDX_DATABASE_URL=postgresql://…`,
DESIGN §9) a PostgreSQL database every host shares (`emdx.store.pg`, imported only then). Both
offer the `Store` interface (`store.api`) with the same contract.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from emdx import paths, settings
from emdx.errors import EnvironmentProblem, StoreError
from emdx.models import set_reference_clock
from emdx.store.api import Job, JobQueueAPI, Store
from emdx.store.connection import connect, describe, read, write_transaction
from emdx.store.documents import DocumentStore
from emdx.store.executions import ExecutionStore
from emdx.store.migrations import LATEST_VERSION, current_version, migrate

__all__ = [
    "LATEST_VERSION",
    "Job",
    "JobQueueAPI",
    "SqliteStore",
    "Store",
    "is_database_url",
    "open_store",
]


def is_database_url(location: str | Path) -> bool:
    """Whether `location` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


PROGRESS_STEPS = 200_000


class SqliteStore:
    """An open, migrated SQLite knowledge base."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.location = str(path)
        self.display = str(path)
        self.documents = DocumentStore(conn, path)
        self.executions = ExecutionStore(conn, path)
        self.queue: JobQueueAPI | None = None  # runs start on this machine

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

    def cancel_when(self, cancelled: Callable[[], bool] | None) -> None:
        """SQLite looks at `cancelled` every PROGRESS_STEPS virtual-machine steps (a few
        milliseconds of work, so that a cancelled statement stops at once, and a running one
        rarely takes the interpreter lock from the interface thread)."""
        if cancelled is None:
            self.conn.set_progress_handler(None, 0)
        else:
            check = cancelled
            self.conn.set_progress_handler(lambda: 1 if check() else 0, PROGRESS_STEPS)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(location: Path | str | None = None) -> Store:
    """Open (creating and migrating as needed) a store: the PostgreSQL database of a
    `postgresql://` URL, the SQLite file at a path, or, given nothing, EMDX_DATABASE_URL's
    database when it is set and else EMDX_HOME's knowledge.db."""
    if location is None:
        url = settings.database_url()
        if url is not None:
            if not is_database_url(url):
                # Never fall back to the local file: a host meant to share the team's database
                # would silently work alone. The value is not echoed (it may hold a password).
                raise StoreError(
                    "EMDX_DATABASE_URL (or --db) is not a postgresql:// URL; fix it, or unset "
                    "it to use the SQLite file in EMDX_HOME"
                )
            return _open_pg(url)
        paths.ensure_home()
        return _open_sqlite(paths.db_path())
    if is_database_url(location):
        return _open_pg(str(location))
    return _open_sqlite(Path(location))


def _open_pg(url: str) -> Store:
    try:
        from emdx.store.pg import open_pg_store
    except ImportError as exc:
        raise EnvironmentProblem(
            f"team mode needs PostgreSQL support, which is not installed ({exc.name} missing)",
            ["pip install 'emdx[team]'"],
        ) from None
    store = open_pg_store(url)
    # The team's times are the server's: so is the now a running run's duration is read at.
    set_reference_clock(store.queue.clock_offset_s)
    return store


def _open_sqlite(path: Path) -> SqliteStore:
    set_reference_clock(None)
    conn = connect(path)
    try:
        migrate(conn, path=str(path))
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(describe(exc, path)) from exc
    except BaseException:
        conn.close()
        raise
    return SqliteStore(conn, path)
