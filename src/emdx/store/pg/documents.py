"""Documents, tags and full-text search on PostgreSQL: the same contract as `store.documents`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from emdx.errors import InvalidStateError, NotFoundError
from emdx.models import Document, SearchHit, TagCount, to_iso, utc_now
from emdx.store.pg.connection import Connection
from emdx.store.pg.migrations import TS_CONFIG
from emdx.store.pg.query import TsQuery, translate

BIGINT_MAX = 2**63 - 1
# Title, content and project weighted 10 : 1 : 0.5, like SQLite's bm25 (weights are {D,C,B,A}).
RANK_WEIGHTS = "{0.05, 0.05, 0.1, 1.0}"
# The snippet is made from a bounded window of the content around the first hit, never from a
# whole (up to 16 MiB) document, and cut to SNIPPET_MAX_CHARS.
WINDOW_BEFORE = 300
WINDOW_AFTER = 700
SNIPPET_MAX_CHARS = 300
_HEADLINE_OPTIONS = (
    "StartSel=[, StopSel=], MaxWords=12, MinWords=6, ShortWord=0, MaxFragments=1, "
    "FragmentDelimiter=…"
)

_DOC_COLUMNS = """d.id, d.title, d.content, d.project, d.created_at, d.updated_at,
    d.accessed_at, d.access_count, d.parent_id, d.is_deleted, d.deleted_at,
    ARRAY(SELECT t.name FROM document_tags dt JOIN tags t ON t.id = dt.tag_id
          WHERE dt.document_id = d.id) AS tag_names"""


def _iso(value: str | datetime | None) -> str | None:
    """A time read back: the connection loads TIMESTAMPTZ as ISO text already."""
    if value is None or isinstance(value, str):
        return value
    return to_iso(value)


def _document(row: dict[str, Any]) -> Document:
    return Document(
        id=row["id"],
        title=row["title"],
        content=row["content"],
        project=row["project"],
        created_at=_iso(row["created_at"]),
        updated_at=_iso(row["updated_at"]),
        accessed_at=_iso(row["accessed_at"]),
        access_count=int(row["access_count"] or 0),
        parent_id=row["parent_id"],
        is_deleted=bool(row["is_deleted"]),
        deleted_at=_iso(row["deleted_at"]),
        # Sorted in Python, as on SQLite: the server's collation would order emoji differently.
        tags=tuple(sorted(row["tag_names"] or ())),
    )


def in_range(value: int) -> bool:
    """Whether an id fits a BIGINT: one that does not names no row (rather than an error)."""
    return -BIGINT_MAX - 1 <= value <= BIGINT_MAX


def sql_limit(limit: int | None) -> int | None:
    """SQLite reads a negative LIMIT as no limit, PostgreSQL refuses it: read it as SQLite."""
    if limit is None or limit < 0:
        return None
    return min(limit, BIGINT_MAX)


def _window(content: str, words: list[str], lexemes: list[str]) -> str:
    """The part of the content around the first occurrence of a query word (as typed, or its
    stem: `running` finds `runs` through `run`), else its start."""
    typed = {w.strip("*").lower() for w in (*words, *lexemes)} - {""}
    # A word that holds another (`needle` holds its stem `needl`) is found where that one is.
    candidates = {w for w in typed if not any(o != w and o in w for o in typed)}
    start = 0
    if candidates:
        # lower() + find is ~5x faster than a case-insensitive regex over 16 MiB; where
        # lowering changes the length (rare letters), positions would drift: use the regex.
        lowered = content.lower()
        if len(lowered) == len(content):
            found = [at for at in (lowered.find(w) for w in candidates) if at >= 0]
            start = min(found, default=0)
        else:
            pattern = "|".join(re.escape(w) for w in sorted(candidates, key=len, reverse=True))
            match = re.search(pattern, content, re.IGNORECASE)
            start = match.start() if match else 0
    return content[max(0, start - WINDOW_BEFORE) : start + WINDOW_AFTER]


class PgDocumentStore:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def save(
        self,
        title: str,
        content: str,
        project: str | None = None,
        tags: Sequence[str] = (),
        parent_id: int | None = None,
    ) -> int:
        with self._db.write() as conn:
            return self.insert(conn, title, content, project, tags, parent_id)

    @classmethod
    def insert(
        cls,
        conn: psycopg.Connection[Any],
        title: str,
        content: str,
        project: str | None,
        tags: Sequence[str],
        parent_id: int | None,
    ) -> int:
        """INSERT a document and its tags inside the caller's transaction."""
        now = utc_now()
        row = conn.execute(
            """INSERT INTO documents (title, content, project, created_at, updated_at,
                   accessed_at, access_count, parent_id, is_deleted)
               VALUES (%s, %s, %s, %s, %s, %s, 0, %s, FALSE) RETURNING id""",
            (title, content, project, now, now, now, parent_id),
        ).fetchone()
        assert row is not None
        doc_id = int(row["id"])
        cls.link_tags(conn, doc_id, tags)
        return doc_id

    def get(self, doc_id: int, include_deleted: bool = False) -> Document:
        row = None
        if in_range(doc_id):
            with self._db.read() as conn:
                row = conn.execute(
                    f"SELECT {_DOC_COLUMNS} FROM documents d WHERE d.id = %s", (doc_id,)
                ).fetchone()
        if row is None or (row["is_deleted"] and not include_deleted):
            hint = " (it is in the trash: `emdx restore` brings it back)" if row else ""
            raise NotFoundError(f"document {doc_id} not found{hint}")
        return _document(row)

    def touch(self, doc_id: int) -> None:
        if not in_range(doc_id):
            return
        with self._db.write() as conn:
            conn.execute(
                """UPDATE documents SET access_count = access_count + 1, accessed_at = %s
                   WHERE id = %s""",
                (utc_now(), doc_id),
            )

    def list_documents(
        self,
        project: str | None = None,
        limit: int | None = 50,
        deleted: bool = False,
        tags: Sequence[str] = (),
    ) -> list[Document]:
        where = ["d.is_deleted = %s"]
        params: list[object] = [deleted]
        if project is not None:
            where.append("d.project = %s")
            params.append(project)
        where.extend(self._tag_filter(tags, params))
        sql = f"SELECT {_DOC_COLUMNS} FROM documents d WHERE {' AND '.join(where)}"
        sql += " ORDER BY d.id DESC"
        bounded = sql_limit(limit)
        if bounded is not None:
            sql += " LIMIT %s"
            params.append(bounded)
        with self._db.read() as conn:
            return [_document(row) for row in conn.execute(sql, params)]

    def search(
        self,
        query: str,
        tags: Sequence[str] = (),
        project: str | None = None,
        limit: int = 20,
        snippets: bool = True,
    ) -> list[SearchHit]:
        """Full-text search ranked by ts_rank (title weighted above content); `rank` is the
        negated score, so that lower is better as with SQLite's bm25; with `snippets`, each
        hit with a bounded headline around its first match."""
        if not query.strip():
            return []
        tsq = translate(query)
        params: list[object] = [*tsq.params]
        where = ["d.search_vector @@ q.q", "NOT d.is_deleted"]
        if project is not None:
            where.append("d.project = %s")
            params.append(project)
        where.extend(self._tag_filter(tags, params))
        bounded = sql_limit(limit)
        sql = f"""SELECT {_DOC_COLUMNS},
                    ts_rank('{RANK_WEIGHTS}', d.search_vector, q.q) AS score
                 FROM documents d, (SELECT {tsq.sql} AS q) q
                 WHERE {" AND ".join(where)} ORDER BY score DESC, d.id DESC"""
        if bounded is not None:
            sql += " LIMIT %s"
            params.append(bounded)
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
            if not rows:
                return []
            found = self._snippets(conn, tsq, [r["content"] for r in rows]) if snippets else None
        return [
            SearchHit(_document(r), -float(r["score"]), found[i] if found else "")
            for i, r in enumerate(rows)
        ]

    @staticmethod
    def _snippets(conn: psycopg.Connection[Any], tsq: TsQuery, contents: list[str]) -> list[str]:
        lexemes: list[str] = []
        if tsq.words:
            row = conn.execute(
                f"SELECT tsvector_to_array(to_tsvector('{TS_CONFIG}', %s)) AS lexemes",
                (" ".join(tsq.words),),
            ).fetchone()
            lexemes = list(row["lexemes"] or ()) if row else []
        windows = [_window(content, tsq.words, lexemes) for content in contents]
        rows = conn.execute(
            f"""SELECT ts_headline('{TS_CONFIG}', w, q.q, %s) AS snip
                FROM unnest(%s::text[]) WITH ORDINALITY AS u(w, n), (SELECT {tsq.sql} AS q) q
                ORDER BY n""",
            [_HEADLINE_OPTIONS, windows, *tsq.params],
        ).fetchall()
        snippets = []
        for row in rows:
            text = row["snip"] or ""
            if len(text) > SNIPPET_MAX_CHARS:
                text = text[: SNIPPET_MAX_CHARS - 1] + "…"
            snippets.append(text)
        return snippets

    @staticmethod
    def _tag_filter(tags: Sequence[str], params: list[object]) -> list[str]:
        clauses = []
        for tag in tags:
            clauses.append(
                """EXISTS (SELECT 1 FROM document_tags dt JOIN tags t ON t.id = dt.tag_id
                   WHERE dt.document_id = d.id AND t.name = %s)"""
            )
            params.append(tag)
        return clauses

    def add_tags(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        """Link `tags` to the document; returns the ones that were not there yet."""
        with self._db.write() as conn:
            self._require(conn, doc_id)
            return self.link_tags(conn, doc_id, tags)

    def remove_tags(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        with self._db.write() as conn:
            self._require(conn, doc_id)
            return self.unlink_tags(conn, doc_id, tags)

    @staticmethod
    def unlink_tags(conn: psycopg.Connection[Any], doc_id: int, tags: Sequence[str]) -> list[str]:
        """Remove tags from a document inside the caller's transaction."""
        removed = []
        for tag in tags:
            cur = conn.execute(
                """DELETE FROM document_tags WHERE document_id = %s
                   AND tag_id = (SELECT id FROM tags WHERE name = %s)""",
                (doc_id, tag),
            )
            if cur.rowcount:
                conn.execute(
                    "UPDATE tags SET usage_count = GREATEST(usage_count - 1, 0) WHERE name = %s",
                    (tag,),
                )
                removed.append(tag)
        return removed

    @staticmethod
    def link_tags(conn: psycopg.Connection[Any], doc_id: int, tags: Iterable[str]) -> list[str]:
        """Add tags to a document inside the caller's transaction."""
        added = []
        for tag in tags:
            conn.execute(
                "INSERT INTO tags (name, usage_count) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING",
                (tag,),
            )
            cur = conn.execute(
                """INSERT INTO document_tags (document_id, tag_id, created_at)
                   SELECT %s, id, %s FROM tags WHERE name = %s
                   ON CONFLICT (document_id, tag_id) DO NOTHING""",
                (doc_id, utc_now(), tag),
            )
            if cur.rowcount:
                conn.execute(
                    "UPDATE tags SET usage_count = usage_count + 1 WHERE name = %s", (tag,)
                )
                added.append(tag)
        return added

    def tag_counts(self) -> list[TagCount]:
        with self._db.read() as conn:
            rows = conn.execute(
                """SELECT t.name, COUNT(d.id) AS n FROM tags t
                   LEFT JOIN document_tags dt ON dt.tag_id = t.id
                   LEFT JOIN documents d ON d.id = dt.document_id AND NOT d.is_deleted
                   GROUP BY t.id, t.name HAVING COUNT(d.id) > 0"""
            ).fetchall()
        counts = [TagCount(r["name"], int(r["n"])) for r in rows]
        # Code-point order for ties, as SQLite's BINARY collation gives.
        return sorted(counts, key=lambda c: (-c.count, c.name))

    def set_deleted(self, doc_id: int, deleted: bool) -> None:
        with self._db.write() as conn:
            row = self._require(conn, doc_id)
            if bool(row["is_deleted"]) == deleted:
                state = "already in the trash" if deleted else "not deleted"
                raise InvalidStateError(f"document {doc_id} is {state}; nothing to do")
            conn.execute(
                "UPDATE documents SET is_deleted = %s, deleted_at = %s WHERE id = %s",
                (deleted, utc_now() if deleted else None, doc_id),
            )

    @staticmethod
    def _require(conn: psycopg.Connection[Any], doc_id: int) -> dict[str, Any]:
        row = None
        if in_range(doc_id):
            # FOR UPDATE: a concurrent trash/restore of the same document waits its turn.
            row = conn.execute(
                "SELECT id, is_deleted FROM documents WHERE id = %s FOR UPDATE", (doc_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"document {doc_id} not found")
        return dict(row)
