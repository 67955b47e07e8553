"""JSON that an agent may have written (its events, files in EMDX_HOME it can reach) read into
values every later step can take, and JSON emdx writes that strict parsers accept.

- `loads`: `NaN`, `Infinity` and numbers outside a float's range (`1e999`) are read as None, and
  so are integers outside SQLite's 64 bits: one event field must not make a row unwritable or
  `--json` output invalid. Too deep nesting is a ValueError like any other bad JSON.
- `dumps`: never writes `NaN` or `Infinity` (a non-finite float, e.g. a sum that overflowed, is
  written as null).
"""

from __future__ import annotations

import json
import math
from typing import Any

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_INT_DIGITS = len(str(INT_MAX)) + 1  # a sign and 19 digits


def _int(text: str) -> int | None:
    if len(text) > _INT_DIGITS:
        return None
    value = int(text)
    return value if INT_MIN <= value <= INT_MAX else None


def _float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _constant(_text: str) -> None:
    return None


def loads(text: str | bytes) -> Any:
    """Parse JSON text; ValueError when it is not JSON (or nests deeper than Python goes)."""
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def column_value(value: Any) -> Any:
    """A column value as a database takes it: an integer clamped to 64 bits, a non-finite float
    as NULL (sums of what an agent reported must never make a row unwritable)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return min(max(value, INT_MIN), INT_MAX)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite(data: Any) -> Any:
    """`data` with every non-finite float replaced by None (containers copied as needed)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
    return data


def dumps(data: Any, **options: Any) -> str:
    """`json.dumps` that writes strict JSON: a non-finite float becomes null."""
    try:
        return json.dumps(data, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(data), allow_nan=False, **options)
