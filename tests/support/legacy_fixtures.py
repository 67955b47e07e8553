"""Databases in the shapes earlier emdx releases wrote (see /work/shared/LEGACY_SCHEMA.md).

Built with plain SQL from the written description only: nothing here imports emdx, so a change to
emdx's own migration steps cannot silently change the fixtures it is tested against.

    build_legacy_db(path, version)  → the empty schema of steps 0..version (version in 2..6)
    fill_legacy_db(path, version)   → rows in it; returns a plain-dict snapshot of every row
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

LEGACY_VERSIONS = (2, 3, 4, 5, 6)

_STEPS: dict[int, list[str]] = {
    0: [
        """CREATE TABLE documents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            content TEXT NOT NULL,
            project TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            accessed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            access_count INTEGER DEFAULT 0,
            deleted_at TIMESTAMP,
            is_deleted BOOLEAN DEFAULT FALSE
        )""",
        """CREATE VIRTUAL TABLE documents_fts USING fts5(
            title, content, project,
            content=documents, content_rowid=id,
            tokenize='porter unicode61'
        )""",
        """CREATE TRIGGER documents_ai AFTER INSERT ON documents BEGIN
            INSERT INTO documents_fts(rowid, title, content, project)
            VALUES (new.id, new.title, new.content, new.project);
        END""",
        """CREATE TRIGGER documents_ad AFTER DELETE ON documents BEGIN
            INSERT INTO documents_fts(documents_fts, rowid, title, content, project)
            VALUES ('delete', old.id, old.title, old.content, old.project);
        END""",
        """CREATE TRIGGER documents_au AFTER UPDATE ON documents BEGIN
            INSERT INTO documents_fts(documents_fts, rowid, title, content, project)
            VALUES ('delete', old.id, old.title, old.content, old.project);
            INSERT INTO documents_fts(rowid, title, content, project)
            VALUES (new.id, new.title, new.content, new.project);
        END""",
        """CREATE TABLE gists (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            document_id INTEGER NOT NULL,
            gist_id TEXT NOT NULL,
            gist_url TEXT NOT NULL,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            is_public BOOLEAN DEFAULT 0
        )""",
        "CREATE INDEX idx_documents_project ON documents(project)",
        "CREATE INDEX idx_documents_accessed ON documents(accessed_at)",
        "CREATE INDEX idx_documents_deleted ON documents(is_deleted, deleted_at)",
    ],
    1: [
        """CREATE TABLE tags (
            id INTEGER PRIMARY KEY,
            name TEXT UNIQUE NOT NULL,
            created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
            usage_count INTEGER DEFAULT 0
        )""",
        """CREATE TABLE document_tags (
            document_id INTEGER NOT NULL,
            tag_id INTEGER NOT NULL,
            created_at DATETIME,
            PRIMARY KEY (document_id, tag_id),
            FOREIGN KEY (document_id) REFERENCES documents(id) ON DELETE CASCADE,
            FOREIGN KEY (tag_id) REFERENCES tags(id) ON DELETE CASCADE
        )""",
    ],
    2: [
        """CREATE TABLE executions (
            id TEXT PRIMARY KEY,
            doc_id INTEGER NOT NULL,
            doc_title TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
            started_at TIMESTAMP NOT NULL,
            completed_at TIMESTAMP,
            log_file TEXT NOT NULL,
            exit_code INTEGER,
            working_dir TEXT
        )""",
        "CREATE INDEX idx_executions_status ON executions(status)",
        "CREATE INDEX idx_executions_started_at ON executions(started_at)",
        "CREATE INDEX idx_executions_doc_id ON executions(doc_id)",
    ],
    3: [
        "ALTER TABLE documents ADD COLUMN parent_id INTEGER",
        "CREATE INDEX idx_documents_parent_id ON documents(parent_id)",
    ],
    4: ["ALTER TABLE executions ADD COLUMN pid INTEGER"],
    5: [
        "ALTER TABLE executions ADD COLUMN last_heartbeat TIMESTAMP",
        "CREATE INDEX idx_executions_heartbeat ON executions(status, last_heartbeat)",
    ],
    6: [
        """CREATE TABLE executions_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            old_id TEXT,
            doc_id INTEGER NOT NULL,
            doc_title TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
            started_at TIMESTAMP NOT NULL,
            completed_at TIMESTAMP,
            log_file TEXT NOT NULL,
            exit_code INTEGER,
            working_dir TEXT,
            pid INTEGER,
            last_heartbeat TIMESTAMP
        )""",
        """INSERT INTO executions_new (old_id, doc_id, doc_title, status, started_at,
               completed_at, log_file, exit_code, working_dir, pid, last_heartbeat)
           SELECT id, doc_id, doc_title, status, started_at, completed_at, log_file,
               exit_code, working_dir, pid, last_heartbeat
           FROM executions""",
        "DROP TABLE executions",
        "ALTER TABLE executions_new RENAME TO executions",
        "CREATE INDEX idx_executions_status ON executions(status)",
        "CREATE INDEX idx_executions_started_at ON executions(started_at)",
        "CREATE INDEX idx_executions_doc_id ON executions(doc_id)",
        "CREATE INDEX idx_executions_heartbeat ON executions(status, last_heartbeat)",
    ],
}

# Titles in many scripts: CJK, right-to-left, emoji (incl. ZWJ sequences), combining marks.
TITLES = [
    "Plan de déploiement",
    "知识库の整理計画",
    "한국어 문서 제목",
    "שלום עולם — תוכנית",
    "مرحبا بالعالم",
    "🚀 Launch checklist 🎉",
    "Family 👨‍👩‍👧‍👦 notes",
    "Ẑ̴̧a̷l̶g̵o̸ t̷e̵x̶t",
    "Cafe\u0301 (combining acute)",
    "Ελληνικά και Русский",
    "हिन्दी दस्तावेज़",
    "ไทย ภาษา",
    "Emoji flags 🇫🇷🇯🇵 and skin tones 👍🏽",
    "Zero\u200bwidth\u200djoiner",
    "Quotes \"double\" and 'single' and `back`",
    "Math ∑∫∂ √2 ≠ π",
    "Tab\there and trailing  ",
    "Mixed עברית and English",
    "日本語のテスト文書",
    "Plain ASCII title",
    "SQL'); DROP TABLE documents;--",
    "percent % underscore _ like",
    "very " + "long " * 40 + "title",
    "Ünïcödé ñame",
    "Georgian ქართული",
    "Armenian Հայերեն",
    "Devanagari कखग with नुक़्ता",
    "Cherokee ᏣᎳᎩ",
    "Box drawing ┌─┐ │ └─┘",
    "Last one ✨",
]

# Tag names listed in LEGACY_SCHEMA.md (the emoji vocabulary), plus text tags.
EMOJI_TAGS = ["🎯", "🚀", "✅", "🐛", "📝", "🔍", "🎉", "❌", "🚧", "🚨", "📚", "🧪", "✨", "🔧"]
TEXT_TAGS = ["python", "backend", "Ünïcode", "with space"]

PROJECTS = ["emdx", "other-project", None, "日本語プロジェクト", None]


def _ts(day: int, second: int = 0) -> str:
    """A SQLite CURRENT_TIMESTAMP-style value: `YYYY-MM-DD HH:MM:SS` (UTC, no zone)."""
    hour, rest = divmod(second, 3600)
    minute, sec = divmod(rest, 60)
    return f"2025-{1 + day // 28:02d}-{1 + day % 28:02d} {hour % 24:02d}:{minute:02d}:{sec:02d}"


def keyword(i: int) -> str:
    """A word that occurs in the content of document number i (1-based) and nowhere else."""
    return f"legacykw{i:03d}"


def build_legacy_db(path: Path | str, version: int) -> None:
    """Create the empty schema of legacy steps 0..version with its schema_version rows."""
    if version not in LEGACY_VERSIONS:
        raise ValueError(f"legacy databases stop at 2..6, not {version}")
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute(
            """CREATE TABLE schema_version (
                version INTEGER PRIMARY KEY,
                applied_at DATETIME DEFAULT CURRENT_TIMESTAMP)"""
        )
        for step in range(version + 1):
            for statement in _STEPS[step]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (step, _ts(step, 100 + step)),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    cur = conn.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _document_rows(version: int) -> list[dict[str, Any]]:
    docs = []
    for n, title in enumerate(TITLES, start=1):
        deleted = n % 7 == 0
        content = (
            f"# {title}\n\n{keyword(n)} body of legacy document {n}.\n"
            f"Unicode body: {title[::-1]} — ΩЖ中文 שלום 🎯\n"
            + ("Second paragraph with widgets.\n" if n % 2 else "")
        )
        doc: dict[str, Any] = {
            "id": n,
            "title": title,
            "content": content,
            "project": PROJECTS[n % len(PROJECTS)],
            "created_at": _ts(n, 3600 + n),
            "updated_at": _ts(n, 7200 + n),
            # One row never accessed since the column was added (NULL); one with a fractional
            # second value, as Python's sqlite3 datetime adapter wrote it.
            "accessed_at": None if n == 5 else (_ts(n + 1, 30) + (".123456" if n == 6 else "")),
            "access_count": None if n == 9 else n * 3,
            "deleted_at": _ts(n + 2, 45) if deleted else None,
            "is_deleted": 1 if deleted else 0,
        }
        if version >= 3:
            doc["parent_id"] = n - 1 if n % 5 == 0 else None
        docs.append(doc)
    return docs


def _links() -> list[tuple[int, int]]:
    """(document_id, tag_id) pairs; tag ids are 1-based positions in EMOJI_TAGS + TEXT_TAGS."""
    n_tags = len(EMOJI_TAGS) + len(TEXT_TAGS)
    pairs = set()
    for doc in range(1, len(TITLES) + 1):
        for k in range(doc % 4):
            pairs.add((doc, 1 + (doc * 3 + k * 5) % n_tags))
    return sorted(pairs)


def _execution_rows(version: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    # 100 runs stuck in `running` forever: both text id shapes.
    for k in range(100):
        doc_id = 1 + k % len(TITLES)
        epoch = 1752791234 + k * 17
        if k % 2:
            old_id = f"claude-{doc_id}-{epoch}"
        else:
            old_id = f"claude-{doc_id}-{epoch}{k:06d}-{4711 + k}-{k * 2654435761 % 2**32:08x}"
        rows.append(
            {
                "old_id": old_id,
                "doc_id": doc_id,
                "doc_title": TITLES[doc_id - 1],
                "status": "running",
                "started_at": _ts(k % 50, 600 + k) + (".5" if k == 3 else ""),
                "completed_at": None,
                "log_file": f"/nonexistent/emdx/logs/{old_id}.log",
                "exit_code": None,
                "working_dir": None if k % 3 == 0 else f"/tmp/wörk dir/{k}",
                "pid": (30000 + k) if k % 4 else None,
                "last_heartbeat": _ts(k % 50, 700 + k) if k % 5 else None,
            }
        )
    # Finished runs with exit codes; one points at a document that no longer exists.
    for k in range(20):
        doc_id = 9999 if k == 7 else 1 + (k * 7) % len(TITLES)
        status = "completed" if k % 3 else "failed"
        old_id = f"claude-{doc_id}-{1752800000 + k}"
        rows.append(
            {
                "old_id": old_id,
                "doc_id": doc_id,
                "doc_title": "gone" if doc_id == 9999 else TITLES[doc_id - 1],
                "status": status,
                "started_at": _ts(60 + k, 100),
                "completed_at": _ts(60 + k, 160 + k),
                "log_file": f"/tmp/emdx-logs/{old_id}.log",
                "exit_code": 0 if status == "completed" else (1 if k % 2 else 137),
                "working_dir": "/home/user/project",
                "pid": 40000 + k,
                "last_heartbeat": _ts(60 + k, 150),
            }
        )
    for row in rows:
        if version < 4:
            row["pid"] = None
        if version < 5:
            row["last_heartbeat"] = None
    return rows


def fill_legacy_db(path: Path | str, version: int) -> dict[str, Any]:
    """Insert documents, tags, links, a gist and executions; return a snapshot of every row.

    The snapshot is read back with plain SQL after inserting (so defaults are included):
    `{"documents": [...], "tags": [...], "document_tags": [...], "gists": [...],
      "executions": [...], "schema_version": [...]}`, each a list of dicts of column → value.
    Executions always carry `old_id` (the text id; None for runs started after step 6) and,
    at version 6, their numeric `id`.
    """
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        for doc in _document_rows(version):
            columns = ", ".join(doc)
            marks = ", ".join("?" * len(doc))
            conn.execute(f"INSERT INTO documents ({columns}) VALUES ({marks})", tuple(doc.values()))
        # One document inserted with every default (timestamps from CURRENT_TIMESTAMP).
        conn.execute(
            "INSERT INTO documents (title, content) VALUES (?, ?)",
            ("Defaults only 默认", f"{keyword(len(TITLES) + 1)} relies on column defaults"),
        )

        links = _links()
        for tag_id, name in enumerate(EMOJI_TAGS + TEXT_TAGS, start=1):
            usage = sum(1 for _, t in links if t == tag_id)
            conn.execute(
                "INSERT INTO tags (id, name, created_at, usage_count) VALUES (?, ?, ?, ?)",
                (tag_id, name, _ts(tag_id, 55), usage),
            )
        # An unused tag, as left behind when its documents were untagged.
        conn.execute("INSERT INTO tags (id, name) VALUES (100, 'orphan-tag')")
        for doc_id, tag_id in links:
            conn.execute(
                "INSERT INTO document_tags (document_id, tag_id, created_at) VALUES (?, ?, ?)",
                (doc_id, tag_id, _ts(doc_id, 5000 + tag_id)),
            )

        conn.execute(
            """INSERT INTO gists (document_id, gist_id, gist_url, created_at, updated_at,
                   is_public) VALUES (?, ?, ?, ?, ?, ?)""",
            (
                2,
                "aa5a315d61ae9438b18d",
                "https://gist.github.com/user/aa5a315d61ae9438b18d",
                _ts(10, 10),
                _ts(11, 11),
                1,
            ),
        )

        executions = _execution_rows(version)
        if version < 6:
            for row in executions:
                values = {"id": row["old_id"], **{k: v for k, v in row.items() if k != "old_id"}}
                if version < 4:
                    del values["pid"]
                if version < 5:
                    del values["last_heartbeat"]
                columns = ", ".join(values)
                marks = ", ".join("?" * len(values))
                conn.execute(
                    f"INSERT INTO executions ({columns}) VALUES ({marks})", tuple(values.values())
                )
        else:
            # Numeric ids with gaps (rows deleted by hand), then runs started after step 6
            # that never had a text id.
            for n, row in enumerate(executions):
                values = {"id": 1 + n * 2, **row}
                columns = ", ".join(values)
                marks = ", ".join("?" * len(values))
                conn.execute(
                    f"INSERT INTO executions ({columns}) VALUES ({marks})", tuple(values.values())
                )
            for k in range(3):
                conn.execute(
                    """INSERT INTO executions (old_id, doc_id, doc_title, status, started_at,
                           completed_at, log_file, exit_code, working_dir, pid, last_heartbeat)
                       VALUES (NULL, ?, ?, 'completed', ?, ?, ?, 0, NULL, ?, ?)""",
                    (
                        k + 1,
                        TITLES[k],
                        _ts(90, k),
                        _ts(90, 60 + k),
                        f"/tmp/new-{k}.log",
                        50000 + k,
                        _ts(90, 30 + k),
                    ),
                )
        conn.execute("COMMIT")

        snapshot = {
            "documents": _rows(conn, "SELECT * FROM documents ORDER BY id"),
            "tags": _rows(conn, "SELECT * FROM tags ORDER BY id"),
            "document_tags": _rows(
                conn, "SELECT * FROM document_tags ORDER BY document_id, tag_id"
            ),
            "gists": _rows(conn, "SELECT * FROM gists ORDER BY id"),
            "schema_version": _rows(conn, "SELECT * FROM schema_version ORDER BY version"),
        }
        if version < 6:
            raw = _rows(conn, "SELECT * FROM executions ORDER BY id")
            for row in raw:
                row["old_id"] = row.pop("id")
                row.setdefault("pid", None)
                row.setdefault("last_heartbeat", None)
        else:
            raw = _rows(conn, "SELECT * FROM executions ORDER BY id")
        snapshot["executions"] = raw
    finally:
        conn.close()
    return snapshot


def make_legacy_db(path: Path | str, version: int) -> dict[str, Any]:
    """build_legacy_db + fill_legacy_db."""
    build_legacy_db(path, version)
    return fill_legacy_db(path, version)
