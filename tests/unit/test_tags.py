"""Tag vocabulary: aliases to emoji, parsing of typed tag lists, labels."""

from __future__ import annotations

import pytest

from emdx import tags

# The emoji vocabulary listed in LEGACY_SCHEMA.md.
LEGACY_EMOJI = {"🎯", "🚀", "✅", "🐛", "📝", "🔍", "🎉", "❌", "🚧", "🚨", "📚", "🧪", "✨", "🔧"}


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("note", "📝"), ("Notes", "📝"), ("  NOTE  ", "📝"), ("gameplan", "🎯"), ("plan", "🎯"),
        ("strategy", "🎯"), ("active", "🚀"), ("done", "✅"), ("Completed", "✅"), ("bug", "🐛"),
        ("fix", "🐛"), ("analysis", "🔍"), ("research", "🔍"), ("success", "🎉"),
        ("failed", "❌"), ("blocked", "🚧"), ("urgent", "🚨"), ("docs", "📚"), ("test", "🧪"),
        ("feature", "✨"), ("refactor", "🔧"),
    ],
)  # fmt: skip
def test_aliases_become_emoji(typed: str, stored: str) -> None:
    assert tags.normalize(typed) == stored


def test_normalize_text_and_emoji() -> None:
    assert tags.normalize("📝") == "📝"
    assert tags.normalize(" Python ") == "python"
    assert tags.normalize("MixedCase-Tag") == "mixedcase-tag"
    assert tags.normalize("") == ""


def test_every_alias_maps_into_the_legacy_vocabulary() -> None:
    assert set(tags.ALIASES.values()) <= LEGACY_EMOJI
    assert set(tags.ALIASES.values()) == LEGACY_EMOJI
    assert all(alias == alias.lower() for alias in tags.ALIASES)


def test_parse_list_splits_normalises_and_deduplicates() -> None:
    assert tags.parse_list(None) == []
    assert tags.parse_list("") == []
    assert tags.parse_list(" , ,, ") == []
    assert tags.parse_list("note,bug") == ["📝", "🐛"]
    assert tags.parse_list("note, bug, plan") == ["📝", "🐛", "🎯"]
    assert tags.parse_list("note, notes,📝,NOTE") == ["📝"]
    assert tags.parse_list(["bug", "fix", "Python", "python"]) == ["🐛", "python"]
    assert tags.parse_list(["note,plan", "done"]) == ["📝", "🎯", "✅"]
    assert tags.parse_list("zeta,alpha") == ["zeta", "alpha"]  # order kept, not sorted


def test_label() -> None:
    assert tags.label("📝") == "📝 note"
    assert tags.label("🎯") == "🎯 gameplan"
    assert tags.label("🐛") == "🐛 bug"
    assert tags.label("python") == "python"
    assert tags.label("🦄") == "🦄"
    # Every emoji has a name.
    assert all(tags.label(e) != e for e in LEGACY_EMOJI)


def test_only_commas_separate_tags() -> None:
    """Issue 11 item 19: tags were split on spaces too, although the help says comma-separated:
    a tag may contain spaces."""
    assert tags.parse_list("needs review, note") == ["needs review", "📝"]
    assert tags.parse_list(["needs   Review", "note,plan"]) == ["needs review", "📝", "🎯"]
    assert tags.parse_list("  spaced  out  ,") == ["spaced out"]
