"""The `store` fixture, once per backend: SQLite in a temp dir, PostgreSQL in a database made for
this session (`emdx_test_<random>`, dropped at the end whatever happened), emptied per test.

EMDX_TEST_PG_URL names the server (default postgresql://postgres@127.0.0.1:5432/postgres, which
`scripts/ensure_postgres.sh` brings up). An unreachable server fails these tests, never skips
them: a team-mode store that is not tested is not known to work.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from emdx.store import SqliteStore, Store, open_store

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["sqlite", "postgres"]
PG_TABLES = "documents, tags, document_tags, executions, execution_events, execution_event_heads"


def server_url() -> str:
    return os.environ.get("EMDX_TEST_PG_URL") or DEFAULT_PG_URL


def database_url(name: str) -> str:
    parts = urlsplit(server_url())
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(server_url(), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {server_url()} ({exc}); run "
            "`bash scripts/ensure_postgres.sh` or set EMDX_TEST_PG_URL",
            pytrace=False,
        )


class Databases:
    """Creates databases for tests and drops every one of them at the end."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def create(self) -> str:
        name = f"emdx_test_{secrets.token_hex(6)}"
        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return database_url(name)

    def drop_all(self) -> None:
        with admin() as conn:
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    made = Databases()
    try:
        yield made
    finally:
        made.drop_all()


@pytest.fixture(scope="session")
def pg_url(pg_databases: Databases) -> str:
    """One migrated database for the session's contract tests."""
    url = pg_databases.create()
    open_store(url).close()
    return url


def _empty(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {PG_TABLES} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where this test's (empty) store lives: a SQLite file path, or the session database."""
    if backend == "sqlite":
        return str(tmp_path / "knowledge.db")
    url: str = request.getfixturevalue("pg_url")
    _empty(url)
    return url


@pytest.fixture
def fresh_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A location emdx never opened (migrations start from nothing)."""
    if backend == "sqlite":
        return str(tmp_path / "fresh.db")
    made: Databases = request.getfixturevalue("pg_databases")
    return made.create()


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    with open_store(location) as opened:
        yield opened


@pytest.fixture
def open_another(location: str) -> Iterator[Callable[[], Store]]:
    """Opens more stores on the same database (another process or host, as far as the store
    can tell: its own connection); all closed at the end."""
    opened: list[Store] = []

    def another() -> Store:
        opened.append(open_store(location))
        return opened[-1]

    yield another
    for each in opened:
        each.close()


Sql = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def sql(backend: str, store: Store) -> Iterator[Sql]:
    """Raw SQL on the test's database, for what the API does not show (usage counts, legacy
    rows). `?` placeholders on both backends."""
    if backend == "sqlite":
        assert isinstance(store, SqliteStore)
        conn = store.conn

        def run_sqlite(statement: str, *params: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(statement, params).fetchall()]

        yield run_sqlite
        return
    import psycopg

    pg = psycopg.connect(store.location, autocommit=True)

    def run_pg(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        cur = pg.execute(statement.replace("?", "%s"), params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    try:
        yield run_pg
    finally:
        pg.close()
