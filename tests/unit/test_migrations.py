"""Legacy databases (LEGACY_SCHEMA.md) open in place, migrate, and lose nothing."""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from legacy_fixtures import LEGACY_VERSIONS, TITLES, keyword, make_legacy_db
from testkit import open_sqlite

from emdx import tags as tagvocab
from emdx.errors import StoreError
from emdx.models import ExecOptions, parse_time
from emdx.service import Service
from emdx.store import LATEST_VERSION, open_store
from emdx.store.connection import connect
from emdx.store.migrations import MIGRATIONS, current_version, migrate

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")

NEW_EXECUTION_COLUMNS = {
    "id", "old_id", "run_key", "doc_id", "doc_title", "exec_type", "status", "reason",
    "exit_code", "created_at", "started_at", "completed_at", "heartbeat_at", "pid",
    "pid_started_at", "agent_pid", "agent_started_at", "working_dir", "branch", "log_file",
    "session_id", "model", "num_turns", "cost_usd", "input_tokens", "output_tokens", "options",
    "output_doc_id",
}  # fmt: skip


# -- helpers -------------------------------------------------------------------------------------


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def columns(path: Path, table: str) -> set[str]:
    return {r["name"] for r in rows(path, f"PRAGMA table_info({table})")}


def same_instant(old: str | None, new: str | None) -> bool:
    if old is None:
        return new is None
    return new is not None and parse_time(old) == parse_time(new) and parse_time(old) is not None


def assert_iso(value: str | None) -> None:
    assert value is None or ISO_UTC.match(value), value


@pytest.fixture(params=LEGACY_VERSIONS, ids=[f"v{v}" for v in LEGACY_VERSIONS])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[int, Path, dict[str, Any]]:
    """(legacy version, path, snapshot of the legacy rows), after one open_store."""
    version: int = request.param
    path = tmp_path / f"legacy-v{version}.db"
    snapshot = make_legacy_db(path, version)
    with open_sqlite(path) as store:
        assert store.version == LATEST_VERSION
    return version, path, snapshot


# -- every row survives --------------------------------------------------------------------------


def test_fixture_really_has_the_legacy_shape(tmp_path: Path) -> None:
    for version in LEGACY_VERSIONS:
        path = tmp_path / f"shape-{version}.db"
        snapshot = make_legacy_db(path, version)
        assert [r["version"] for r in snapshot["schema_version"]] == list(range(version + 1))
        exec_cols = columns(path, "executions")
        assert ("pid" in exec_cols) == (version >= 4)
        assert ("last_heartbeat" in exec_cols) == (version >= 5)
        assert ("old_id" in exec_cols) == (version >= 6)
        assert ("parent_id" in columns(path, "documents")) == (version >= 3)
        running = [e for e in snapshot["executions"] if e["status"] == "running"]
        assert len(running) >= 100
        assert len(snapshot["documents"]) >= 30


def test_every_document_survives(migrated: tuple[int, Path, dict[str, Any]]) -> None:
    version, path, snapshot = migrated
    after = {r["id"]: r for r in rows(path, "SELECT * FROM documents")}
    assert set(after) == {d["id"] for d in snapshot["documents"]}
    for old in snapshot["documents"]:
        new = after[old["id"]]
        for column in ("title", "content", "project", "is_deleted", "access_count"):
            assert new[column] == old[column], (old["id"], column)
        assert new["parent_id"] == old.get("parent_id")
        for column in ("created_at", "updated_at", "accessed_at", "deleted_at"):
            assert same_instant(old[column], new[column]), (old["id"], column, new[column])
            assert_iso(new[column])
    # The snapshot really covers the interesting cases.
    assert any(d["is_deleted"] for d in snapshot["documents"])
    assert any(d["project"] is None for d in snapshot["documents"])
    if version >= 3:
        assert any(d["parent_id"] for d in snapshot["documents"])


def test_every_tag_and_tag_link_survives(migrated: tuple[int, Path, dict[str, Any]]) -> None:
    _, path, snapshot = migrated
    tags = {r["id"]: r for r in rows(path, "SELECT * FROM tags")}
    assert set(tags) == {t["id"] for t in snapshot["tags"]}
    for old in snapshot["tags"]:
        new = tags[old["id"]]
        assert (new["name"], new["usage_count"]) == (old["name"], old["usage_count"])
        assert same_instant(old["created_at"], new["created_at"])
    links = {
        (r["document_id"], r["tag_id"]): r["created_at"]
        for r in rows(path, "SELECT * FROM document_tags")
    }
    assert set(links) == {(r["document_id"], r["tag_id"]) for r in snapshot["document_tags"]}
    for old in snapshot["document_tags"]:
        assert same_instant(old["created_at"], links[(old["document_id"], old["tag_id"])])


def test_every_gist_survives(migrated: tuple[int, Path, dict[str, Any]]) -> None:
    _, path, snapshot = migrated
    after = rows(path, "SELECT * FROM gists ORDER BY id")
    assert len(after) == len(snapshot["gists"]) == 1
    for old, new in zip(snapshot["gists"], after, strict=True):
        for column in ("id", "document_id", "gist_id", "gist_url", "is_public"):
            assert new[column] == old[column]
        assert same_instant(old["created_at"], new["created_at"])
        assert same_instant(old["updated_at"], new["updated_at"])


def test_every_execution_survives(migrated: tuple[int, Path, dict[str, Any]]) -> None:
    version, path, snapshot = migrated
    after = rows(path, "SELECT * FROM executions")
    assert len(after) == len(snapshot["executions"])
    ids = [r["id"] for r in after]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(set(ids)) == len(ids)

    by_old = {r["old_id"]: r for r in after if r["old_id"] is not None}
    text_ids = [e["old_id"] for e in snapshot["executions"] if e["old_id"] is not None]
    assert set(by_old) == set(text_ids)
    assert any(re.fullmatch(r"claude-\d+-\d+", t) for t in text_ids)
    assert any(re.fullmatch(r"claude-\d+-\d+-\d+-[0-9a-f]{8}", t) for t in text_ids)

    by_id = {r["id"]: r for r in after}
    for old in snapshot["executions"]:
        new = by_old[old["old_id"]] if old["old_id"] is not None else by_id[old["id"]]
        if version >= 6:
            assert new["id"] == old["id"], "numeric ids of step 6 must be kept"
        for column in ("doc_id", "doc_title", "status", "exit_code", "working_dir", "log_file"):
            assert new[column] == old[column], (old["old_id"], column)
        assert new["pid"] == old["pid"]
        assert same_instant(old["last_heartbeat"], new["heartbeat_at"])
        assert same_instant(old["started_at"], new["started_at"])
        assert same_instant(old["started_at"], new["created_at"])
        assert same_instant(old["completed_at"], new["completed_at"])
        for column in ("started_at", "created_at", "completed_at", "heartbeat_at"):
            assert_iso(new[column])
        assert new["exec_type"] == "generic"
    if version >= 4:
        assert any(r["pid"] for r in after)
    if version >= 5:
        assert any(r["heartbeat_at"] for r in after)
    assert sum(1 for r in after if r["status"] == "running") >= 100


def test_executions_resolve_by_old_and_numeric_id(
    migrated: tuple[int, Path, dict[str, Any]],
) -> None:
    _, path, snapshot = migrated
    with open_sqlite(path) as store:
        for old in snapshot["executions"][::7]:
            if old["old_id"] is None:
                continue
            execution = store.executions.resolve(old["old_id"])
            assert execution.old_id == old["old_id"]
            assert execution.doc_title == old["doc_title"]
            assert store.executions.resolve(str(execution.id)) == execution
            data = execution.to_dict()
            assert data["status"] == old["status"]
            assert_iso(data["started_at"])
        # Every migrated row can be read back as a model (no surprise values).
        listed = store.executions.list_executions(limit=None)
        assert len(listed) == len(snapshot["executions"])
        # A new run never collides with a migrated id.
        highest = max(e.id for e in listed)
        new_id = store.executions.create(
            run_key="after-migration", doc_id=1, doc_title="t", exec_type="note",
            options=ExecOptions(),
        )  # fmt: skip
        assert new_id > highest
        assert store.executions.get(new_id).old_id is None


def test_full_text_search_finds_legacy_documents(
    migrated: tuple[int, Path, dict[str, Any]],
) -> None:
    _, path, snapshot = migrated
    with open_sqlite(path) as store:
        for doc in snapshot["documents"]:
            hits = store.documents.search(keyword(doc["id"]))
            expected = [] if doc["is_deleted"] else [doc["id"]]
            assert [h.document.id for h in hits] == expected, doc["title"]
        # A title word in a non-Latin script; diacritics folded by unicode61.
        assert [h.document.id for h in store.documents.search("déploiement")] == [1]
        assert [h.document.id for h in store.documents.search("deploiement")] == [1]
        assert [h.document.id for h in store.documents.search("עולם")] == [4]
        # The FTS index agrees with the documents table.
        store.conn.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")


def test_legacy_tags_still_filter_documents(migrated: tuple[int, Path, dict[str, Any]]) -> None:
    """Each legacy tag, typed as a user would (alias for emoji), finds its live documents."""
    _, path, snapshot = migrated
    live = {d["id"] for d in snapshot["documents"] if not d["is_deleted"]}
    checked = []
    with open_sqlite(path) as store:
        service = Service(store)
        for tag in snapshot["tags"]:
            stored = tag["name"]
            if " " in stored:
                continue  # cannot be typed: spaces separate tags on the command line
            expected = {
                link["document_id"]
                for link in snapshot["document_tags"]
                if link["tag_id"] == tag["id"] and link["document_id"] in live
            }
            for typed in {stored, tagvocab.NAMES.get(stored, stored)}:
                found = service.list_documents(tags=typed, limit=None)
                assert {d.id for d in found} == expected, (typed, stored)
                assert all(stored in d.tags for d in found)
            if expected:
                checked.append(stored)
    assert len(checked) >= 10
    assert any(not name.isascii() and name in tagvocab.NAMES for name in checked)


def test_schema_version_and_integrity(migrated: tuple[int, Path, dict[str, Any]]) -> None:
    version, path, snapshot = migrated
    after = rows(path, "SELECT version, applied_at FROM schema_version ORDER BY version")
    assert [r["version"] for r in after] == list(range(LATEST_VERSION + 1))
    # The legacy bookkeeping rows are kept as they were.
    assert after[: version + 1] == [
        {"version": r["version"], "applied_at": r["applied_at"]} for r in snapshot["schema_version"]
    ]
    assert rows(path, "PRAGMA foreign_key_check") == []
    assert [r["integrity_check"] for r in rows(path, "PRAGMA integrity_check")] == ["ok"]
    assert columns(path, "executions") >= NEW_EXECUTION_COLUMNS
    trigger = rows(path, "SELECT sql FROM sqlite_master WHERE name = 'documents_au'")
    assert len(trigger) == 1
    assert re.search(r"AFTER\s+UPDATE\s+OF\s+title,\s*content,\s*project", trigger[0]["sql"])


def test_migrated_database_accepts_new_statuses(
    migrated: tuple[int, Path, dict[str, Any]],
) -> None:
    _, path, _ = migrated
    with open_sqlite(path) as store:
        for status in ("queued", "killed"):
            store.conn.execute(
                "INSERT INTO executions (doc_title, status) VALUES ('x', ?)", (status,)
            )
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute("INSERT INTO executions (doc_title, status) VALUES ('x', 'bogus')")


# -- fresh and repeated opens --------------------------------------------------------------------


def test_fresh_database_gets_every_step(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    with open_sqlite(path) as store:
        assert store.version == LATEST_VERSION == len(MIGRATIONS) - 1
        assert store.integrity_ok()
    versions = [r["version"] for r in rows(path, "SELECT version FROM schema_version")]
    assert versions == list(range(len(MIGRATIONS)))
    tables = {r["name"] for r in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"documents", "documents_fts", "tags", "document_tags", "gists", "executions"} <= tables
    assert "parent_id" in columns(path, "documents")
    assert columns(path, "executions") >= NEW_EXECUTION_COLUMNS


@pytest.mark.parametrize("version", [None, 2, 6])
def test_opening_twice_changes_nothing(tmp_path: Path, version: int | None) -> None:
    path = tmp_path / "twice.db"
    if version is not None:
        make_legacy_db(path, version)
    open_store(path).close()
    first = dump(path)
    with open_sqlite(path) as store:
        assert migrate(store.conn) == []
    assert dump(path) == first


def test_migrate_reports_the_steps_it_applied(tmp_path: Path) -> None:
    path = tmp_path / "steps.db"
    make_legacy_db(path, 3)
    conn = connect(path)
    try:
        assert current_version(conn) == 3
        assert migrate(conn) == list(range(4, LATEST_VERSION + 1))
        assert current_version(conn) == LATEST_VERSION
        assert migrate(conn) == []
    finally:
        conn.close()


# -- a failing step leaves the database exactly as it was ----------------------------------------


def _failing_step(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE half_done (x INTEGER)")
    conn.execute("ALTER TABLE documents ADD COLUMN half_column TEXT")
    conn.execute("UPDATE documents SET title = 'clobbered'")
    conn.execute("DELETE FROM tags")
    conn.execute("DROP TABLE gists")
    raise RuntimeError("step failed half-way")


def _failing_first_step(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE documents (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO documents VALUES (1)")
    raise RuntimeError("first step failed")


def _failing_sql_step(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE half_done (x INTEGER)")
    conn.execute("UPDATE documents SET content = 'clobbered'")
    conn.execute("INSERT INTO no_such_table VALUES (1)")


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_failing_step_rolls_back_completely(tmp_path: Path, version: int) -> None:
    path = tmp_path / "fail.db"
    make_legacy_db(path, version)
    before = dump(path)
    conn = connect(path)
    try:
        with pytest.raises(RuntimeError, match="half-way"):
            migrate(conn, steps=[*MIGRATIONS[: version + 1], _failing_step])
        assert current_version(conn) == version
    finally:
        conn.close()
    assert dump(path) == before
    versions = [r["version"] for r in rows(path, "SELECT version FROM schema_version")]
    assert version + 1 not in versions


def test_failing_step_keeps_the_steps_before_it(tmp_path: Path) -> None:
    """Steps that succeeded stay committed; only the failing one is undone."""
    reference, path = tmp_path / "ref.db", tmp_path / "fail.db"
    make_legacy_db(reference, 4)
    # A byte copy, not a second build: rows filled by CURRENT_TIMESTAMP defaults would differ
    # whenever the two builds straddle a second.
    shutil.copyfile(reference, path)
    conn = connect(reference)
    try:
        assert migrate(conn, steps=MIGRATIONS[:6]) == [5]
    finally:
        conn.close()
    conn = connect(path)
    try:
        with pytest.raises(RuntimeError):
            migrate(conn, steps=[*MIGRATIONS[:6], _failing_step])
        assert current_version(conn) == 5
    finally:
        conn.close()
    strip = re.compile(r"INSERT INTO \"schema_version\" VALUES\((\d+),'[^']*'\);")
    assert [strip.sub(r"\1", s) for s in dump(path)] == [
        strip.sub(r"\1", s) for s in dump(reference)
    ]


def test_failing_first_step_leaves_a_fresh_file_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    conn = connect(path)
    try:
        with pytest.raises(RuntimeError):
            migrate(conn, steps=[_failing_first_step])
        assert current_version(conn) == -1
    finally:
        conn.close()
    assert rows(path, "SELECT name FROM sqlite_master") == []


def test_sql_error_in_a_step_is_a_store_error_and_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sqlfail.db"
    make_legacy_db(path, 6)
    before = dump(path)
    monkeypatch.setattr("emdx.store.migrations.MIGRATIONS", [*MIGRATIONS[:7], _failing_sql_step])
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)
    assert dump(path) == before


# -- concurrent opens ----------------------------------------------------------------------------


def _open_and_report(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        store = open_store(Path(path))
        results.put(("ok", store.version))
        store.close()
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _check_migrated_once(path: Path, snapshot: dict[str, Any]) -> None:
    versions = [r["version"] for r in rows(path, "SELECT version FROM schema_version")]
    assert versions == list(range(LATEST_VERSION + 1))
    assert len(rows(path, "SELECT id FROM executions")) == len(snapshot["executions"])
    assert len(rows(path, "SELECT id FROM documents")) == len(snapshot["documents"])
    assert len(rows(path, "SELECT * FROM document_tags")) == len(snapshot["document_tags"])


def test_open_waits_for_a_legacy_writer_instead_of_failing(tmp_path: Path) -> None:
    """An old emdx (rollback journal) is mid-write: opening must wait, not report 'locked'.

    A timer ends the other writer's transaction after a moment, as the other process would.
    """
    path = tmp_path / "busy.db"
    snapshot = make_legacy_db(path, 4)
    writer = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE documents SET access_count = access_count WHERE id = 1")
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        with open_sqlite(path) as store:
            assert store.version == LATEST_VERSION
    finally:
        release.join()
        writer.close()
    _check_migrated_once(path, snapshot)


def test_concurrent_threads_open_the_same_legacy_database(tmp_path: Path) -> None:
    import queue

    failures = []
    for round_no in range(20):
        path = tmp_path / f"threads-{round_no}.db"
        snapshot = make_legacy_db(path, LEGACY_VERSIONS[round_no % len(LEGACY_VERSIONS)])
        barrier = threading.Barrier(4)
        results: queue.Queue[tuple[str, Any]] = queue.Queue()
        workers = [
            threading.Thread(target=_open_and_report, args=(str(path), barrier, results))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        outcome = [results.get_nowait() for _ in workers]
        if outcome != [("ok", LATEST_VERSION)] * 4:
            failures.append((round_no, outcome))
        _check_migrated_once(path, snapshot)
    assert failures == []


def test_concurrent_processes_open_the_same_legacy_database(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    failures = []
    for round_no in range(10):
        path = tmp_path / f"procs-{round_no}.db"
        snapshot = make_legacy_db(path, LEGACY_VERSIONS[round_no % len(LEGACY_VERSIONS)])
        barrier = ctx.Barrier(3)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_open_and_report, args=(str(path), barrier, results))
            for _ in range(3)
        ]
        for proc in procs:
            proc.start()
        outcome = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
            assert proc.exitcode == 0
        if outcome != [("ok", LATEST_VERSION)] * 3:
            failures.append((round_no, outcome))
        _check_migrated_once(path, snapshot)
    assert failures == []


def test_concurrent_threads_create_a_fresh_database(tmp_path: Path) -> None:
    import queue

    failures = []
    for round_no in range(20):
        path = tmp_path / f"fresh-{round_no}.db"
        barrier = threading.Barrier(4)
        results: queue.Queue[tuple[str, Any]] = queue.Queue()
        workers = [
            threading.Thread(target=_open_and_report, args=(str(path), barrier, results))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        outcome = [results.get_nowait() for _ in workers]
        if outcome != [("ok", LATEST_VERSION)] * 4:
            failures.append((round_no, outcome))
        versions = [r["version"] for r in rows(path, "SELECT version FROM schema_version")]
        assert versions == list(range(LATEST_VERSION + 1))
    assert failures == []


# -- files that are not (usable) databases -------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_not_a_database_is_a_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "knowledge.db"
    path.write_bytes(random.Random(7).randbytes(16384))
    before = _digest(path)
    with pytest.raises(StoreError) as info:
        open_store(path)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert str(path) in message
    assert _digest(path) == before


def test_truncated_legacy_database_is_a_store_error_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "truncated.db"
    make_legacy_db(path, 5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = _digest(path)
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert "\n" not in str(info.value)
    assert _digest(path) == before


def test_titles_fixture_is_unicode_rich() -> None:
    """Guard the fixture itself: the scripts it promises are really there."""
    text = "".join(TITLES)
    assert re.search(r"[\u4e00-\u9fff]", text)  # CJK
    assert re.search(r"[\u0590-\u05ff]", text)  # Hebrew (RTL)
    assert re.search(r"[\u0600-\u06ff]", text)  # Arabic (RTL)
    assert re.search(r"[\U0001F300-\U0001FAFF]", text)  # emoji
    assert re.search(r"[\u0300-\u036f]", text)  # combining marks
