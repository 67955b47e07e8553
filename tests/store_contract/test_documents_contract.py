"""Documents, tags, search and the trash: the same behaviour on SQLite and PostgreSQL (through
the service, as the CLI and the TUI use them)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from contract_helpers import Sql
from testkit import recorded_time, save_doc

from emdx.errors import InvalidInputError, InvalidStateError, NotFoundError, UsageError
from emdx.service import Service
from emdx.store import Store

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture
def service(store: Store) -> Service:
    return Service(store)


def tag_usage(sql: Sql) -> dict[str, int]:
    return {name: count for name, count in sql("SELECT name, usage_count FROM tags")}


# -- save / get / list ---------------------------------------------------------------------------


def test_save_and_get_round_trip(service: Service) -> None:
    content = "# 知识库 🚀 Plan\n\nשלום — Cafe\u0301 👨‍👩‍👧‍👦\n\ttabs  and  spaces \n"
    saved = service.save_document(content, tags="note,plan", project="proj", detect=False)
    assert saved.title == "知识库 🚀 Plan"
    assert saved.tags == ("📝", "🎯")
    doc = service.get_document(saved.id)
    assert doc.content == content
    assert doc.title == saved.title
    assert doc.project == "proj"
    assert doc.tags == tuple(sorted({"📝", "🎯"}))
    assert doc.is_deleted is False and doc.deleted_at is None
    assert doc.access_count == 0 and doc.parent_id is None
    for value in (doc.created_at, doc.updated_at, doc.accessed_at):
        assert value is not None and ISO_UTC.match(value)


def test_parent_and_ids_are_kept(store: Store) -> None:
    first = store.documents.save("parent", "body")
    child = store.documents.save("child", "body", "p", ["x"], parent_id=first)
    assert child > first
    assert store.documents.get(child).parent_id == first


def test_list_is_newest_first_with_filters_and_limit(service: Service) -> None:
    a = save_doc(service, "alpha", project="p1", tags="note")
    b = save_doc(service, "beta", project="p2", tags="note,bug")
    c = save_doc(service, "gamma", project="p1", tags="bug")
    d = save_doc(service, "delta", project=None)
    assert [x.id for x in service.list_documents()] == [d, c, b, a]
    assert [x.id for x in service.list_documents(limit=2)] == [d, c]
    assert [x.id for x in service.list_documents(limit=None)] == [d, c, b, a]
    assert [x.id for x in service.list_documents(project="p1")] == [c, a]
    assert [x.id for x in service.list_documents(tags="note")] == [b, a]
    assert [x.id for x in service.list_documents(tags="fix")] == [c, b]  # alias of 🐛
    assert [x.id for x in service.list_documents(tags=["note", "bug"])] == [b]
    assert [x.id for x in service.list_documents(project="p1", tags="bug")] == [c]
    assert service.list_documents(project="nope") == []
    assert len(service.store.documents.list_documents(limit=None)) == 4


def test_get_unknown_document_raises_not_found(service: Service) -> None:
    with pytest.raises(NotFoundError, match="document 42 not found") as info:
        service.get_document(42)
    assert "restore" not in str(info.value)


def test_empty_and_oversized_content_write_nothing(service: Service, store: Store) -> None:
    with pytest.raises(InvalidInputError):
        service.save_document(" \n", detect=False)
    assert store.documents.list_documents(limit=None) == []


def test_ids_beyond_64_bits_are_not_found(store: Store) -> None:
    """An id no row can have is "not found", on every path that takes one."""
    huge = 2**63
    with pytest.raises(NotFoundError):
        store.documents.get(huge)
    with pytest.raises(NotFoundError):
        store.documents.add_tags(huge, ["x"])
    with pytest.raises(NotFoundError):
        store.executions.get(huge)
    assert store.executions.update(huge, pid=1) is False
    assert store.documents.list_documents(limit=2**70) == []


# -- search --------------------------------------------------------------------------------------


def test_title_hit_ranks_above_content_only_hit(service: Service) -> None:
    content_hit = save_doc(service, "Unrelated heading\n\nSomething about a zebra crossing here.")
    title_hit = save_doc(service, "# Zebra handbook\n\nNothing else of note in the body.")
    save_doc(service, "no match at all")
    hits = service.find_documents("zebra")
    assert [h.document.id for h in hits] == [title_hit, content_hit]
    assert hits[0].rank < hits[1].rank
    assert "zebra" in hits[1].snippet.lower()
    assert hits[0].document.content.startswith("# Zebra handbook")


def test_more_hits_rank_higher_and_stems_match(service: Service) -> None:
    once = save_doc(service, "# one\n\nthe parser runs once")
    often = save_doc(service, "# many\n\nparsers running, parser ran, the parser runs and runs")
    assert [h.document.id for h in service.find_documents("running parser")] == [often, once]
    snippet = service.find_documents("running parser")[0].snippet
    assert "[" in snippet and "]" in snippet


def test_search_filters_by_tags_and_project(service: Service) -> None:
    a = save_doc(service, "widget one", tags="note", project="p1")
    b = save_doc(service, "widget two", tags="bug", project="p1")
    c = save_doc(service, "widget three", tags="note", project="p2")
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
        "col:", "{title}: x", "foo*bar", "** **", "😀", "日本語", "\\", "%", "_", "a\x00b",
        "!!", "&", "|", "<->", ":*", "foo & bar | !baz", "'foo':*", "$$", "%s", "?", ";--",
    ],
)  # fmt: skip
def test_fts_special_characters_never_raise(service: Service, query: str) -> None:
    doc = save_doc(service, "# foo-bar notes\n\nfoo bar baz")
    hits = service.find_documents(query)
    assert all(h.document.id == doc for h in hits)


def test_stop_words_and_operator_words_are_found(service: Service) -> None:
    doc = save_doc(service, "# The plan\n\nto be or not to be")
    save_doc(service, "# other\n\nnothing here")
    for query in ("the", "not", "or", "to be"):
        assert [h.document.id for h in service.find_documents(query)] == [doc], query


def test_hyphenated_query_finds_the_words(service: Service) -> None:
    doc = save_doc(service, "# foo-bar notes\n\nsomething")
    save_doc(service, "# unrelated\n\nfoo only")
    assert [h.document.id for h in service.find_documents("foo-bar")] == [doc]


def test_fts_syntax_still_works_when_valid(service: Service) -> None:
    a = save_doc(service, "# apple pie\n\nrecipe")
    b = save_doc(service, "# apple tart\n\nrecipe")
    c = save_doc(service, "# cherry pie\n\nrecipe")
    assert {h.document.id for h in service.find_documents("apple NOT tart")} == {a}
    assert {h.document.id for h in service.find_documents("appl*")} == {a, b}
    assert {h.document.id for h in service.find_documents('"apple pie"')} == {a}
    assert {h.document.id for h in service.find_documents("tart OR cherry")} == {b, c}
    assert {h.document.id for h in service.find_documents("pie AND (apple OR cherry)")} == {a, c}
    assert {h.document.id for h in service.find_documents("recipe NOT (tart OR cherry)")} == {a}


def test_search_skips_the_trash(service: Service) -> None:
    keep = save_doc(service, "keep the quokka")
    gone = save_doc(service, "delete the quokka")
    service.delete_document(gone)
    assert [h.document.id for h in service.find_documents("quokka")] == [keep]


def test_snippet_comes_from_around_the_first_hit(service: Service) -> None:
    filler = "lorem ipsum dolor " * 5000
    doc = save_doc(service, f"# far\n\n{filler} the needle is here {filler}")
    (hit,) = service.find_documents("needle")
    assert hit.document.id == doc
    assert "[needle]" in hit.snippet
    assert len(hit.snippet) <= 400


# -- tags ----------------------------------------------------------------------------------------


def test_tags_are_normalised_and_deduplicated(service: Service, sql: Sql) -> None:
    saved = service.save_document(
        "x", tags="note, Notes,plan,  gameplan,Python,python,📝", detect=False
    )
    assert saved.tags == ("📝", "🎯", "python")
    assert set(service.get_document(saved.id).tags) == {"📝", "🎯", "python"}
    assert tag_usage(sql) == {"📝": 1, "🎯": 1, "python": 1}


def test_odd_tags_round_trip(store: Store) -> None:
    odd = ["a'b", 'q"uote', "semi;colon", "%_", "日本", "👨‍👩‍👧", "back\\slash", "x" * 200]
    doc = store.documents.save("t", "c", None, odd)
    assert store.documents.get(doc).tags == tuple(sorted(odd))
    for tag in odd:
        assert [d.id for d in store.documents.list_documents(tags=[tag])] == [doc]
    assert store.documents.remove_tags(doc, odd[:2]) == odd[:2]
    assert store.documents.get(doc).tags == tuple(sorted(odd[2:]))


def test_usage_count_follows_tag_and_untag(service: Service, sql: Sql) -> None:
    a = save_doc(service, "a", tags="note")
    b = save_doc(service, "b")
    assert service.tag_document(b, ["note", "bug"]) == ["📝", "🐛"]
    assert tag_usage(sql) == {"📝": 2, "🐛": 1}
    # Tagging again adds nothing and counts nothing.
    assert service.tag_document(b, ["notes", "📝"]) == []
    assert tag_usage(sql) == {"📝": 2, "🐛": 1}
    assert service.untag_document(a, ["note", "bug"]) == ["📝"]
    assert tag_usage(sql) == {"📝": 1, "🐛": 1}
    assert service.untag_document(a, ["note"]) == []
    assert tag_usage(sql) == {"📝": 1, "🐛": 1}
    assert service.get_document(a).tags == ()
    assert {(c.name, c.count) for c in service.tag_counts()} == {("📝", 1), ("🐛", 1)}


def test_tag_counts_order_and_skip_deleted_and_unused(service: Service) -> None:
    a = save_doc(service, "a", tags="note,bug")
    save_doc(service, "b", tags="note,zeta")
    save_doc(service, "c", tags="alpha")
    service.untag_document(a, ["bug"])
    service.delete_document(a)
    assert [(c.name, c.count) for c in service.tag_counts()] == [
        ("alpha", 1), ("zeta", 1), ("📝", 1),
    ]  # fmt: skip


def test_tag_unknown_document_writes_nothing(service: Service, sql: Sql) -> None:
    with pytest.raises(NotFoundError):
        service.tag_document(99, ["note"])
    with pytest.raises(NotFoundError):
        service.untag_document(99, ["note"])
    assert sql("SELECT COUNT(*) FROM tags") == [(0,)]
    with pytest.raises(UsageError):
        service.tag_document(1, [" ", ","])


# -- delete / restore ----------------------------------------------------------------------------


def test_delete_hides_and_restore_brings_back(service: Service) -> None:
    keep = save_doc(service, "keep the quokka")
    gone = save_doc(service, "delete the quokka", tags="note")
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
    assert service.store.documents.get(gone, include_deleted=True).is_deleted

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


def test_view_bumps_access_count(service: Service) -> None:
    doc = save_doc(service, "# viewed\n\ncontent words")
    first = service.get_document(doc, touch=True)
    assert first.access_count == 0
    service.get_document(doc, touch=True)
    after = service.get_document(doc)
    assert after.access_count == 2
    assert recorded_time(after.accessed_at) >= recorded_time(first.accessed_at)
    assert service.get_document(doc).access_count == 2
    assert [h.document.id for h in service.find_documents("content")] == [doc]


def test_writes_are_seen_by_another_connection(
    store: Store, open_another: Callable[[], Store]
) -> None:
    doc = store.documents.save("shared", "seen elsewhere", None, ["x"])
    other = open_another()
    assert other.documents.get(doc).content == "seen elsewhere"
    other.documents.set_deleted(doc, True)
    with pytest.raises(NotFoundError, match="restore"):
        store.documents.get(doc)
