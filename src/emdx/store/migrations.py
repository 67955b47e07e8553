"""The schema as an append-only list of steps, numbered from 0 like earlier emdx releases.

Steps 0–6 are the schema earlier releases wrote (LEGACY_SCHEMA.md), so a database stopped at any of
them continues from where it is. Each step runs with its `schema_version` row in one
`BEGIN IMMEDIATE` transaction: a failing step leaves the database exactly as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from emdx.store.connection import write_transaction

Step = Callable[[sqlite3.Connection], None]


def _run(conn: sqlite3.Connection, *statements: str) -> None:
    # One execute per statement: executescript() would COMMIT the step's transaction early.
    for statement in statements:
        conn.execute(statement)


def m000_documents(conn: sqlite3.Connection) -> None:
    _run(
        conn,
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
            is_deleted BOOLEAN DEFAULT FALSE)""",
        """CREATE VIRTUAL TABLE documents_fts USING fts5(
            title, content, project, content=documents, content_rowid=id,
            tokenize='porter unicode61')""",
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
            is_public BOOLEAN DEFAULT 0)""",
        "CREATE INDEX idx_documents_project ON documents(project)",
        "CREATE INDEX idx_documents_accessed ON documents(accessed_at)",
        "CREATE INDEX idx_documents_deleted ON documents(is_deleted, deleted_at)",
    )


def m001_tags(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        """CREATE TABLE tags (
            id INTEGER PRIMARY KEY,
            name TEXT UNIQUE NOT NULL,
            created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
            usage_count INTEGER DEFAULT 0)""",
        """CREATE TABLE document_tags (
            document_id INTEGER NOT NULL,
            tag_id INTEGER NOT NULL,
            created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (document_id, tag_id),
            FOREIGN KEY (document_id) REFERENCES documents(id) ON DELETE CASCADE,
            FOREIGN KEY (tag_id) REFERENCES tags(id) ON DELETE CASCADE)""",
    )


def m002_executions(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        """CREATE TABLE executions (
            id TEXT PRIMARY KEY,
            doc_id INTEGER NOT NULL,
            doc_title TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
            started_at TIMESTAMP NOT NULL,
            completed_at TIMESTAMP,
            log_file TEXT NOT NULL,
            exit_code INTEGER,
            working_dir TEXT)""",
        "CREATE INDEX idx_executions_status ON executions(status)",
        "CREATE INDEX idx_executions_started_at ON executions(started_at)",
        "CREATE INDEX idx_executions_doc_id ON executions(doc_id)",
    )


def m003_document_parent(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        "ALTER TABLE documents ADD COLUMN parent_id INTEGER",
        "CREATE INDEX idx_documents_parent_id ON documents(parent_id)",
    )


def m004_execution_pid(conn: sqlite3.Connection) -> None:
    _run(conn, "ALTER TABLE executions ADD COLUMN pid INTEGER")


def m005_execution_heartbeat(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        "ALTER TABLE executions ADD COLUMN last_heartbeat TIMESTAMP",
        "CREATE INDEX idx_executions_heartbeat ON executions(status, last_heartbeat)",
    )


def m006_numeric_execution_ids(conn: sqlite3.Connection) -> None:
    _run(
        conn,
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
            last_heartbeat TIMESTAMP)""",
        """INSERT INTO executions_new (old_id, doc_id, doc_title, status, started_at,
                completed_at, log_file, exit_code, working_dir, pid, last_heartbeat)
           SELECT id, doc_id, doc_title, status, started_at, completed_at, log_file, exit_code,
                working_dir, pid, last_heartbeat
           FROM executions ORDER BY started_at, id""",
        "DROP TABLE executions",
        "ALTER TABLE executions_new RENAME TO executions",
        "CREATE INDEX idx_executions_status ON executions(status)",
        "CREATE INDEX idx_executions_started_at ON executions(started_at)",
        "CREATE INDEX idx_executions_doc_id ON executions(doc_id)",
        "CREATE INDEX idx_executions_heartbeat ON executions(status, last_heartbeat)",
    )


def _iso(column: str) -> str:
    """SQL turning an old `YYYY-MM-DD HH:MM:SS[.fff]` UTC value into emdx's ISO-8601 form."""
    return (
        f"CASE WHEN {column} IS NULL OR {column} = '' THEN NULL "
        f"WHEN {column} LIKE '____-__-__ __:__:__%' AND {column} NOT LIKE '%+%' "
        f"AND {column} NOT LIKE '%Z' "
        f"THEN replace({column}, ' ', 'T') || '+00:00' "
        f"ELSE {column} END"
    )


def m007_supervised_executions(conn: sqlite3.Connection) -> None:
    """The supervised-execution schema; old rows keep their text id in `old_id`."""
    _run(
        conn,
        """CREATE TABLE executions_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            old_id TEXT UNIQUE,
            run_key TEXT UNIQUE,
            doc_id INTEGER,
            doc_title TEXT NOT NULL,
            exec_type TEXT NOT NULL DEFAULT 'generic',
            status TEXT NOT NULL
                CHECK (status IN ('queued', 'running', 'completed', 'failed', 'killed')),
            reason TEXT,
            exit_code INTEGER,
            created_at TEXT,
            started_at TEXT,
            completed_at TEXT,
            heartbeat_at TEXT,
            pid INTEGER,
            pid_started_at REAL,
            agent_pid INTEGER,
            agent_started_at REAL,
            working_dir TEXT,
            branch TEXT,
            log_file TEXT,
            session_id TEXT,
            model TEXT,
            num_turns INTEGER,
            cost_usd REAL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            last_event_at TEXT,
            event_count INTEGER NOT NULL DEFAULT 0,
            malformed_count INTEGER NOT NULL DEFAULT 0,
            output_doc_id INTEGER,
            parent_execution_id INTEGER,
            options TEXT)""",
        f"""INSERT INTO executions_new (id, old_id, doc_id, doc_title, status, exit_code,
                created_at, started_at, completed_at, heartbeat_at, pid, working_dir, log_file)
           SELECT id, old_id, doc_id, doc_title, status, exit_code,
                {_iso("started_at")}, {_iso("started_at")}, {_iso("completed_at")},
                {_iso("last_heartbeat")}, pid, working_dir, log_file
           FROM executions""",
        "DROP TABLE executions",
        "ALTER TABLE executions_new RENAME TO executions",
        "CREATE INDEX idx_executions_status_started ON executions(status, started_at)",
        "CREATE INDEX idx_executions_started_at ON executions(started_at)",
        "CREATE INDEX idx_executions_doc_id ON executions(doc_id)",
        "CREATE INDEX idx_executions_parent ON executions(parent_execution_id)",
        # Only text changes need the FTS index touched; bumping access_count must not rewrite it.
        "DROP TRIGGER IF EXISTS documents_au",
        """CREATE TRIGGER documents_au AFTER UPDATE OF title, content, project ON documents BEGIN
            INSERT INTO documents_fts(documents_fts, rowid, title, content, project)
            VALUES ('delete', old.id, old.title, old.content, old.project);
            INSERT INTO documents_fts(rowid, title, content, project)
            VALUES (new.id, new.title, new.content, new.project);
        END""",
        f"""UPDATE documents SET created_at = {_iso("created_at")},
                updated_at = {_iso("updated_at")}, accessed_at = {_iso("accessed_at")},
                deleted_at = {_iso("deleted_at")}""",
        "INSERT INTO documents_fts(documents_fts) VALUES ('rebuild')",
        "CREATE INDEX IF NOT EXISTS idx_document_tags_tag ON document_tags(tag_id)",
        "CREATE INDEX IF NOT EXISTS idx_documents_created ON documents(is_deleted, created_at)",
    )


EXECUTION_COLUMNS_V7 = """id, old_id, run_key, doc_id, doc_title, exec_type, status, reason,
    exit_code, created_at, started_at, completed_at, heartbeat_at, pid, pid_started_at, agent_pid,
    agent_started_at, working_dir, branch, log_file, session_id, model, num_turns, cost_usd,
    input_tokens, output_tokens, last_event_at, event_count, malformed_count, output_doc_id,
    parent_execution_id, options"""


def m008_execution_ownership(conn: sqlite3.Connection) -> None:
    """States `preparing` and `waiting`; the repository a run's worktree was made in and whether
    emdx created its branch (so that undo and cleanup delete only what this home created)."""
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'executions'").fetchone()
    _run(
        conn,
        """CREATE TABLE executions_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            old_id TEXT UNIQUE,
            run_key TEXT UNIQUE,
            doc_id INTEGER,
            doc_title TEXT NOT NULL,
            exec_type TEXT NOT NULL DEFAULT 'generic',
            status TEXT NOT NULL CHECK (status IN
                ('preparing', 'queued', 'running', 'waiting', 'completed', 'failed', 'killed')),
            reason TEXT,
            exit_code INTEGER,
            created_at TEXT,
            started_at TEXT,
            completed_at TEXT,
            heartbeat_at TEXT,
            pid INTEGER,
            pid_started_at REAL,
            agent_pid INTEGER,
            agent_started_at REAL,
            working_dir TEXT,
            branch TEXT,
            log_file TEXT,
            session_id TEXT,
            model TEXT,
            num_turns INTEGER,
            cost_usd REAL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            last_event_at TEXT,
            event_count INTEGER NOT NULL DEFAULT 0,
            malformed_count INTEGER NOT NULL DEFAULT 0,
            output_doc_id INTEGER,
            parent_execution_id INTEGER,
            options TEXT,
            repo TEXT,
            branch_created INTEGER NOT NULL DEFAULT 0)""",
        f"""INSERT INTO executions_new ({EXECUTION_COLUMNS_V7})
           SELECT {EXECUTION_COLUMNS_V7} FROM executions""",
        "DROP TABLE executions",
        "ALTER TABLE executions_new RENAME TO executions",
        "CREATE INDEX idx_executions_status_started ON executions(status, started_at)",
        "CREATE INDEX idx_executions_started_at ON executions(started_at)",
        "CREATE INDEX idx_executions_doc_id ON executions(doc_id)",
        "CREATE INDEX idx_executions_parent ON executions(parent_execution_id)",
    )
    if seq is not None:
        # Ids are never handed out twice, even those of rows that were deleted.
        conn.execute(
            "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'executions'", (seq[0],)
        )
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'executions', ? WHERE NOT EXISTS "
            "(SELECT 1 FROM sqlite_sequence WHERE name = 'executions')",
            (seq[0],),
        )


def m009_crash_safe_runs(conn: sqlite3.Connection) -> None:
    """A start's creator, the run's own heartbeat interval and boot-clock uptime, and owed
    post-actions: what lets any later command finish or undo a run whose owner died."""
    _run(
        conn,
        "ALTER TABLE executions ADD COLUMN creator_pid INTEGER",
        "ALTER TABLE executions ADD COLUMN creator_started_at REAL",
        "ALTER TABLE executions ADD COLUMN heartbeat_s REAL",
        "ALTER TABLE executions ADD COLUMN uptime_s REAL",
        "ALTER TABLE executions ADD COLUMN post_actions TEXT",
        """CREATE INDEX idx_executions_post_actions ON executions(post_actions)
           WHERE post_actions = 'pending'""",
    )


def m010_agent_fidelity(conn: sqlite3.Connection) -> None:
    """Waiting (usage limits, retry backoff), attempts, cache tokens, the CLI's version and the
    details that explain an ending (JSON)."""
    _run(
        conn,
        "ALTER TABLE executions ADD COLUMN waiting_until TEXT",
        "ALTER TABLE executions ADD COLUMN waiting_reason TEXT",
        "ALTER TABLE executions ADD COLUMN resets_at TEXT",
        "ALTER TABLE executions ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE executions ADD COLUMN cache_read_tokens INTEGER",
        "ALTER TABLE executions ADD COLUMN cache_creation_tokens INTEGER",
        "ALTER TABLE executions ADD COLUMN claude_code_version TEXT",
        "ALTER TABLE executions ADD COLUMN details TEXT",
        "UPDATE executions SET reason = 'max_turns' WHERE reason = 'error_max_turns'",
        # Today's spend (the daily budget) is a sum over recently created rows.
        "CREATE INDEX IF NOT EXISTS idx_executions_created ON executions(created_at)",
    )


def m011_team_columns(conn: sqlite3.Connection) -> None:
    """The columns team mode fills (host, worker, job), so both backends keep one row shape."""
    _run(
        conn,
        "ALTER TABLE executions ADD COLUMN host TEXT",
        "ALTER TABLE executions ADD COLUMN worker_id INTEGER",
        "ALTER TABLE executions ADD COLUMN job_id INTEGER",
    )


def m012_kill_asked(conn: sqlite3.Connection) -> None:
    """Who asked to kill a run (`Execution.kill_asked`)."""
    _run(conn, "ALTER TABLE executions ADD COLUMN kill_asked TEXT")


MIGRATIONS: list[Step] = [
    m000_documents,
    m001_tags,
    m002_executions,
    m003_document_parent,
    m004_execution_pid,
    m005_execution_heartbeat,
    m006_numeric_execution_ids,
    m007_supervised_executions,
    m008_execution_ownership,
    m009_crash_safe_runs,
    m010_agent_fidelity,
    m011_team_columns,
    m012_kill_asked,
]

LATEST_VERSION = len(MIGRATIONS) - 1


def _ensure_version_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY,
            applied_at DATETIME DEFAULT CURRENT_TIMESTAMP)"""
    )


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied step, -1 for an empty database."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return -1
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return -1 if row[0] is None else int(row[0])


def migrate(conn: sqlite3.Connection, steps: list[Step] | None = None, path: str = "") -> list[int]:
    """Apply every pending step, each in its own transaction; returns the versions applied."""
    steps = MIGRATIONS if steps is None else steps
    if current_version(conn) >= len(steps) - 1:
        return []
    applied: list[int] = []
    for version, step in enumerate(steps):
        with write_transaction(conn, path):
            _ensure_version_table(conn)
            # Re-read inside the write lock: another process may have migrated meanwhile.
            if current_version(conn) >= version:
                continue
            step(conn)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        applied.append(version)
    return applied
