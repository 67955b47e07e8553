"""Documents, tags and full-text search: the only SQL that touches documents."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from emdx.errors import InvalidStateError, NotFoundError, StoreError
from emdx.models import MAX_INT, Document, SearchHit, TagCount, now_iso, storable
from emdx.store.connection import describe, read, read_one, write_transaction
from emdx.store.snippets import Snippets

_IN_TRASH = " (it is in the trash: `emdx restore` brings it back)"
_SEP = "\x1f"  # unit separator: cannot appear in a tag typed on a command line

_DOC_COLUMNS = """d.id, d.title, d.content, d.project, d.created_at, d.updated_at, d.accessed_at,
    COALESCE(d.access_count, 0) AS access_count, d.parent_id,
    COALESCE(d.is_deleted, 0) AS is_deleted, d.deleted_at,
    (SELECT group_concat(t.name, char(31)) FROM document_tags dt JOIN tags t ON t.id = dt.tag_id
     WHERE dt.document_id = d.id) AS tag_names"""


def _document(row: sqlite3.Row) -> Document:
    names = row["tag_names"]
    return Document(
        id=row["id"],
        title=row["title"],
        content=row["content"],
        project=row["project"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        accessed_at=row["accessed_at"],
        access_count=int(row["access_count"]),
        parent_id=row["parent_id"],
        is_deleted=bool(row["is_deleted"]),
        deleted_at=row["deleted_at"],
        tags=tuple(sorted(names.split(_SEP))) if names else (),
    )


def _fts_quoted(query: str) -> str:
    """Every word as an FTS5 string, for queries FTS5 cannot parse as typed (`foo-bar`, `a"b`)."""
    words = [w.replace('"', '""') for w in query.split()]
    return " ".join(f'"{w}"' for w in words if w)


class DocumentStore:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    def save(
        self,
        title: str,
        content: str,
        project: str | None = None,
        tags: Sequence[str] = (),
        parent_id: int | None = None,
    ) -> int:
        with write_transaction(self._conn, self._path) as conn:
            return self.insert(conn, title, content, project, tags, parent_id)

    @classmethod
    def insert(
        cls,
        conn: sqlite3.Connection,
        title: str,
        content: str,
        project: str | None,
        tags: Sequence[str],
        parent_id: int | None,
    ) -> int:
        """INSERT a document and its tags inside the caller's transaction."""
        now = now_iso()
        cur = conn.execute(
            """INSERT INTO documents (title, content, project, created_at, updated_at,
                   accessed_at, access_count, parent_id, is_deleted)
               VALUES (?, ?, ?, ?, ?, ?, 0, ?, 0)""",
            (title, content, project, now, now, now, parent_id),
        )
        doc_id = int(cur.lastrowid or 0)
        cls._link_tags(conn, doc_id, tags)
        return doc_id

    def get(self, doc_id: int, include_deleted: bool = False) -> Document:
        row = None
        if storable(doc_id):
            row = read_one(
                self._conn,
                self._path,
                f"SELECT {_DOC_COLUMNS} FROM documents d WHERE d.id = ?",
                (doc_id,),
            )
        if row is None or (row["is_deleted"] and not include_deleted):
            raise NotFoundError(f"document {doc_id} not found{_IN_TRASH if row else ''}")
        return _document(row)

    def touch(self, doc_id: int) -> None:
        with write_transaction(self._conn, self._path) as conn:
            conn.execute(
                """UPDATE documents SET access_count = COALESCE(access_count, 0) + 1,
                       accessed_at = ? WHERE id = ?""",
                (now_iso(), doc_id),
            )

    def list_documents(
        self,
        project: str | None = None,
        limit: int | None = 50,
        deleted: bool = False,
        tags: Sequence[str] = (),
    ) -> list[Document]:
        where = ["COALESCE(d.is_deleted, 0) = ?"]
        params: list[object] = [1 if deleted else 0]
        if project is not None:
            where.append("d.project = ?")
            params.append(project)
        where.extend(self._tag_filter(tags, params))
        sql = f"SELECT {_DOC_COLUMNS} FROM documents d WHERE {' AND '.join(where)}"
        sql += " ORDER BY d.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(min(limit, MAX_INT))
        return [_document(row) for row in read(self._conn, self._path, sql, params)]

    def search(
        self,
        query: str,
        tags: Sequence[str] = (),
        project: str | None = None,
        limit: int = 20,
        snippets: bool = True,
    ) -> list[SearchHit]:
        """Full-text search ranked by bm25 (title weighted above content); with `snippets`, each
        hit with a snippet around its first match (see `emdx.store.snippets`)."""
        try:
            return self._search(query, tags, project, limit, snippets)
        except sqlite3.OperationalError as exc:
            if "interrupt" in str(exc).lower():
                raise StoreError(describe(exc, self._path)) from exc
            # Not valid FTS5 syntax as typed (`foo-bar`, a stray quote): search the words instead.
        except sqlite3.Error as exc:
            raise StoreError(describe(exc, self._path)) from exc
        try:
            return self._search(_fts_quoted(query), tags, project, limit, snippets)
        except sqlite3.Error as exc:
            raise StoreError(describe(exc, self._path)) from exc

    def _search(
        self, match: str, tags: Sequence[str], project: str | None, limit: int, snippets: bool
    ) -> list[SearchHit]:
        if not match.strip():
            return []
        params: list[object] = [match]
        where = ["documents_fts MATCH ?", "COALESCE(d.is_deleted, 0) = 0"]
        if project is not None:
            where.append("d.project = ?")
            params.append(project)
        where.extend(self._tag_filter(tags, params))
        params.append(min(limit, MAX_INT))
        # Ranked first, then read: only the documents shown are loaded, not every match's text.
        ranked = self._conn.execute(
            f"""SELECT d.id, bm25(documents_fts, 10.0, 1.0, 0.5) AS rank
                FROM documents_fts JOIN documents d ON d.id = documents_fts.rowid
                WHERE {" AND ".join(where)} ORDER BY rank LIMIT ?""",
            params,
        ).fetchall()
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        docs = {
            row["id"]: _document(row)
            for row in self._conn.execute(
                f"SELECT {_DOC_COLUMNS} FROM documents d WHERE d.id IN ({marks})",
                [r["id"] for r in ranked],
            )
        }
        cutter = Snippets(self._conn, match) if snippets else None
        hits = []
        for row in ranked:
            doc = docs.get(row["id"])
            if doc is not None:
                snippet = cutter.of(doc.content) if cutter is not None else ""
                hits.append(SearchHit(doc, float(row["rank"]), snippet))
        return hits

    @staticmethod
    def _tag_filter(tags: Sequence[str], params: list[object]) -> list[str]:
        clauses = []
        for tag in tags:
            clauses.append(
                """EXISTS (SELECT 1 FROM document_tags dt JOIN tags t ON t.id = dt.tag_id
                   WHERE dt.document_id = d.id AND t.name = ?)"""
            )
            params.append(tag)
        return clauses

    def add_tags(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        """Link `tags` to the document; returns the ones that were not there yet."""
        with write_transaction(self._conn, self._path) as conn:
            self._require(conn, doc_id, live=True)
            return self._link_tags(conn, doc_id, tags)

    def remove_tags(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        with write_transaction(self._conn, self._path) as conn:
            self._require(conn, doc_id, live=True)
            return self.unlink_tags(conn, doc_id, tags)

    @staticmethod
    def unlink_tags(conn: sqlite3.Connection, doc_id: int, tags: Sequence[str]) -> list[str]:
        """Remove tags from a document inside the caller's transaction."""
        removed = []
        for tag in tags:
            cur = conn.execute(
                """DELETE FROM document_tags WHERE document_id = ?
                   AND tag_id = (SELECT id FROM tags WHERE name = ?)""",
                (doc_id, tag),
            )
            if cur.rowcount:
                conn.execute(
                    "UPDATE tags SET usage_count = MAX(COALESCE(usage_count, 1) - 1, 0) "
                    "WHERE name = ?",
                    (tag,),
                )
                removed.append(tag)
        return removed

    def tag_counts(self) -> list[TagCount]:
        rows = read(
            self._conn,
            self._path,
            """SELECT t.name, COUNT(d.id) AS n FROM tags t
               LEFT JOIN document_tags dt ON dt.tag_id = t.id
               LEFT JOIN documents d ON d.id = dt.document_id AND COALESCE(d.is_deleted, 0) = 0
               GROUP BY t.id HAVING n > 0 ORDER BY n DESC, t.name""",
        )
        return [TagCount(r["name"], int(r["n"])) for r in rows]

    def set_deleted(self, doc_id: int, deleted: bool) -> None:
        with write_transaction(self._conn, self._path) as conn:
            row = self._require(conn, doc_id)
            if bool(row["is_deleted"]) == deleted:
                state = "already in the trash" if deleted else "not deleted"
                raise InvalidStateError(f"document {doc_id} is {state}; nothing to do")
            conn.execute(
                "UPDATE documents SET is_deleted = ?, deleted_at = ? WHERE id = ?",
                (1 if deleted else 0, now_iso() if deleted else None, doc_id),
            )

    @staticmethod
    def _require(conn: sqlite3.Connection, doc_id: int, live: bool = False) -> sqlite3.Row:
        """The document's row, inside the caller's transaction; with `live`, one in the trash
        is refused like a missing one (before anything changes)."""
        row: sqlite3.Row | None = None
        if storable(doc_id):
            row = conn.execute(
                "SELECT id, COALESCE(is_deleted, 0) AS is_deleted FROM documents WHERE id = ?",
                (doc_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"document {doc_id} not found")
        if live and row["is_deleted"]:
            raise NotFoundError(f"document {doc_id} not found{_IN_TRASH}")
        return row

    @staticmethod
    def link_tags(conn: sqlite3.Connection, doc_id: int, tags: Iterable[str]) -> list[str]:
        """Add tags to a document inside the caller's transaction."""
        return DocumentStore._link_tags(conn, doc_id, tags)

    @staticmethod
    def _link_tags(conn: sqlite3.Connection, doc_id: int, tags: Iterable[str]) -> list[str]:
        added = []
        for tag in tags:
            conn.execute("INSERT OR IGNORE INTO tags (name, usage_count) VALUES (?, 0)", (tag,))
            cur = conn.execute(
                """INSERT OR IGNORE INTO document_tags (document_id, tag_id, created_at)
                   SELECT ?, id, ? FROM tags WHERE name = ?""",
                (doc_id, now_iso(), tag),
            )
            if cur.rowcount:
                conn.execute(
                    "UPDATE tags SET usage_count = COALESCE(usage_count, 0) + 1 WHERE name = ?",
                    (tag,),
                )
                added.append(tag)
        return added
