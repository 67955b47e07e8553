"""What the TUI shows and does, as plain calls on the service; imports no Textual.

Each call opens its own short-lived Service, because the TUI calls these from thread workers and a
SQLite connection must not be shared by concurrent threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from emdx.models import Document, ExecOptions, Execution
from emdx.service import KillResult, Service

T = TypeVar("T")

STATUS_FILTERS: tuple[tuple[str, list[str] | None], ...] = (
    ("all", None),
    ("active", ["running", "queued"]),
    ("completed", ["completed"]),
    ("failed", ["failed"]),
    ("killed", ["killed"]),
)


def _with_service(action: Callable[[Service], T]) -> T:
    with Service() as service:
        return action(service)


@dataclass(frozen=True)
class DocumentRow:
    id: int
    title: str
    tags: str
    project: str


def documents(query: str = "", limit: int = 500) -> list[DocumentRow]:
    """Documents matching `query` (full-text when given, newest first otherwise)."""

    def load(service: Service) -> list[Document]:
        if query.strip():
            return [hit.document for hit in service.find_documents(query, limit=limit)]
        return service.list_documents(limit=limit)

    return [
        DocumentRow(d.id, d.title, " ".join(d.tags), d.project or "") for d in _with_service(load)
    ]


def document(doc_id: int) -> tuple[Document, list[Execution]]:
    """A document and its ten most recent executions."""

    def load(service: Service) -> tuple[Document, list[Execution]]:
        doc = service.get_document(doc_id)
        runs = service.store.executions.list_executions(None, 10, doc_id=doc_id)
        return doc, runs

    return _with_service(load)


def executions(statuses: list[str] | None, limit: int = 200) -> list[Execution]:
    """The runs, after the sweep every look at runs does (see `emdx.service.repair`)."""

    def load(service: Service) -> list[Execution]:
        service.sweep("`emdx gui`")
        return service.list_executions(statuses, limit)

    return _with_service(load)


def execution(execution_id: int) -> Execution:
    return _with_service(lambda service: service.get_execution(execution_id))


def start(doc_id: int) -> Execution:
    """Same options and defaults as `emdx claude execute --background`."""
    return _with_service(lambda service: service.start_execution(doc_id, ExecOptions()))


def kill(execution_id: int) -> KillResult:
    return _with_service(lambda service: service.kill_execution(execution_id))


def retry(execution_id: int) -> Execution:
    return _with_service(lambda service: service.retry_execution(execution_id))
