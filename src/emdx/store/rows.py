"""Rows read into dataclasses, the same for both backends: an execution's columns are the
`Execution` dataclass's fields (a column added to one is added to the other, or this fails)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, Protocol

from emdx import jsonio
from emdx.models import ExecOptions, ExecType, Execution, ExecutionStatus


class Row(Protocol):
    """What both drivers' rows offer (`sqlite3.Row`, psycopg's dict rows): values by name."""

    def __getitem__(self, key: str, /) -> Any: ...


EXECUTION_COLUMNS = tuple(f.name for f in fields(Execution))
# The columns that hold times (ISO-8601 text in SQLite, TIMESTAMPTZ in PostgreSQL).
TIME_COLUMNS = frozenset(
    {
        "created_at",
        "started_at",
        "completed_at",
        "heartbeat_at",
        "last_event_at",
        "waiting_until",
        "resets_at",
    }
)


def _json_object(text: object) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        data = jsonio.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _status(value: object) -> ExecutionStatus:
    try:
        return ExecutionStatus(str(value))
    except ValueError:
        return ExecutionStatus.FAILED  # a damaged row reads as ended, never as alive


def execution_of(row: Row, time: Callable[[Any], str | None] | None = None) -> Execution:
    """The row as an `Execution`: JSON columns parsed (damaged JSON reads as empty), enums
    checked, counts defaulted; `time` turns a backend's time value into ISO text."""
    values = {name: row[name] for name in EXECUTION_COLUMNS}
    values["exec_type"] = ExecType.of(values["exec_type"])
    values["status"] = _status(values["status"])
    values["options"] = ExecOptions.from_dict(_json_object(values["options"]))
    values["details"] = _json_object(values["details"]) or {}
    values["event_count"] = values["event_count"] or 0
    values["malformed_count"] = values["malformed_count"] or 0
    values["attempt"] = values["attempt"] or 1
    values["branch_created"] = bool(values["branch_created"])
    if time is not None:
        for name in TIME_COLUMNS:
            values[name] = time(values[name])
    return Execution(**values)
