"""The one sanitiser (`emdx.format`): property tests over every control code point and the escape
sequences attackers print, plus the exact escaped forms."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.text import Text
from security_helpers import (
    C0,
    C1,
    DANGEROUS,
    DCS,
    OSC0_ST,
    OSC52_BEL,
)

from emdx.format import json_dumps, log_line, markup_safe, one_line, sanitize

SEQUENCES = [
    "\x1b[31m",
    "\x1b[0m",
    "\x1b[2J",
    "\x1b[H",
    "\x1b[?1049h",
    OSC0_ST,
    "\x1b]0;title\x07",
    OSC52_BEL,
    "\x1b]52;c;cHduZWQ=\x1b\\",
    "\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\",
    DCS,
    "\x9b31m",
    "\x9d0;title\x9c",
    "\x90q\x9c",
    "\r\n",
]

printable = st.one_of(
    st.just(" "),
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")),
)
dangerous = st.sampled_from(sorted(DANGEROUS))
piece = st.one_of(
    st.text(printable, max_size=8),
    dangerous,
    st.sampled_from(SEQUENCES),
    st.sampled_from(["\n", "\t", "\\", "\\x1b", "\\u202e", "[bold]", "[/]"]),
)
hostile_text = st.lists(piece, max_size=24).map("".join)
plain_text = st.lists(st.one_of(printable, st.sampled_from("\n\t\\")), max_size=60).map("".join)

# Shared 2-core machines: an example that is slow because of the load is not a failure (no
# timing assertions), so no per-example deadline and no "too slow" health check.
patient = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A visible escape, as sanitize writes one (and as a literal backslash sequence may already be).
ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4})")


def shown_safely(text: str, allowed: str = "\n\t") -> None:
    bad = [c for c in text if c in DANGEROUS or not (c.isprintable() or c in allowed)]
    assert not bad, (bad, text)


@patient
@given(hostile_text)
def test_sanitize_leaves_nothing_a_terminal_interprets(text: str) -> None:
    out = sanitize(text)
    shown_safely(out)
    # Nothing is dropped: each dangerous character (but the `\r` of a CRLF, shown as a newline)
    # became one visible escape, and everything else is unchanged.
    count = sum(1 for c in text.replace("\r\n", "\n") if c in DANGEROUS)
    assert len(ESCAPE.findall(out)) == len(ESCAPE.findall(text)) + count
    assert ESCAPE.sub("", out) == ESCAPE.sub(
        "", "".join(c for c in text.replace("\r\n", "\n") if c not in DANGEROUS)
    )


@patient
@given(plain_text)
def test_printable_text_passes_unchanged(text: str) -> None:
    assert sanitize(text) == text
    assert json.loads(json_dumps(text)) == text


@patient
@given(hostile_text)
def test_one_line_is_one_printable_line(text: str) -> None:
    out = one_line(text)
    shown_safely(out, allowed="")
    assert out.isprintable()


@patient
@given(hostile_text)
def test_markup_safe_renders_as_the_sanitised_text(text: str) -> None:
    out = markup_safe(text)
    shown_safely(out)
    # What it is for: text put between tags.
    assert Text.from_markup(f"[bold]{out}[/bold]").plain == sanitize(text)
    # On its own, only trailing backslashes show doubled (they must not escape a later tag).
    shown = sanitize(text)
    trailing = len(shown) - len(shown.rstrip("\\"))
    assert Text.from_markup(out).plain == shown + "\\" * trailing


# JSON cannot write a lone high surrogate followed by a lone low one other than as the pair
# (which it reads as one character); nothing emdx decodes produces that.
SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
json_text = hostile_text.filter(lambda text: not SURROGATE_PAIR.search(text))
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), json_text),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(json_text, children, max_size=4)
    ),
    max_leaves=12,
)


@patient
@given(json_value)
def test_json_dumps_round_trips_with_nothing_raw(data: object) -> None:
    out = json_dumps(data)
    shown_safely(out, allowed="")
    assert json.loads(out) == data


@patient
@given(st.dictionaries(plain_text, plain_text, max_size=4))
def test_json_dumps_keeps_readable_text_as_json_does(data: dict[str, str]) -> None:
    assert json_dumps(data) == json.dumps(data, ensure_ascii=False)


@patient
@given(hostile_text, hostile_text, hostile_text)
def test_log_line_is_one_safe_line(message: str, icon: str, ts: str) -> None:
    out = log_line({"ts": ts, "icon": icon, "message": message, "level": "info"})
    shown_safely(out, allowed="")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        (OSC52_BEL, "\\x1b]52;c;cHduZWQ=\\x07"),
        (OSC0_ST, "\\x1b]0;pwned-title\\x1b\\"),
        ("\x9b1m \x9d0;t\x9c", "\\x9b1m \\x9d0;t\\x9c"),
        ("\x00\x08\x7f", "\\x00\\x08\\x7f"),
        ("a\u202eb\u2066c\u2069\u200f\u061c", "a\\u202eb\\u2066c\\u2069\\u200f\\u061c"),
        ("line\u2028sep", "line\\u2028sep"),
        (b"bad \xff\x9b".decode("utf-8", "surrogateescape"), "bad \\udcff\\udc9b"),
        ("a\\x1b stays", "a\\x1b stays"),
        ("over\rwrite", "over\\x0dwrite"),
        ("windows\r\nlines\r\n", "windows\nlines\n"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("emoji 🚀 ✏️ 👩‍💻 e\u0301", "emoji 🚀 ✏️ 👩‍💻 e\u0301"),
    ],
)
def test_escaped_forms(text: str, shown: str) -> None:
    assert sanitize(text) == shown


def test_every_control_character_is_escaped_one_by_one() -> None:
    for char in C0 + C1 + ["\x7f"]:
        assert sanitize(char) == f"\\x{ord(char):02x}"
    assert sanitize("\udcff") == "\\udcff"


def test_one_line_joins_lines() -> None:
    assert one_line("a\n\tb  c\r\n\x1b") == "a b  c \\x1b"
    assert one_line("title\u2028next\x85end") == "title next end"


@pytest.mark.parametrize(
    "text", ["[bold]x[/bold] [/]", "\\[ x \\]", "\\[bold]", "a\\", "[@click=app.quit]"]
)
def test_markup_is_shown_as_typed(text: str) -> None:
    assert Text.from_markup(f"[red]{markup_safe(text)}[/red]").plain == text
    assert Text.from_markup(markup_safe(text + "\x1b[1m")).plain == text + "\\x1b[1m"


def test_json_dumps_escapes_what_json_leaves_raw() -> None:
    out = json_dumps({"k\x9b": ["\x1b]0;t\x07", "\u202e", "\u2028", "\x7f"], "p": Path("/x")})
    assert out == (
        '{"k\\u009b": ["\\u001b]0;t\\u0007", "\\u202e", "\\u2028", "\\u007f"], "p": "/x"}'
    )
