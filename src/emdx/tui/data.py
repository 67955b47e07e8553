"""What the TUI shows and does, as plain calls on the service; imports no Textual.

Each call opens its own short-lived Service, because the TUI calls these from thread workers and a
SQLite connection must not be shared by concurrent threads. A call given `cancelled` (the
worker's "was I cancelled?") stops its SQL as soon as that turns true: SQLite asks a progress
handler every few hundred steps, and the statement ends with an "interrupted" error. A worker
blocked in a query could otherwise never be cancelled, and the app could not quit while it ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from emdx.format import tag_text
from emdx.models import Document, ExecOptions, Execution
from emdx.service import KillResult, LogTail, Service

T = TypeVar("T")

STATUS_FILTERS: tuple[tuple[str, list[str] | None], ...] = (
    ("all", None),
    ("active", ["running", "queued"]),
    ("completed", ["completed"]),
    ("failed", ["failed"]),
    ("killed", ["killed"]),
)


Cancelled = Callable[[], bool]


def _with_service(action: Callable[[Service], T], cancelled: Cancelled | None = None) -> T:
    with Service() as service:
        service.cancel_when(cancelled)
        return action(service)


@dataclass(frozen=True)
class DocumentRow:
    id: int
    title: str
    tags: str
    project: str


def documents(
    query: str = "", limit: int = 500, cancelled: Cancelled | None = None
) -> list[DocumentRow]:
    """Documents matching `query` (full-text when given, newest first otherwise)."""

    def load(service: Service) -> list[Document]:
        if query.strip():
            hits = service.find_documents(query, limit=limit, snippets=False)
            return [hit.document for hit in hits]
        return service.list_documents(limit=limit)

    return [
        DocumentRow(d.id, d.title, tag_text(d.tags), d.project or "")
        for d in _with_service(load, cancelled)
    ]


def document(doc_id: int, cancelled: Cancelled | None = None) -> tuple[Document, list[Execution]]:
    """A document and its ten most recent executions."""

    def load(service: Service) -> tuple[Document, list[Execution]]:
        doc = service.get_document(doc_id)
        runs = service.list_executions(None, 10, doc_id=doc_id)
        return doc, runs

    return _with_service(load, cancelled)


def executions(
    statuses: list[str] | None, limit: int = 200, cancelled: Cancelled | None = None
) -> list[Execution]:
    """The runs, after the sweep every look at runs does (see `emdx.service.repair`)."""

    def load(service: Service) -> list[Execution]:
        service.sweep("`emdx gui`")
        return service.list_executions(statuses, limit)

    return _with_service(load, cancelled)


def execution(execution_id: int, cancelled: Cancelled | None = None) -> Execution:
    return _with_service(lambda service: service.get_execution(execution_id), cancelled)


def start(doc_id: int) -> Execution:
    """Same options and defaults as `emdx claude execute --background`."""
    return _with_service(lambda service: service.start_execution(doc_id, ExecOptions()))


def kill(execution_id: int) -> KillResult:
    return _with_service(lambda service: service.kill_execution(execution_id))


def retry(execution_id: int) -> Execution:
    return _with_service(lambda service: service.retry_execution(execution_id))


def log_tail(execution: Execution) -> LogTail | None:
    """An incremental reader of the run's log (each `poll()` returns the new entries)."""
    return LogTail(Path(execution.log_file)) if execution.log_file else None
