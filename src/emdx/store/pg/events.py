"""The run logs every host reads (team mode's `execution_events`): appended in batches by each
supervisor's row writer, read by `exec logs/show --follow` on any host, capped per run."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from emdx.models import ExecutionEvent, parse_time, utc_now
from emdx.store.pg.connection import Connection
from emdx.store.pg.documents import in_range
from emdx.store.pg.executions import _iso, _json, _loads

# A run keeps its newest EVENTS_MAX_ENTRIES entries and at most EVENTS_MAX_BYTES of them: what a
# follower on another host needs is the recent past (the whole log stays in the running host's
# logs/<key>.jsonl, itself capped at 64 MiB). An entry larger than EVENT_MAX_BYTES (a huge tool
# output) is kept without its `raw` event and with its message cut, marked `truncated`.
EVENTS_MAX_ENTRIES = 10_000
EVENTS_MAX_BYTES = 16 * 1024 * 1024
EVENT_MAX_BYTES = 256 * 1024
_MESSAGE_CUT = 4000
EVENTS_READ_MAX = 10_000
_TS_FIELD = re.compile(r'"ts"\s*:\s*"([^"]{1,64})"')


def _event_text(entry: Mapping[str, Any] | str) -> str:
    """An entry as stored: JSON text, at most EVENT_MAX_BYTES."""
    text = entry if isinstance(entry, str) else _json(entry)
    if len(text) * 4 <= EVENT_MAX_BYTES or len(text.encode("utf-8", "replace")) <= EVENT_MAX_BYTES:
        return text
    data = entry if isinstance(entry, Mapping) else _loads(text)
    small: dict[str, Any] = {"truncated": True, "bytes": len(text.encode("utf-8", "replace"))}
    if isinstance(data, Mapping):
        for name, value in data.items():
            if name == "raw":
                continue
            if isinstance(value, str) and len(value) > _MESSAGE_CUT:
                value = value[:_MESSAGE_CUT] + "…"
            if isinstance(value, str | int | float | bool) or value is None:
                small[name] = value
    return _json(small)


def _event(row: dict[str, Any]) -> ExecutionEvent:
    entry = _loads(row["entry"])
    if not isinstance(entry, dict):
        entry = {"type": "malformed", "message": str(row["entry"])[:_MESSAGE_CUT]}
    return ExecutionEvent(
        execution_id=row["execution_id"],
        run_key=row["run_key"],
        seq=int(row["seq"]),
        ts=_iso(row["ts"]) or "",
        entry=entry,
    )


class PgEventLog:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def append_events(self, run_key: str, entries: Sequence[Mapping[str, Any] | str]) -> int:
        """Append a batch of a run's log entries (dicts, or JSON text as the log writer encoded
        them); returns the last sequence number given, 0 when no row has that key.

        Sequence numbers start at 1 and never repeat within a run, also after old entries are
        dropped by the cap; concurrent appenders to one run are serialised on its head row."""
        if not entries:
            return 0
        texts = [_event_text(entry) for entry in entries]
        sizes = [len(text.encode("utf-8", "replace")) for text in texts]
        stamps = [_event_time(entry) for entry in entries]
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT id FROM executions WHERE run_key = %s", (run_key,)
            ).fetchone()
            if row is None:
                return 0
            execution_id = int(row["id"])
            head = conn.execute(
                """INSERT INTO execution_event_heads AS h (execution_id, last_seq, kept_bytes)
                   VALUES (%s, %s, %s)
                   ON CONFLICT (execution_id) DO UPDATE
                       SET last_seq = h.last_seq + EXCLUDED.last_seq,
                           kept_bytes = h.kept_bytes + EXCLUDED.kept_bytes
                   RETURNING last_seq, kept_bytes""",
                (execution_id, len(texts), sum(sizes)),
            ).fetchone()
            assert head is not None
            last, kept = int(head["last_seq"]), int(head["kept_bytes"])
            first = last - len(texts) + 1
            conn.execute(
                """INSERT INTO execution_events (execution_id, run_key, seq, ts, bytes, entry)
                   SELECT %s, %s, s, t, b, e
                   FROM unnest(%s::bigint[], %s::timestamptz[], %s::int[], %s::text[])
                       AS u(s, t, b, e)""",
                (
                    execution_id,
                    run_key,
                    list(range(first, last + 1)),
                    stamps,
                    sizes,
                    texts,
                ),
            )
            if last > EVENTS_MAX_ENTRIES or kept > EVENTS_MAX_BYTES:
                self._trim(conn, execution_id, last, kept)
        return last

    @staticmethod
    def _trim(conn: Any, execution_id: int, last: int, kept: int) -> None:
        """Drop the oldest entries past the cap; the newest entry always stays."""
        cut = conn.execute(
            """SELECT COALESCE(MAX(seq), 0) AS cut FROM (
                   SELECT seq, SUM(bytes) OVER (ORDER BY seq DESC) AS total
                   FROM execution_events WHERE execution_id = %s AND seq > %s
               ) newest WHERE total > %s AND seq < %s""",
            (execution_id, last - EVENTS_MAX_ENTRIES, EVENTS_MAX_BYTES, last),
        ).fetchone()
        cut_seq = max(int(cut["cut"]), last - EVENTS_MAX_ENTRIES)
        dropped = conn.execute(
            "DELETE FROM execution_events WHERE execution_id = %s AND seq <= %s RETURNING bytes",
            (execution_id, cut_seq),
        ).fetchall()
        freed = sum(int(r["bytes"]) for r in dropped)
        if freed:
            conn.execute(
                "UPDATE execution_event_heads SET kept_bytes = %s WHERE execution_id = %s",
                (kept - freed, execution_id),
            )

    def events_since(
        self, execution_id: int, after_seq: int = 0, limit: int = 1000
    ) -> list[ExecutionEvent]:
        """A run's kept entries with `seq > after_seq`, oldest first, at most `limit` (≤ 10 000).
        A follower passes the last seq it saw; a first seq above `after_seq + 1` means entries
        in between were dropped by the cap."""
        if not in_range(execution_id) or not in_range(after_seq):
            return []
        bounded = max(0, min(limit, EVENTS_READ_MAX))
        with self._db.read() as conn:
            rows = conn.execute(
                """SELECT execution_id, run_key, seq, ts, entry FROM execution_events
                   WHERE execution_id = %s AND seq > %s ORDER BY seq LIMIT %s""",
                (execution_id, after_seq, bounded),
            ).fetchall()
        return [_event(r) for r in rows]


def _event_time(entry: Mapping[str, Any] | str) -> datetime:
    """The entry's own `ts` (when it was logged; the log writer puts it first), else now."""
    if isinstance(entry, Mapping):
        stamp = entry.get("ts")
    else:
        found = _TS_FIELD.search(entry, 0, 200)
        stamp = found.group(1) if found else None
    return (parse_time(stamp) if isinstance(stamp, str) else None) or utc_now()
