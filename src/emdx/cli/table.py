"""Aligned plain-text tables for the listing commands.

Rich renders tables beautifully but costs ~100 ms to import and lay out 50 rows, which is most of
the time budget of `emdx exec list`; listings are read many times a minute, so they use this.
Colour only on a terminal, and never with NO_COLOR. Cells are user, agent or system text: each is
`format.one_line`d (sanitised, on one line).
"""

import os
import shutil
import sys
import unicodedata
from collections.abc import Sequence
from typing import TextIO

from emdx.format import one_line

Cell = str | tuple[str, str]  # text, or (text, colour name)

_COLOURS = {
    "green": "32",
    "red": "31",
    "yellow": "33",
    "cyan": "36",
    "magenta": "35",
    "blue": "34",
    "dim": "2",
    "bold": "1",
}


def display_width(text: str) -> int:
    """Terminal cells `text` takes: wide (CJK, most emoji) count 2, combining marks 0."""
    if text.isascii():
        return len(text)
    total = 0
    for char in text:
        if unicodedata.combining(char) or char in "\u200d\ufe0f":
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


def clip(text: str, width: int) -> str:
    """`text` cut to at most `width` cells, with an ellipsis when cut."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        size = display_width(char)
        if used + size > width - 1:
            break
        out.append(char)
        used += size
    return "".join(out) + "…"


def wrapped(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` cells, broken at spaces (a longer word is split)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        while display_width(word) > width:
            if line:
                lines.append(line)
                line = ""
            head, used = [], 0
            for char in word:
                if used + display_width(char) > width:
                    break
                head.append(char)
                used += display_width(char)
            lines.append("".join(head))
            word = word[len(head) :]
        candidate = f"{line} {word}" if line else word
        if display_width(candidate) <= width:
            line = candidate
        else:
            lines.append(line)
            line = word
    lines.append(line)
    return lines


def _use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    right: Sequence[int] = (),
    flexible: int | None = None,
    wrap: bool = False,
    title: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Print rows under headers, two spaces apart. Column `flexible` shrinks so that the table
    fits the terminal: its cells are clipped, or with `wrap` continued on the next lines (for
    text that must be read in full, a reason); columns in `right` are right-aligned."""
    out = stream or sys.stdout
    colour = _use_colour(out)
    cells = [[(c, None) if isinstance(c, str) else c for c in row] for row in rows]
    clean = [[(one_line(text), col) for text, col in row] for row in cells]
    widths = [display_width(h) for h in headers]
    for row in clean:
        for index, (text, _) in enumerate(row):
            widths[index] = max(widths[index], display_width(text))
    if flexible is not None:
        room = shutil.get_terminal_size((120, 24)).columns
        excess = sum(widths) + 2 * (len(widths) - 1) - room
        if excess > 0:
            floor = 24 if wrap else 8  # wrapped text stays readable: a few words a line
            widths[flexible] = max(
                display_width(headers[flexible]),
                widths[flexible] - excess,
                min(floor, widths[flexible]),
            )

    def line(row: Sequence[tuple[str, str | None]], bold: bool = False) -> str:
        parts = []
        for index, (text, col) in enumerate(row):
            text = clip(text, widths[index])
            pad = " " * (widths[index] - display_width(text))
            cell = pad + text if index in right else text + pad
            code = "1" if bold else _COLOURS.get(col or "")
            if colour and code:
                cell = f"\x1b[{code}m{cell}\x1b[0m"
            parts.append(cell)
        return "  ".join(parts).rstrip()

    if title:
        out.write(one_line(title) + "\n")
    out.write(line([(h, None) for h in headers], bold=True) + "\n")
    for row in clean:
        if not wrap or flexible is None:
            out.write(line(row) + "\n")
            continue
        text, col = row[flexible]
        for index, part in enumerate(wrapped(text, widths[flexible])):
            shown: list[tuple[str, str | None]] = (
                list(row) if index == 0 else [("", None)] * len(row)  # a continuation line
            )
            shown[flexible] = (part, col)
            out.write(line(shown) + "\n")
    out.flush()
