"""Helpers for the hostile-input suite: the dangerous characters, what a terminal must never get,
and hostile text to plant (the CLI run in a pseudo-terminal is `testkit.run_in_pty`).

The dangerous set is written out here from DESIGN §8 and the brief, not imported from
`emdx.format`: a test that borrowed the code's own table would pass whatever the table said.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

C0 = [chr(c) for c in range(0x20) if chr(c) not in "\n\t"]
DEL = ["\x7f"]
C1 = [chr(c) for c in range(0x80, 0xA0)]
BIDI = [
    "\u061c",
    "\u200e",
    "\u200f",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
]
SEPARATORS = ["\u2028", "\u2029"]
SURROGATES = [chr(c) for c in range(0xD800, 0xE000)]
DANGEROUS = frozenset(C0 + DEL + C1 + BIDI + SEPARATORS + SURROGATES)

# Whole sequences an attacker prints (each also in tests/support/fake_claude.py's HOSTILE).
OSC52_BEL = "\x1b]52;c;cHduZWQ=\x07"
OSC0_ST = "\x1b]0;pwned-title\x1b\\"
CSI_CLEAR = "\x1b[2J"
CSI_RED = "\x1b[31m"
C1_CSI = "\x9b1m"
C1_OSC = "\x9d0;c1-title\x9c"
DCS = "\x1bPdcs\x1b\\"

# How the escaped forms look on screen (a literal backslash, then the code).
SHOWN_ESC = "\\x1b"
SHOWN_OSC52 = "\\x1b]52;c;"
SHOWN_C1 = "\\x9b"

HOSTILE_TITLE = f"Hostile {OSC52_BEL} {OSC0_ST} {CSI_RED}red {C1_CSI} bell\x07 {C1_OSC} \u202eevil"
HOSTILE_TAG = "evil\x1b]0;tag\x07"
HOSTILE_PROJECT = "proj\x1b]0;project\x07\x9b"


def hostile_document(*directives: str) -> str:
    """A document whose title (its first line) and body carry every kind of escape sequence."""
    lines = [
        f"# {HOSTILE_TITLE}",
        "",
        f"body {OSC52_BEL} {OSC0_ST} {CSI_CLEAR}{CSI_RED} {C1_CSI} {C1_OSC} {DCS}",
        "more \x07\x08\x7f over\rwrite \u202eevil \u2066isolate\u2069 searchable-word",
        *directives,
        "",
    ]
    return "\n".join(lines)


def violations(data: bytes, allowed: re.Pattern[bytes] | None = None) -> list[str]:
    """What in `data` (bytes a terminal would get) is a raw dangerous character: ESC, BEL, any
    other C0 but newline and tab, DEL, C1 (as UTF-8 or as a raw 8-bit byte), bidi controls, line
    separators; `allowed` removes the sequences a renderer emits itself (Rich's colours) first.
    Each finding is shown with some context."""
    if allowed is not None:
        data = allowed.sub(b"", data)
    # surrogateescape turns a byte that is not UTF-8 (a raw 0x9b) into U+DC9B: a surrogate.
    text = data.decode("utf-8", "surrogateescape")
    found = []
    for index, char in enumerate(text):
        if char in DANGEROUS:
            found.append(f"{char!r} in {text[max(0, index - 30) : index + 30]!r}")
            if len(found) >= 5:
                break
    return found


# What Rich writes to a terminal on its own: SGR colours and styles; Live's redraw (carriage
# return, erase line, cursor up, cursor hidden/shown); the pty's own CRLF for each newline.
RICH_CONTROLS = re.compile(
    rb"\x1b\[[0-9;]*m|\x1b\[2K|\x1b\[[0-9]*A|\x1b\[\?25[lh]|\r\n|\r(?=\x1b\[2K)"
)


@dataclass
class Checked:
    """One command's output and what was wrong with it."""

    name: str
    problems: list[str]


def check_output(
    name: str,
    streams: Iterable[bytes],
    shown: Iterable[str] = (),
    allowed: re.Pattern[bytes] | None = None,
) -> Checked:
    """No raw dangerous character in any stream, and every string of `shown` (an escaped form)
    visible in them, so that a command cannot pass by dropping the hostile text."""
    problems: list[str] = []
    joined = b""
    for stream in streams:
        problems += violations(stream, allowed)
        joined += stream
    text = joined.decode("utf-8", "replace")
    problems += [f"{s!r} not shown" for s in shown if s not in text]
    return Checked(name, problems)


def assert_all_clean(results: list[Checked]) -> None:
    bad = [f"{r.name}: {'; '.join(r.problems)}" for r in results if r.problems]
    assert not bad, "hostile text reached the terminal:\n" + "\n".join(bad)
