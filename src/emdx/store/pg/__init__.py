"""The store on PostgreSQL (team mode, DESIGN §9): the SQLite store's API and contract, on a
database every host shares. Needs the `team` extra (psycopg 3); `emdx.store` imports this
package only when a PostgreSQL URL is in use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from emdx import paths
from emdx.store.pg.connection import Connection, display_url
from emdx.store.pg.documents import PgDocumentStore
from emdx.store.pg.executions import PgExecutionStore
from emdx.store.pg.migrations import LATEST_VERSION, current_version, migrate
from emdx.store.pg.queue import PgJobQueue

__all__ = ["LATEST_VERSION", "PgStore", "open_pg_store"]


class PgStore:
    """An open, migrated PostgreSQL store."""

    def __init__(self, db: Connection) -> None:
        self._db = db
        self.location = db.url
        self.display = display_url(db.url)
        # Process markers (EMDX_DB) name this home's database file, also in team mode: they
        # tell this host's runs from another home's, which is all `cleanup processes` (local
        # to each host) needs.
        self.path: Path = paths.db_path()
        self.documents = PgDocumentStore(db)
        self.executions = PgExecutionStore(db)
        self.queue = PgJobQueue(db)

    @property
    def version(self) -> int:
        with self._db.read() as conn:
            return current_version(conn)

    def integrity_ok(self) -> bool:
        """The server answers and the schema is the one this emdx knows."""
        return self.version == LATEST_VERSION

    def complete_post_actions(
        self,
        execution_id: int,
        output: tuple[str, str, str | None, list[str], int] | None,
        add_tags: list[str],
        remove_tags: list[str],
    ) -> tuple[bool, int | None]:
        """A completed run's post-actions, exactly once: the output document and the source's
        tags, in the transaction that moves `post_actions` from pending to done. The row is
        locked first, so a second caller waits, then finds them done: (False, None)."""
        with self._db.write() as conn:
            row: dict[str, Any] | None = conn.execute(
                "SELECT post_actions, doc_id FROM executions WHERE id = %s FOR UPDATE",
                (execution_id,),
            ).fetchone()
            if row is None or row["post_actions"] != "pending":
                return False, None
            output_id = None
            if output is not None:
                title, content, project, tags, parent = output
                output_id = PgDocumentStore.insert(conn, title, content, project, tags, parent)
            source = row["doc_id"]
            if (
                source is not None
                and conn.execute("SELECT 1 FROM documents WHERE id = %s", (source,)).fetchone()
            ):
                PgDocumentStore.link_tags(conn, source, add_tags)
                PgDocumentStore.unlink_tags(conn, source, remove_tags)
            conn.execute(
                "UPDATE executions SET post_actions = 'done', "
                "output_doc_id = COALESCE(%s, output_doc_id) WHERE id = %s",
                (output_id, execution_id),
            )
        return True, output_id

    def cancel_when(self, cancelled: Callable[[], bool] | None) -> None:
        """A statement running when `cancelled()` turns true is cancelled on the server
        (looked at every 50 ms by a watcher thread while it runs)."""
        self._db.cancelled = cancelled

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pg_store(url: str) -> PgStore:
    """Connect to `url` and migrate (concurrent openers migrate once); StoreError otherwise."""
    db = Connection(url)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return PgStore(db)
