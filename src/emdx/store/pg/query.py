"""The search syntax SQLite's FTS5 accepts, translated into a PostgreSQL tsquery.

`emdx find` must behave the same on both backends, so the query a user types is read as FTS5
reads it: words and "phrases" (implicitly AND), `AND`, `OR`, `NOT` (upper case), parentheses,
`prefix*`. Every word and phrase goes to `phraseto_tsquery`, which accepts any text, so no input
can make the SQL fail; a query that is not valid FTS5 syntax is searched, as on SQLite, as its
words (every one required, punctuation and operators taken literally).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from emdx.store.pg.migrations import TS_CONFIG

_PREFIX = re.compile(r"^[^\W_]+\*$")
_OPERATORS = ("AND", "OR", "NOT")


class _SyntaxError(Exception):
    pass


@dataclass
class TsQuery:
    """SQL for a tsquery value, its parameters, and the words to look for in a snippet."""

    sql: str
    params: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) with kind in word, phrase, op, open, close; unbalanced quotes are errors."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            # FTS5 writes a quote inside a string as two.
            while end != -1 and end + 1 < n and text[end + 1] == '"':
                end = text.find('"', end + 2)
            if end == -1:
                raise _SyntaxError("unbalanced quote")
            tokens.append(("phrase", text[i + 1 : end].replace('""', '"')))
            i = end + 1
        elif ch in "()":
            tokens.append(("open" if ch == "(" else "close", ch))
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in '()"':
                j += 1
            word = text[i:j]
            tokens.append(("op" if word in _OPERATORS else "word", word))
            i = j
    return tokens


class _Parser:
    """or := and (OR and)*; and := not ([AND] not)*; not := primary (NOT primary)*."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0
        self.params: list[str] = []
        self.words: list[str] = []

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def parse(self) -> str:
        sql = self.or_expr()
        if self.peek() is not None:
            raise _SyntaxError("unexpected token")
        return sql

    def or_expr(self) -> str:
        parts = [self.and_expr()]
        while self.peek() == ("op", "OR"):
            self.at += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"

    def and_expr(self) -> str:
        parts = [self.not_expr()]
        while True:
            token = self.peek()
            if token == ("op", "AND"):
                self.at += 1
            elif token is None or token[0] in ("close",) or token == ("op", "OR"):
                break
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"

    def not_expr(self) -> str:
        sql = self.primary(positive=True)
        while self.peek() == ("op", "NOT"):
            self.at += 1
            sql = f"({sql} && !!{self.primary(positive=False)})"
        return sql

    def primary(self, positive: bool) -> str:
        token = self.peek()
        if token is None or token[0] in ("op", "close"):
            raise _SyntaxError("expected a term")
        self.at += 1
        kind, text = token
        if kind == "open":
            sql = self.or_expr()
            if self.peek() != ("close", ")"):
                raise _SyntaxError("unbalanced parenthesis")
            self.at += 1
            return sql
        if kind == "word" and text == "NEAR" and self.peek() == ("open", "("):
            # NEAR(a b) is read as a AND b: PostgreSQL has no proximity of unordered words.
            return self.primary(positive)
        if positive:
            self.words.extend(text.split())
        if kind == "word" and _PREFIX.match(text):
            self.params.append(f"'{text[:-1]}':*")
            return f"to_tsquery('{TS_CONFIG}', %s)"
        self.params.append(text)
        return f"phraseto_tsquery('{TS_CONFIG}', %s)"


def literal_words(query: str) -> TsQuery:
    """Every whitespace-separated word required, taken literally (SQLite's fallback)."""
    words = query.split()
    sql = " && ".join(f"phraseto_tsquery('{TS_CONFIG}', %s)" for _ in words)
    return TsQuery(f"({sql})" if words else "''::tsquery", list(words), list(words))


def translate(query: str) -> TsQuery:
    """The tsquery for a query typed as FTS5 syntax, or its literal words when it is not."""
    try:
        parser = _Parser(_tokens(query))
        if not parser.tokens:
            return literal_words(query)
        sql = parser.parse()
    except _SyntaxError:
        return literal_words(query)
    return TsQuery(sql, parser.params, parser.words)
