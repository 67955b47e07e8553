"""Search snippets cut from a bounded window of a document, never from the whole text.

FTS5's `snippet()` scores a fragment around every hit of every phrase of the document, so its
cost grows with the square of the text: a 1 MiB document took seconds and a 16 MiB one (which
`save` accepts) never finished, holding the CLI and the TUI's worker with it. Here the first
hits are found with plain string searches for the query's stems (the tokenizer's own, read
back through `fts5vocab`), and `snippet()` runs on a few KiB around them, in a temporary FTS5
table with the index's tokenizer; the work no longer depends on the document's size beyond one
linear scan.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import unicodedata

# The tokenizer of `documents_fts` (store/migrations.py): stems must be the index's own.
TOKENIZE = "porter unicode61"
BEFORE = 1000
"""Characters of context kept before a candidate hit."""
AFTER = 3000
"""Characters kept after it: snippet() picks its best fragment in that window."""
ATTEMPTS = 4
"""Candidate windows tried (a stem found inside a word that the index does not match) before
the snippet falls back to the document's first words."""
BOUNDARY_CHECKS = 10_000
"""Occurrences of a stem looked at for a word start before any occurrence is taken."""
WORDS = 12
_OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})
_TERM = re.compile(r"\w+\*?")


def _terms(query: str) -> list[str]:
    """The words of an FTS5 query (operators and syntax dropped), `*` kept on prefixes."""
    return [t for t in _TERM.findall(query) if t.rstrip("*") not in _OPERATORS]


def _lead(content: str) -> str:
    """The document's first words: the snippet of a match in the title only."""
    words = content[: 40 * WORDS].split()
    text = " ".join(words[:WORDS])
    return text + "…" if len(words) > WORDS or len(content) > 40 * WORDS else text


def _word_start(text: str, index: int) -> bool:
    return index == 0 or not text[index - 1].isalnum()


def _first(lowered: str, stem: str, start: int) -> int:
    """Where `stem` next starts a word in `lowered` from `start`, -1 if nowhere."""
    index = lowered.find(stem, start)
    checks = 0
    while index != -1 and not _word_start(lowered, index) and checks < BOUNDARY_CHECKS:
        index = lowered.find(stem, index + 1)
        checks += 1
    return index


@functools.cache
def _accented() -> dict[str, str]:
    """Each ASCII letter's precomposed accented forms (é, è, ê… for e): unicode61 removes
    diacritics, so the stem `cafe` matches `café`."""
    forms: dict[str, str] = {}
    for code in (*range(0xC0, 0x250), *range(0x1E00, 0x1F00)):
        char = chr(code)
        base = unicodedata.normalize("NFKD", char)[0].lower()
        if base.isascii() and base.isalpha() and base != char.lower():
            forms[base] = forms.get(base, "") + char
    return forms


def _accent_blind(stems: list[str]) -> re.Pattern[str]:
    """A pattern for the stems that also matches their letters accented (slower than
    `str.find`: used only when that found nothing in a text that is not ASCII)."""
    forms = _accented()
    marks = "[\u0300-\u036f]*"

    def letters(stem: str) -> str:
        return "".join((f"[{c}{forms[c]}]" if c in forms else re.escape(c)) + marks for c in stem)

    return re.compile("|".join(letters(s) for s in stems), re.IGNORECASE)


class Snippets:
    """Snippets for one search, over the searching connection (its temp schema only)."""

    def __init__(self, conn: sqlite3.Connection, match: str) -> None:
        self._conn = conn
        self._match = match
        terms = _terms(match)
        # The words again, each as an FTS5 string (a prefix keeps its `*`): highlights any of
        # them when the query as typed does not match inside the window (NOT, NEAR, columns).
        self._any = " OR ".join(
            '"' + t.rstrip("*").replace('"', '""') + '"' + ("*" if t.endswith("*") else "")
            for t in terms
        )
        conn.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.emdx_snippet USING fts5(content, "
            f"tokenize='{TOKENIZE}')"
        )
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.emdx_snippet_terms "
            "USING fts5vocab(temp, emdx_snippet, row)"
        )
        self._stems = self._stems_of(" ".join(t.rstrip("*") for t in terms))

    def _stems_of(self, text: str) -> list[str]:
        if not text.strip():
            return []
        self._load(text)
        stems = [str(r[0]) for r in self._conn.execute("SELECT term FROM temp.emdx_snippet_terms")]
        alternatives = set(stems)
        # Porter turns a final y into i ("happy" → "happi"), which the typed word lacks.
        alternatives.update(s[:-1] for s in stems if s.endswith("i") and len(s) > 2)
        return sorted(alternatives, key=len, reverse=True)

    def _load(self, text: str) -> None:
        self._conn.execute("DELETE FROM temp.emdx_snippet")
        self._conn.execute("INSERT INTO temp.emdx_snippet (rowid, content) VALUES (1, ?)", (text,))

    def _window_snippet(self, window: str) -> str | None:
        self._load(window)
        for match in (self._match, self._any):
            if not match:
                continue
            try:
                row = self._conn.execute(
                    "SELECT snippet(emdx_snippet, 0, '[', ']', '…', ?) FROM temp.emdx_snippet "
                    "WHERE emdx_snippet MATCH ?",
                    (WORDS, match),
                ).fetchone()
            except sqlite3.OperationalError as exc:
                if "interrupt" in str(exc).lower():
                    raise
                continue  # the typed query needs the document's columns (`title:x`)
            if row is not None and row[0]:
                return str(row[0])
        return None

    def _candidates(self, content: str) -> tuple[str, bool]:
        lowered = content.lower()
        # Lowercasing a few characters changes the length (İ): positions would not line up.
        return (lowered, True) if len(lowered) == len(content) else (content, False)

    def of(self, content: str) -> str:
        """The snippet of `content`: around the first hit of the query, with `[` `]` around
        the matching words, `…` where text was left out."""
        if not self._stems:
            return _lead(content)
        text, folded = self._candidates(content)
        pattern = None
        if not folded:
            pattern = re.compile("|".join(re.escape(s) for s in self._stems), re.IGNORECASE)
        found = self._around(content, text, pattern)
        if found is None and not content.isascii():
            found = self._around(content, content, _accent_blind(self._stems))
        return found if found is not None else _lead(content)

    def _around(self, content: str, text: str, pattern: re.Pattern[str] | None) -> str | None:
        """The snippet of the first candidate window (of `ATTEMPTS`) in which the index's
        tokenizer finds a hit; candidates are found in `text` (`content` lowercased, or as is
        with a `pattern`)."""
        position = 0
        for _ in range(ATTEMPTS):
            if pattern is not None:
                found = pattern.search(text, position)
                hit = found.start() if found else -1
            else:
                hits = [h for h in (_first(text, s, position) for s in self._stems) if h != -1]
                hit = min(hits) if hits else -1
            if hit == -1:
                break
            start, end = self._bounds(content, hit)
            snippet = self._window_snippet(content[start:end])
            if snippet is not None:
                if start > 0 and not snippet.startswith("…"):
                    snippet = "…" + snippet
                if end < len(content) and not snippet.endswith("…"):
                    snippet += "…"
                return snippet
            position = end
        return None

    @staticmethod
    def _bounds(content: str, hit: int) -> tuple[int, int]:
        """A window around `hit`, cut at spaces so that no word is halved."""
        start = max(0, hit - BEFORE)
        if start > 0:
            space = content.find(" ", start, hit)
            start = space + 1 if space != -1 else start
        end = min(len(content), hit + AFTER)
        if end < len(content):
            space = content.rfind(" ", hit, end)
            end = space if space != -1 else end
        return start, end
