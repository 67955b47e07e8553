"""The document and execution stores and the document half of the service, in process."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from emdx import paths
from emdx.errors import InvalidInputError, InvalidStateError, NotFoundError, UsageError
from emdx.models import ALLOWED, ExecOptions, ExecutionStatus, parse_time
from emdx.service import MAX_DOCUMENT_BYTES, Service, decode_document, title_from_content
from emdx.service.documents import TITLE_MAX
from emdx.store import Store, open_store

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "knowledge.db") as opened:
        yield opened


@pytest.fixture
def service(store: Store) -> Service:
    return Service(store)


def save(service: Service, content: str, **kwargs: object) -> int:
    kwargs.setdefault("detect", False)
    return service.save_document(content, **kwargs).id  # type: ignore[arg-type]


def tag_usage(store: Store) -> dict[str, int]:
    return {
        r["name"]: r["usage_count"]
        for r in store.conn.execute("SELECT name, usage_count FROM tags")
    }


# -- save / get / list ---------------------------------------------------------------------------


def test_save_and_get_round_trip(service: Service) -> None:
    content = "# 知识库 🚀 Plan\n\nשלום — Cafe\u0301 👨‍👩‍👧‍👦\n"
    saved = service.save_document(content, tags="note,plan", project="proj", detect=False)
    assert saved.title == "知识库 🚀 Plan"
    assert saved.tags == ("📝", "🎯")
    doc = service.get_document(saved.id)
    assert doc.content == content
    assert doc.title == saved.title
    assert doc.project == "proj"
    assert set(doc.tags) == {"📝", "🎯"}
    assert doc.is_deleted is False and doc.deleted_at is None
    assert doc.access_count == 0
    for value in (doc.created_at, doc.updated_at, doc.accessed_at):
        assert value is not None and ISO_UTC.match(value)


def test_title_option_wins_and_whitespace_collapses(service: Service) -> None:
    saved = service.save_document("# Heading\nbody", title="  My \t\n title  ", detect=False)
    assert saved.title == "My title"
    long = service.save_document("x " * 1000, detect=False)
    assert len(long.title) == TITLE_MAX


def test_title_falls_back_to_source_when_content_has_no_text_line(service: Service) -> None:
    assert title_from_content("\n\n  ## Real heading ##\nbody", "src") == "Real heading ##"
    assert title_from_content("###\n\n", "notes.md") == "notes.md"
    saved = service.save_document("#\n##\n", source="notes.md", detect=False)
    assert saved.title == "notes.md"


@pytest.mark.parametrize("content", ["", "   ", "\n\t\n"])
def test_empty_content_is_refused(service: Service, store: Store, content: str) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        service.save_document(content, detect=False)
    assert store.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0


def test_oversized_content_is_refused(service: Service, store: Store) -> None:
    with pytest.raises(InvalidInputError, match="MiB"):
        service.save_document("a" * (MAX_DOCUMENT_BYTES + 1), detect=False)
    assert store.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0


def test_decode_document() -> None:
    assert decode_document("\ufeffhello ✨".encode(), "f") == "hello ✨"
    with pytest.raises(InvalidInputError, match="binary"):
        decode_document(b"abc\x00def", "f")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        decode_document(b"ok \xff\xfe bad", "f")
    with pytest.raises(InvalidInputError, match="empty"):
        decode_document(b" \n\t ", "f")
    with pytest.raises(InvalidInputError, match="MiB"):
        decode_document(b"a" * (MAX_DOCUMENT_BYTES + 1), "f")


def test_list_is_newest_first_with_filters_and_limit(service: Service) -> None:
    a = save(service, "alpha", project="p1", tags="note")
    b = save(service, "beta", project="p2", tags="note,bug")
    c = save(service, "gamma", project="p1", tags="bug")
    d = save(service, "delta", project=None)
    assert [x.id for x in service.list_documents()] == [d, c, b, a]
    assert [x.id for x in service.list_documents(limit=2)] == [d, c]
    assert [x.id for x in service.list_documents(project="p1")] == [c, a]
    assert [x.id for x in service.list_documents(tags="note")] == [b, a]
    assert [x.id for x in service.list_documents(tags="fix")] == [c, b]  # alias of 🐛
    assert [x.id for x in service.list_documents(tags=["note", "bug"])] == [b]
    assert [x.id for x in service.list_documents(project="p1", tags="bug")] == [c]
    assert service.list_documents(project="nope") == []
    assert service.store.documents.count() == 4


def test_get_unknown_document_raises_not_found(service: Service) -> None:
    with pytest.raises(NotFoundError, match="document 42 not found") as info:
        service.get_document(42)
    assert "restore" not in str(info.value)


# -- search --------------------------------------------------------------------------------------


def test_title_hit_ranks_above_content_only_hit(service: Service) -> None:
    content_hit = save(service, "Unrelated heading\n\nSomething about a zebra crossing here.")
    title_hit = save(service, "# Zebra handbook\n\nNothing else of note in the body.")
    save(service, "no match at all")
    hits = service.find_documents("zebra")
    assert [h.document.id for h in hits] == [title_hit, content_hit]
    assert hits[0].rank < hits[1].rank
    assert "zebra" in hits[1].snippet.lower()


def test_search_filters_by_tags_and_project(service: Service) -> None:
    a = save(service, "widget one", tags="note", project="p1")
    b = save(service, "widget two", tags="bug", project="p1")
    c = save(service, "widget three", tags="note", project="p2")
    assert {h.document.id for h in service.find_documents("widget")} == {a, b, c}
    assert {h.document.id for h in service.find_documents("widget", tags="note")} == {a, c}
    assert {h.document.id for h in service.find_documents("widget", project="p1")} == {a, b}
    assert [h.document.id for h in service.find_documents("", tags="bug")] == [b]
    assert len(service.find_documents("widget", limit=1)) == 1
    with pytest.raises(UsageError):
        service.find_documents("  ")


@pytest.mark.parametrize(
    "query",
    [
        "foo-bar", '"', '"unbalanced', 'unbalanced"', "*", "NEAR(", "NEAR(foo bar", "AND",
        "OR OR", "NOT", "(", ")", "foo:bar", "^", "-", "+", "'", "''", "a AND", "\"foo\" \"",
        "col:", "{title}: x", "foo*bar", "** **", "😀", "日本語", "\\", "%", "_",
    ],
)  # fmt: skip
def test_fts_special_characters_never_raise(service: Service, query: str) -> None:
    doc = save(service, "# foo-bar notes\n\nfoo bar baz")
    hits = service.find_documents(query)
    assert all(h.document.id == doc for h in hits)


def test_hyphenated_query_finds_the_words(service: Service) -> None:
    doc = save(service, "# foo-bar notes\n\nsomething")
    save(service, "# unrelated\n\nfoo only")
    assert [h.document.id for h in service.find_documents("foo-bar")] == [doc]


def test_fts_syntax_still_works_when_valid(service: Service) -> None:
    a = save(service, "# apple pie\n\nrecipe")
    b = save(service, "# apple tart\n\nrecipe")
    assert {h.document.id for h in service.find_documents("apple NOT tart")} == {a}
    assert {h.document.id for h in service.find_documents("appl*")} == {a, b}
    assert {h.document.id for h in service.find_documents('"apple pie"')} == {a}


# -- tags ----------------------------------------------------------------------------------------


def test_tags_are_normalised_and_deduplicated(service: Service, store: Store) -> None:
    saved = service.save_document(
        "x", tags="note, Notes,plan,  gameplan,Python,python,📝", detect=False
    )
    assert saved.tags == ("📝", "🎯", "python")
    assert set(service.get_document(saved.id).tags) == {"📝", "🎯", "python"}
    assert tag_usage(store) == {"📝": 1, "🎯": 1, "python": 1}


def test_usage_count_follows_tag_and_untag(service: Service, store: Store) -> None:
    a = save(service, "a", tags="note")
    b = save(service, "b")
    assert service.tag_document(b, ["note", "bug"]) == ["📝", "🐛"]
    assert tag_usage(store) == {"📝": 2, "🐛": 1}
    # Tagging again adds nothing and counts nothing.
    assert service.tag_document(b, ["notes", "📝"]) == []
    assert tag_usage(store) == {"📝": 2, "🐛": 1}
    assert service.untag_document(a, ["note", "bug"]) == ["📝"]
    assert tag_usage(store) == {"📝": 1, "🐛": 1}
    assert service.untag_document(a, ["note"]) == []
    assert tag_usage(store) == {"📝": 1, "🐛": 1}
    assert service.get_document(a).tags == ()
    assert {(c.name, c.count) for c in service.tag_counts()} == {("📝", 1), ("🐛", 1)}


def test_tag_counts_skip_deleted_and_unused(service: Service) -> None:
    a = save(service, "a", tags="note,bug")
    save(service, "b", tags="note")
    service.untag_document(a, ["bug"])
    service.delete_document(a)
    assert [(c.name, c.count) for c in service.tag_counts()] == [("📝", 1)]


def test_tag_unknown_document_writes_nothing(service: Service, store: Store) -> None:
    with pytest.raises(NotFoundError):
        service.tag_document(99, ["note"])
    with pytest.raises(NotFoundError):
        service.untag_document(99, ["note"])
    assert store.conn.execute("SELECT COUNT(*) FROM tags").fetchone()[0] == 0
    with pytest.raises(UsageError):
        service.tag_document(1, [" ", ","])


# -- delete / restore ----------------------------------------------------------------------------


def test_delete_hides_and_restore_brings_back(service: Service) -> None:
    keep = save(service, "keep the quokka")
    gone = save(service, "delete the quokka", tags="note")
    deleted = service.delete_document(gone)
    assert deleted.id == gone
    assert [d.id for d in service.list_documents()] == [keep]
    assert [h.document.id for h in service.find_documents("quokka")] == [keep]
    assert service.find_documents("", tags="note") == []
    with pytest.raises(NotFoundError, match="restore"):
        service.get_document(gone)
    trash = service.list_documents(deleted=True)
    assert [d.id for d in trash] == [gone]
    assert trash[0].is_deleted and trash[0].deleted_at and ISO_UTC.match(trash[0].deleted_at)

    with pytest.raises(NotFoundError):
        service.delete_document(gone)
    restored = service.restore_document(gone)
    assert restored.id == gone and not restored.is_deleted and restored.deleted_at is None
    assert {d.id for d in service.list_documents()} == {keep, gone}
    assert {h.document.id for h in service.find_documents("quokka")} == {keep, gone}
    with pytest.raises(InvalidStateError, match="not deleted"):
        service.restore_document(gone)
    with pytest.raises(NotFoundError):
        service.restore_document(12345)
    with pytest.raises(NotFoundError):
        service.delete_document(12345)


# -- access count --------------------------------------------------------------------------------


def test_view_bumps_access_count_without_touching_the_index(service: Service, store: Store) -> None:
    doc = save(service, "# viewed\n\ncontent words")
    before = store.conn.execute("SELECT * FROM documents_fts_data ORDER BY id").fetchall()
    first = service.get_document(doc, touch=True)
    assert first.access_count == 0
    service.get_document(doc, touch=True)
    after = service.get_document(doc)
    assert after.access_count == 2
    assert parse_time(after.accessed_at) >= parse_time(first.accessed_at)  # type: ignore[operator]
    # Plain `get` does not count.
    assert service.get_document(doc).access_count == 2
    assert store.conn.execute("SELECT * FROM documents_fts_data ORDER BY id").fetchall() == before
    assert [h.document.id for h in service.find_documents("content")] == [doc]


# -- files and connection settings ---------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_store_files_are_private(isolated_env: Path) -> None:
    old_umask = os.umask(0o002)
    try:
        with Service() as service:
            service.save_document("private", detect=False)
            home = paths.emdx_home()
            assert home == isolated_env
            assert _mode(home) == 0o700
            assert _mode(paths.logs_dir()) == 0o700
            assert _mode(paths.runs_dir()) == 0o700
            db = paths.db_path()
            assert db.parent == home
            assert _mode(db) == 0o600
            for side in (Path(f"{db}-wal"), Path(f"{db}-shm")):
                if side.exists():
                    assert _mode(side) == 0o600, side
    finally:
        os.umask(old_umask)


def test_existing_loose_home_is_tightened(isolated_env: Path) -> None:
    isolated_env.mkdir(mode=0o755)
    isolated_env.chmod(0o755)
    open_store().close()
    assert _mode(isolated_env) == 0o700


def test_connection_pragmas(store: Store) -> None:
    conn = store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.integrity_ok()


def test_data_is_visible_to_a_second_connection(store: Store, tmp_path: Path) -> None:
    doc = Service(store).save_document("shared", detect=False).id
    other = sqlite3.connect(str(tmp_path / "knowledge.db"))
    try:
        assert other.execute("SELECT content FROM documents WHERE id = ?", (doc,)).fetchone() == (
            "shared",
        )
    finally:
        other.close()


# -- executions ----------------------------------------------------------------------------------


def new_run(store: Store, key: str, prepared: bool = True, **kwargs: object) -> int:
    """A row as the start path leaves it: `preparing`, then (`prepared`) `queued`."""
    values: dict[str, object] = {
        "run_key": key,
        "doc_id": 1,
        "doc_title": f"doc {key}",
        "exec_type": "note",
        "options": ExecOptions(),
    }
    values.update(kwargs)
    execution_id = store.executions.create(**values)  # type: ignore[arg-type]
    if prepared:
        store.executions.update(execution_id, log_file=f"/logs/{key}.jsonl")
        assert store.executions.transition(
            execution_id, [ExecutionStatus.PREPARING], ExecutionStatus.QUEUED
        )
    return execution_id


def test_execution_create_get_resolve(store: Store) -> None:
    options = ExecOptions(tools=("Read", "Edit"), model="sonnet", max_turns=3, timeout_s=60.0)
    run = new_run(store, "k1", options=options, exec_type="analysis")
    got = store.executions.get(run)
    assert got.id == run and got.run_key == "k1" and got.old_id is None
    assert got.status is ExecutionStatus.QUEUED
    assert got.exec_type == "analysis"
    assert got.options == options
    assert got.created_at and ISO_UTC.match(got.created_at)
    assert got.started_at is None and got.completed_at is None
    assert store.executions.resolve(run) == got
    assert store.executions.resolve(f" {run} ") == got
    with pytest.raises(NotFoundError):
        store.executions.get(run + 100)
    with pytest.raises(NotFoundError):
        store.executions.resolve("claude-1-123")
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO executions (run_key, doc_title, status) VALUES ('k1', 't', 'queued')"
        )


def test_execution_resolve_by_old_id(store: Store) -> None:
    store.conn.execute(
        """INSERT INTO executions (old_id, doc_id, doc_title, status, started_at, log_file)
           VALUES ('claude-42-1752791234', 42, 'legacy', 'running',
                   '2025-07-17T22:27:14+00:00', '/gone.log')"""
    )
    legacy = store.executions.resolve("claude-42-1752791234")
    assert legacy.old_id == "claude-42-1752791234" and legacy.doc_id == 42
    assert store.executions.resolve(str(legacy.id)) == legacy


def test_execution_list_newest_first_with_status_and_limit(store: Store) -> None:
    ids = [new_run(store, f"k{i}") for i in range(5)]
    store.executions.transition(ids[1], [ExecutionStatus.QUEUED], ExecutionStatus.RUNNING)
    store.executions.finish(ids[2], ExecutionStatus.FAILED, 1, "nonzero_exit")
    listed = store.executions.list_executions()
    assert [e.id for e in listed] == ids[::-1]
    assert [e.id for e in store.executions.list_executions(limit=2)] == ids[:2:-1]
    assert [e.id for e in store.executions.list_executions(statuses=["failed"])] == [ids[2]]
    assert [e.id for e in store.executions.list_executions(statuses=["queued", "running"])] == [
        ids[4], ids[3], ids[1], ids[0],
    ]  # fmt: skip
    assert store.executions.list_executions(statuses=["killed"]) == []
    assert store.executions.slots_in_use() == 1
    assert [e.id for e in store.executions.active()] == [ids[4], ids[3], ids[1], ids[0]]
    assert [e.id for e in store.executions.queued()] == [ids[0], ids[3], ids[4]]


def test_finish_is_compare_and_set(store: Store) -> None:
    run = new_run(store, "cas")
    assert store.executions.transition(run, [ExecutionStatus.QUEUED], ExecutionStatus.RUNNING)
    # Not in the expected state: nothing happens.
    assert not store.executions.transition(run, [ExecutionStatus.QUEUED], ExecutionStatus.RUNNING)
    assert store.executions.finish(run, ExecutionStatus.COMPLETED, 0, "success", num_turns=3)
    first = store.executions.get(run)
    assert first.status is ExecutionStatus.COMPLETED
    assert (first.exit_code, first.reason, first.num_turns) == (0, "success", 3)
    assert first.completed_at and ISO_UTC.match(first.completed_at)

    assert not store.executions.finish(run, ExecutionStatus.KILLED, -9, "killed_by_user")
    assert not store.executions.finish(run, ExecutionStatus.FAILED, 1, "runner_lost")
    assert store.executions.get(run) == first


def test_transition_and_update_reject_unknown_columns(store: Store) -> None:
    run = new_run(store, "bad")
    with pytest.raises(ValueError):
        store.executions.transition(
            run, [ExecutionStatus.QUEUED], ExecutionStatus.RUNNING, doc_title="x"
        )
    with pytest.raises(ValueError):
        store.executions.update(run, run_key="other")
    store.executions.update(run, pid=123, branch="emdx/x", cost_usd=0.25)
    got = store.executions.get(run)
    assert (got.pid, got.branch, got.cost_usd, got.status) == (
        123, "emdx/x", 0.25, ExecutionStatus.QUEUED,
    )  # fmt: skip


@pytest.mark.parametrize("column", ["status", "reason", "exit_code", "started_at", "completed_at"])
def test_update_cannot_change_a_status_or_what_goes_with_it(store: Store, column: str) -> None:
    """`transition` is the only status writer: `update` refuses its columns."""
    run = new_run(store, f"guard-{column}")
    before = store.executions.get(run)
    with pytest.raises(ValueError):
        store.executions.update(run, **{column: "failed" if column == "status" else 1})
    assert store.executions.get(run) == before


def test_only_the_allowed_moves_are_accepted(store: Store) -> None:
    S = ExecutionStatus
    for source, targets in ALLOWED.items():
        for target in S:
            if target in targets:
                continue
            with pytest.raises(ValueError, match="illegal transition"):
                store.executions.transition(1, [source], target)
    for final in (S.COMPLETED, S.FAILED, S.KILLED):
        assert final not in ALLOWED  # a final state is final
        with pytest.raises(ValueError):
            store.executions.transition(1, [final], S.RUNNING)


def test_writes_guarded_by_run_key_never_touch_another_runs_row(store: Store) -> None:
    """After a restored backup hands an id out again, a supervisor of the old run (same id,
    other key) writes nothing into the new run's row."""
    run = new_run(store, "mine")
    assert store.executions.claim_slot(run, 10, ExecutionStatus.QUEUED) == "claimed"
    before = store.executions.get(run)
    assert not store.executions.update(run, key="someone-else", cost_usd=9.0)
    assert not store.executions.beat(run, "2030-01-01T00:00:00+00:00", 1.0, "someone-else")
    assert not store.executions.finish(
        run, ExecutionStatus.COMPLETED, 0, "success", key="someone-else"
    )
    assert store.executions.get(run) == before
    assert store.executions.update(run, key="mine", cost_usd=1.5)
    assert store.executions.finish(run, ExecutionStatus.COMPLETED, 0, "success", key="mine")
    # A late progress write of the supervisor never lands on its final row.
    assert not store.executions.update(run, key="mine", only_supervised=True, cost_usd=7.0)
    assert store.executions.get(run).cost_usd == 1.5


def test_a_preparing_row_is_not_startable_by_the_queue_pass(store: Store) -> None:
    run = new_run(store, "half-made", prepared=False)
    assert store.executions.get(run).status is ExecutionStatus.PREPARING
    assert store.executions.queued() == []
    assert store.executions.claim_slot(run, 10, ExecutionStatus.QUEUED) == "gone"
    assert store.executions.get(run).status is ExecutionStatus.PREPARING
    # Its own start claims it straight from preparing.
    assert store.executions.claim_slot(run, 10, ExecutionStatus.PREPARING) == "claimed"
    assert store.executions.get(run).status is ExecutionStatus.RUNNING


def test_claim_slot_respects_the_cap(store: Store) -> None:
    runs = [new_run(store, f"slot{i}") for i in range(4)]
    queued = ExecutionStatus.QUEUED
    assert store.executions.claim_slot(runs[0], 2, queued) == "claimed"
    assert store.executions.claim_slot(runs[1], 2, queued) == "claimed"
    assert store.executions.claim_slot(runs[2], 2, queued) == "full"
    assert store.executions.get(runs[2]).status is ExecutionStatus.QUEUED
    assert store.executions.slots_in_use() == 2
    started = store.executions.get(runs[0]).started_at
    assert started and ISO_UTC.match(started)
    # Claiming a run that is not queued does nothing.
    assert store.executions.claim_slot(runs[0], 10, queued) == "gone"
    assert store.executions.finish(runs[0], ExecutionStatus.COMPLETED, 0, "success")
    assert store.executions.claim_slot(runs[2], 2, queued) == "claimed"
    assert store.executions.claim_slot(runs[3], 2, queued) == "full"
    assert store.executions.slots_in_use() == 2
    # A waiting run holds its slot too (its supervisor is alive, waiting to resume).
    assert store.executions.transition(runs[2], [ExecutionStatus.RUNNING], ExecutionStatus.WAITING)
    assert store.executions.slots_in_use() == 2
