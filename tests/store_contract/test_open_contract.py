"""Opening a store: migrations (fresh, again, concurrent openers) and the one-line errors of a
store that cannot be opened, on both backends."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from contract_helpers import database_url
from testkit import Cli, imported_by

from emdx.errors import StoreError
from emdx.store import Store, open_store

PASSWORD = "Sup3r-s3cret-pw"


def _latest(backend: str) -> int:
    if backend == "sqlite":
        from emdx.store.migrations import LATEST_VERSION
    else:
        from emdx.store.pg.migrations import LATEST_VERSION
    return LATEST_VERSION


def _versions(backend: str, location: str) -> list[int]:
    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(location)
        try:
            return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(location) as pg:
        return [r[0] for r in pg.execute("SELECT version FROM schema_version ORDER BY 1")]


def _usable(store: Store) -> None:
    doc = store.documents.save("t", "migrated words", None, ["x"])
    assert [h.document.id for h in store.documents.search("migrated")] == [doc]


def test_a_fresh_store_is_migrated_to_the_latest_step(backend: str, fresh_location: str) -> None:
    with open_store(fresh_location) as store:
        assert store.version == _latest(backend)
        assert store.integrity_ok()
        _usable(store)
    assert _versions(backend, fresh_location) == list(range(_latest(backend) + 1))


def test_opening_again_applies_nothing_and_keeps_data(backend: str, fresh_location: str) -> None:
    with open_store(fresh_location) as store:
        doc = store.documents.save("kept", "kept words", None, [])
    for _ in range(2):
        with open_store(fresh_location) as again:
            assert again.version == _latest(backend)
            assert again.documents.get(doc).title == "kept"
    assert _versions(backend, fresh_location) == list(range(_latest(backend) + 1))


def test_concurrent_openers_migrate_once(backend: str, fresh_location: str) -> None:
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []
    versions: list[int] = []

    def opener() -> None:
        try:
            barrier.wait(30)
            with open_store(fresh_location) as store:
                versions.append(store.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert versions == [_latest(backend)] * 6
    assert _versions(backend, fresh_location) == list(range(_latest(backend) + 1))


def test_a_failing_step_leaves_the_database_as_it_was(backend: str, fresh_location: str) -> None:
    """Each step commits with its bookkeeping or not at all."""
    if backend == "sqlite":
        import sqlite3

        from emdx.store.connection import connect
        from emdx.store.migrations import MIGRATIONS, migrate

        def broken_sqlite(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE half_done (x INTEGER)")
            raise RuntimeError("step failed")

        conn = connect(Path(fresh_location))
        try:
            with pytest.raises(RuntimeError):
                migrate(conn, [*MIGRATIONS, broken_sqlite])
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    else:
        import psycopg

        from emdx.store.pg.connection import Connection
        from emdx.store.pg.migrations import MIGRATIONS as PG_MIGRATIONS
        from emdx.store.pg.migrations import migrate as pg_migrate

        def broken_pg(conn: psycopg.Connection[object]) -> None:
            conn.execute("CREATE TABLE half_done (x INTEGER)")
            raise RuntimeError("step failed")

        db = Connection(fresh_location)
        try:
            with pytest.raises(RuntimeError):
                pg_migrate(db, [*PG_MIGRATIONS, broken_pg])
        finally:
            db.close()
        with psycopg.connect(fresh_location) as pg:
            tables = {r[0] for r in pg.execute("SELECT tablename FROM pg_tables")}
    assert "half_done" not in tables
    assert _versions(backend, fresh_location) == list(range(_latest(backend) + 1))


# -- errors --------------------------------------------------------------------------------------


def unreachable(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return str(tmp_path / "no-such-dir" / "knowledge.db")
    # Port 1 on loopback: nothing listens there, the refusal is immediate.
    return f"postgresql://emdx:{PASSWORD}@127.0.0.1:1/emdx"


def missing_database() -> str:
    """The test server, with a password in the URL (trust auth ignores it), and a database
    that does not exist."""
    parts = urlsplit(database_url("emdx_no_such_db"))
    netloc = f"{parts.username or 'postgres'}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(unreachable, id="unreachable"),
        pytest.param(
            lambda backend, tmp: (
                str(tmp) if backend == "sqlite" else f"postgresql://u:{PASSWORD}@127.0.0.1:nope/x"
            ),
            id="bad-location",
        ),
        pytest.param(
            lambda backend, tmp: (
                str(tmp / "not-a-db") if backend == "sqlite" else missing_database()
            ),
            id="not-a-database",
        ),
    ],
)
def test_a_store_that_cannot_be_opened_is_one_line(
    backend: str, tmp_path: Path, make: Callable[[str, Path], str]
) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is no database " * 100)
    location = make(backend, tmp_path)
    with pytest.raises(StoreError) as info:
        open_store(location).close()
    message = str(info.value)
    print(message)
    assert "\n" not in message and message.strip() == message
    assert PASSWORD not in message
    assert "Traceback" not in message


def test_the_cli_says_one_line_without_the_password(tmp_path: Path, cli: Cli) -> None:
    url = f"postgresql://emdx:{PASSWORD}@127.0.0.1:1/emdx"
    for args in (["list"], ["exec", "list"], ["find", "x"]):
        done = cli(*args, env={"EMDX_DATABASE_URL": url})
        assert done.code == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "PostgreSQL" in lines[0] and "127.0.0.1" in lines[0]
        assert PASSWORD not in done.stderr + done.stdout
        assert "Traceback" not in done.stderr


def test_a_bad_database_url_is_refused_not_read_as_a_file(tmp_path: Path, cli: Cli) -> None:
    done = cli("list", env={"EMDX_DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"})
    assert done.code == 1
    assert "EMDX_DATABASE_URL" in done.stderr and PASSWORD not in done.stderr
    assert not list(tmp_path.rglob("*.db")), "a bad URL must never create a SQLite file"


def test_sqlite_mode_never_imports_psycopg(tmp_path: Path) -> None:
    """The default install has no psycopg: `emdx --help` and every SQLite command must work
    without it (the `team` extra is optional)."""
    code = (
        "import sys, emdx.cli; from emdx.store import open_store; "
        "s = open_store(); s.documents.save('t', 'c'); s.executions.list_executions(); "
        "s.close(); import emdx.service; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'procrastinate') "
        "or m.startswith('emdx.store.pg')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    for command in (["--help"], ["list"], ["exec", "list"], ["exec", "stats"]):
        imported, run = imported_by(["-m", "emdx", *command], cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "emdx.cli" in imported
        team = {m for m in imported if m.split(".")[0] in ("psycopg", "procrastinate")}
        assert not team and "emdx.store.pg" not in imported, (command, team)
