"""What only the PostgreSQL store has or needs: the run log's events, reconnecting after the
server dropped the connection, NUL bytes, documents too large for one tsvector, the seam."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest

from emdx.errors import StoreError, StoreUnavailable
from emdx.models import ExecOptions, ExecutionStatus
from emdx.store import Store, open_store
from emdx.store.connection import is_transient
from emdx.store.pg import PgStore
from emdx.store.pg import events as pg_events

S = ExecutionStatus


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
def pg(store: Store) -> Iterator[PgStore]:
    assert isinstance(store, PgStore)
    yield store


def running(store: Store, key: str) -> int:
    run = store.executions.create(
        run_key=key, doc_id=None, doc_title="t", exec_type="generic", options=ExecOptions()
    )
    assert store.executions.claim_slot(run, 100, S.PREPARING) == "claimed"
    return run


# -- execution_events ----------------------------------------------------------------------------


def test_events_keep_order_and_are_read_since_a_seq(pg: PgStore) -> None:
    run = running(pg, "ev")
    first = [
        {"ts": f"2026-01-01T00:00:0{i}+00:00", "type": "t", "message": f"m{i}"} for i in range(3)
    ]
    assert pg.queue.append_events("ev", first) == 3
    # The log writer's own encoded lines are taken as they are.
    assert pg.queue.append_events("ev", ['{"ts": "2026-01-01T00:00:09+00:00", "n": 4}']) == 4
    events = pg.queue.events_since(run)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.entry.get("message") for e in events[:3]] == ["m0", "m1", "m2"]
    assert events[0].ts == "2026-01-01T00:00:00.000000+00:00"
    assert events[3].entry == {"ts": "2026-01-01T00:00:09+00:00", "n": 4}
    assert [e.seq for e in pg.queue.events_since(run, after_seq=2)] == [3, 4]
    assert [e.seq for e in pg.queue.events_since(run, after_seq=1, limit=2)] == [2, 3]
    assert pg.queue.events_since(run, after_seq=4) == []
    assert pg.queue.events_since(run + 1) == []
    assert pg.queue.append_events("no-such-run", first) == 0
    assert pg.queue.append_events("ev", []) == 0


def test_events_are_capped_per_run_and_seqs_go_on(
    pg: PgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_events, "EVENTS_MAX_ENTRIES", 50)
    run = running(pg, "cap")
    other = running(pg, "other")
    pg.queue.append_events("other", [{"n": 0}])
    for batch in range(7):
        pg.queue.append_events("cap", [{"n": batch * 10 + i} for i in range(10)])
    kept = pg.queue.events_since(run, limit=1000)
    assert [e.seq for e in kept] == list(range(21, 71))
    assert [e.entry["n"] for e in kept] == list(range(20, 70))
    assert len(pg.queue.events_since(other)) == 1  # another run's entries stay

    monkeypatch.setattr(pg_events, "EVENTS_MAX_BYTES", 2000)
    pg.queue.append_events("cap", [{"pad": "x" * 300, "n": 70 + i} for i in range(10)])
    kept = pg.queue.events_since(run, limit=1000)
    assert kept[-1].seq == 80
    sizes = [len(json.dumps(e.entry, ensure_ascii=False).encode()) for e in kept]
    assert sum(sizes) <= 2000 < sum(sizes) + 330
    assert [e.seq for e in kept] == list(range(81 - len(kept), 81))


def test_an_oversized_entry_is_kept_small(pg: PgStore) -> None:
    run = running(pg, "big")
    huge = {"ts": "2026-01-01T00:00:00+00:00", "type": "user", "message": "m" * 10_000,
            "raw": {"content": "x" * (1024 * 1024)}}  # fmt: skip
    pg.queue.append_events("big", [huge])
    (event,) = pg.queue.events_since(run)
    assert event.entry["truncated"] is True and "raw" not in event.entry
    assert event.entry["type"] == "user" and len(event.entry["message"]) <= 4001
    assert event.entry["bytes"] > 1024 * 1024


def test_concurrent_appenders_get_distinct_contiguous_seqs(
    pg: PgStore, open_another: Callable[[], Store]
) -> None:
    run = running(pg, "many")
    writers = [open_another() for _ in range(4)]
    assert all(isinstance(w, PgStore) for w in writers)
    barrier = threading.Barrier(len(writers))

    def write(store: Store, who: int) -> None:
        assert isinstance(store, PgStore)
        barrier.wait(30)
        for i in range(10):
            store.queue.append_events("many", [{"who": who, "i": i}] * 3)

    threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    events = pg.queue.events_since(run, limit=10_000)
    assert [e.seq for e in events] == list(range(1, 121))
    for who in range(4):
        assert [e.entry["i"] for e in events if e.entry["who"] == who] == [
            i for i in range(10) for _ in range(3)
        ]


def test_events_go_with_a_deleted_row(pg: PgStore) -> None:
    run = pg.executions.create(
        run_key="gone", doc_id=None, doc_title="t", exec_type="generic", options=ExecOptions()
    )
    pg.queue.append_events("gone", [{"n": 1}])
    assert pg.executions.delete(run)
    assert pg.queue.events_since(run) == []


# -- connections ---------------------------------------------------------------------------------


def _terminate_backends(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name = 'emdx'"
        )


def test_a_dropped_connection_is_one_transient_error_then_reconnects(pg: PgStore) -> None:
    doc = pg.documents.save("t", "survives", None, [])
    _terminate_backends(pg.location)
    with pytest.raises(StoreUnavailable) as info:
        pg.documents.get(doc)
    assert "\n" not in str(info.value) and is_transient(info.value)
    assert pg.documents.get(doc).content == "survives"
    _terminate_backends(pg.location)
    with pytest.raises(StoreUnavailable):
        pg.executions.create(
            run_key="k", doc_id=None, doc_title="t", exec_type="generic", options=ExecOptions()
        )
    assert pg.executions.list_executions() == []
    assert pg.executions.create(
        run_key="k", doc_id=None, doc_title="t", exec_type="generic", options=ExecOptions()
    )


def test_nul_and_surrogates_in_agent_text_are_stored_not_refused(pg: PgStore) -> None:
    """SQLite keeps NUL in text, PostgreSQL refuses it: a hostile model name or result must
    not make a final write fail (stored as U+FFFD)."""
    run = running(pg, "nul")
    assert pg.executions.finish(run, S.FAILED, 1, "agent_error", model="evil\x00model")
    assert pg.executions.get(run).model == "evil\ufffdmodel"
    # A lone surrogate (what a JSON "\\udcff" escape decodes to) cannot be UTF-8 either.
    assert pg.executions.update(run, session_id="s\udcff1", details={"e": "x\udcffy"})
    got_run = pg.executions.get(run)
    assert got_run.session_id == "s\ufffd1"
    assert got_run.details == {"e": "x\udcffy"}  # JSON text escapes it: kept exactly
    doc = pg.documents.save("ti\x00tle", "con\x00tent", "p\x00", ["t\x00g"])
    got = pg.documents.get(doc)
    assert (got.title, got.content, got.project, got.tags) == (
        "ti\ufffdtle", "con\ufffdtent", "p\ufffd", ("t\ufffdg",),
    )  # fmt: skip


def test_a_document_too_large_for_one_tsvector_is_saved_and_found(pg: PgStore) -> None:
    """Distinct words beyond a tsvector's 1 MiB: still saved, found by its title and start."""
    words = " ".join(f"w{i:07d}x" for i in range(400_000))  # ~4.4 MB of distinct words
    doc = pg.documents.save("Enormous glossary", f"opening {words} closing", None, [])
    assert [h.document.id for h in pg.documents.search("glossary")] == [doc]
    (hit,) = pg.documents.search("opening")
    assert hit.document.id == doc and "[opening]" in hit.snippet
    assert len(hit.snippet) <= 400


def test_find_in_a_16_mib_document_has_a_bounded_snippet(pg: PgStore) -> None:
    filler = "lorem ipsum dolor sit amet " * (16 * 1024 * 1024 // 27 - 10)
    doc = pg.documents.save("big", f"{filler} needle", None, [])
    (hit,) = pg.documents.search("needle")
    assert hit.document.id == doc
    assert "[needle]" in hit.snippet and len(hit.snippet) <= 400
    (hit,) = pg.documents.search("lorem")
    assert len(hit.snippet) <= 400


# -- the seam ------------------------------------------------------------------------------------


def test_emdx_database_url_opens_postgres_and_location_reopens_it(
    pg: PgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = pg.documents.save("t", "team", None, [])
    monkeypatch.setenv("EMDX_DATABASE_URL", pg.location)
    with open_store() as chosen:
        assert isinstance(chosen, PgStore)
        assert chosen.documents.get(doc).content == "team"
        with open_store(chosen.location) as again:
            assert again.documents.get(doc).content == "team"
    assert isinstance(pg, Store)


def test_team_mode_without_psycopg_says_what_to_install(pg: PgStore) -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from emdx.errors import EnvironmentProblem\n"
        "from emdx.store import open_store\n"
        "try:\n"
        f"    open_store({pg.location!r})\n"
        "except EnvironmentProblem as exc:\n"
        "    print(exc, exc.fixes)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "emdx[team]" in done.stdout


def test_a_store_error_is_no_psycopg_exception(pg: PgStore) -> None:
    with pytest.raises(StoreError) as info:
        pg.executions.create(
            run_key="dup", doc_id=None, doc_title="t", exec_type="generic", options=ExecOptions()
        )
        pg.executions.create(
            run_key="dup", doc_id=None, doc_title="t", exec_type="generic", options=ExecOptions()
        )
    assert not isinstance(info.value, psycopg.Error)
    assert info.value.__cause__ is None
