"""Tag vocabulary: tags are stored as emoji, as earlier releases did, and typed as text aliases."""

from __future__ import annotations

from collections.abc import Sequence

NOTE = "📝"
ANALYSIS = "🔍"
GAMEPLAN = "🎯"
ACTIVE = "🚀"
DONE = "✅"
SUCCESS = "🎉"
FAILED = "❌"
BLOCKED = "🚧"

ALIASES: dict[str, str] = {
    "gameplan": GAMEPLAN,
    "plan": GAMEPLAN,
    "strategy": GAMEPLAN,
    "active": ACTIVE,
    "current": ACTIVE,
    "working": ACTIVE,
    "done": DONE,
    "complete": DONE,
    "completed": DONE,
    "finished": DONE,
    "bug": "🐛",
    "fix": "🐛",
    "note": NOTE,
    "notes": NOTE,
    "analysis": ANALYSIS,
    "investigation": ANALYSIS,
    "research": ANALYSIS,
    "success": SUCCESS,
    "succeeded": SUCCESS,
    "failed": FAILED,
    "failure": FAILED,
    "blocked": BLOCKED,
    "stuck": BLOCKED,
    "urgent": "🚨",
    "docs": "📚",
    "documentation": "📚",
    "test": "🧪",
    "testing": "🧪",
    "feature": "✨",
    "refactor": "🔧",
}

NAMES: dict[str, str] = {}
for _alias, _emoji in ALIASES.items():
    NAMES.setdefault(_emoji, _alias)


def normalize(tag: str) -> str:
    """The stored form of a tag typed by a user: an alias becomes its emoji, text is lowercased."""
    cleaned = tag.strip()
    return ALIASES.get(cleaned.lower(), cleaned if not cleaned.isascii() else cleaned.lower())


def parse_list(raw: str | Sequence[str] | None) -> list[str]:
    """Split comma-separated input into normalised tags, in order, without duplicates. Only
    commas separate: a tag may contain spaces ("needs review"; runs of them become one)."""
    if raw is None:
        return []
    parts = [raw] if isinstance(raw, str) else list(raw)
    seen: list[str] = []
    for part in parts:
        for piece in part.split(","):
            tag = normalize(" ".join(piece.split()))
            if tag and tag not in seen:
                seen.append(tag)
    return seen


def label(tag: str) -> str:
    """`🎯 gameplan` for a known emoji, the tag itself otherwise."""
    name = NAMES.get(tag)
    return f"{tag} {name}" if name else tag
