"""Search snippets from a bounded window (emdx.store.snippets): the same text FTS5's own
snippet() gives on small documents, a bounded one on huge documents."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import open_sqlite

from emdx.store import SqliteStore
from emdx.store.snippets import AFTER, BEFORE

SMALL = {
    "stems": "# Running notes\n\nShe runs daily; the runner was happy about happiness.",
    "phrase": "An exact phrase here, and an exact match of a phrase there.",
    "prefix": "Alphabet soup: alphanumeric, alpha and beta.",
    "many": "\n".join(f"line {i} with the word target and filler text" for i in range(40)),
    "title only": "Nothing of interest in this body at all.",
    "accents": "Un café crème, puis un autre café.",
}
QUERIES = [
    "running",
    "happy",
    "alpha*",
    '"exact phrase"',
    "phrase NOT nothing",
    "target",
    "word OR filler",
    "café",
    "Nothing",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with open_sqlite(tmp_path / "knowledge.db") as opened:
        yield opened


def fts5_snippets(store: SqliteStore, query: str) -> dict[int, str]:
    """What FTS5's own snippet() says for `query`, by document id."""
    rows = store.conn.execute(
        "SELECT rowid, snippet(documents_fts, 1, '[', ']', '…', 12) FROM documents_fts "
        "WHERE documents_fts MATCH ?",
        (query,),
    ).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def test_small_documents_get_exactly_fts5s_snippet(store: SqliteStore) -> None:
    for title, content in SMALL.items():
        store.documents.save(title, content)
    for query in QUERIES:
        expected = fts5_snippets(store, query)
        got = {h.document.id: h.snippet for h in store.documents.search(query, limit=100)}
        assert expected, query
        assert got == expected, query


def test_a_hit_far_into_a_document_is_cut_from_a_window_around_it(store: SqliteStore) -> None:
    filler = "lorem ipsum dolor sit amet " * 40_000  # ~1 MiB before the hit
    doc_id = store.documents.save("far", filler + "the pangolin hides here " + filler)
    [hit] = store.documents.search("pangolin")
    assert hit.document.id == doc_id
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert "[pangolin]" in hit.snippet
    assert len(hit.snippet) < 200


def test_a_stem_inside_other_words_does_not_hide_the_real_hit(store: SqliteStore) -> None:
    """Candidates are string matches of the stems; those the index does not count as the word
    (`cat` in `concatenate`, `scatter`) are skipped for the next window."""
    decoys = "concatenate scatter " * (4 * (BEFORE + AFTER) // 20)
    store.documents.save("decoys", decoys + "a cat sat" + " tail" * 50)
    [hit] = store.documents.search("cat")
    assert "[cat]" in hit.snippet, hit.snippet


def test_without_snippets_none_is_built(store: SqliteStore) -> None:
    store.documents.save("one", "alpha beta")
    [hit] = store.documents.search("alpha", snippets=False)
    assert hit.snippet == ""


def test_a_bad_query_inside_the_window_falls_back_to_the_words(store: SqliteStore) -> None:
    """A column filter matches the index but not the one-column window: its words are
    highlighted instead of failing."""
    store.documents.save("pangolin", "about the pangolin")
    [hit] = store.documents.search("content:pangolin")
    assert hit.snippet == "about the [pangolin]"


def test_an_interrupted_search_is_a_store_error(store: SqliteStore) -> None:
    from emdx.errors import StoreError

    store.documents.save("one", "alpha " * 10_000)
    store.conn.set_progress_handler(lambda: 1, 1)
    try:
        with pytest.raises(StoreError, match="interrupted"):
            store.documents.search("alpha")
    finally:
        store.conn.set_progress_handler(None, 1)
    assert isinstance(store.conn, sqlite3.Connection)
