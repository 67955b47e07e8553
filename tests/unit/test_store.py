"""SQLite-only parts of the store (files, PRAGMAs, the FTS index) and the service's document
checks. What both backends must do alike is in tests/store_contract/."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import open_sqlite, recorded_time, save_doc

from emdx import paths
from emdx.errors import InvalidInputError
from emdx.service import MAX_DOCUMENT_BYTES, Service, decode_document, title_from_content
from emdx.service.documents import TITLE_MAX
from emdx.store import SqliteStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with open_sqlite(tmp_path / "knowledge.db") as opened:
        yield opened


@pytest.fixture
def service(store: SqliteStore) -> Service:
    return Service(store)


# -- what the service checks before saving -------------------------------------------------------


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
def test_empty_content_is_refused(service: Service, store: SqliteStore, content: str) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        service.save_document(content, detect=False)
    assert store.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0


def test_oversized_content_is_refused(service: Service, store: SqliteStore) -> None:
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


# -- access count --------------------------------------------------------------------------------


def test_view_bumps_access_count_without_touching_the_index(
    service: Service, store: SqliteStore
) -> None:
    doc = save_doc(service, "# viewed\n\ncontent words")
    before = store.conn.execute("SELECT * FROM documents_fts_data ORDER BY id").fetchall()
    first = service.get_document(doc, touch=True)
    assert first.access_count == 0
    service.get_document(doc, touch=True)
    after = service.get_document(doc)
    assert after.access_count == 2
    assert recorded_time(after.accessed_at) >= recorded_time(first.accessed_at)
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


def test_connection_pragmas(store: SqliteStore) -> None:
    conn = store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.integrity_ok()
