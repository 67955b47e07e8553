"""What every store backend offers (SQLite, PostgreSQL): the interface the service codes against.

`tests/store_contract/` checks that both backends keep the same contract behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from emdx.models import Document, ExecOptions, Execution, ExecutionStatus, SearchHit, TagCount
from emdx.store.executions import Claim


class DocumentsAPI(Protocol):
    def save(
        self,
        title: str,
        content: str,
        project: str | None = None,
        tags: Sequence[str] = (),
        parent_id: int | None = None,
    ) -> int: ...

    def get(self, doc_id: int, include_deleted: bool = False) -> Document: ...

    def touch(self, doc_id: int) -> None: ...

    def list_documents(
        self,
        project: str | None = None,
        limit: int | None = 50,
        deleted: bool = False,
        tags: Sequence[str] = (),
    ) -> list[Document]: ...

    def search(
        self,
        query: str,
        tags: Sequence[str] = (),
        project: str | None = None,
        limit: int = 20,
        snippets: bool = True,
    ) -> list[SearchHit]: ...

    def add_tags(self, doc_id: int, tags: Sequence[str]) -> list[str]: ...

    def remove_tags(self, doc_id: int, tags: Sequence[str]) -> list[str]: ...

    def tag_counts(self) -> list[TagCount]: ...

    def set_deleted(self, doc_id: int, deleted: bool) -> None: ...


class ExecutionsAPI(Protocol):
    def create(
        self,
        *,
        run_key: str,
        doc_id: int | None,
        doc_title: str,
        exec_type: str,
        options: ExecOptions,
        parent_execution_id: int | None = None,
        creator: tuple[int, float | None] | None = None,
    ) -> int: ...

    def get(self, execution_id: int) -> Execution: ...

    def by_key(self, run_key: str) -> Execution | None: ...

    def resolve(self, ref: str | int) -> Execution: ...

    def list_executions(
        self,
        statuses: Sequence[str] | None = None,
        limit: int | None = 50,
        doc_id: int | None = None,
    ) -> list[Execution]: ...

    def update(
        self,
        execution_id: int,
        *,
        key: str | None = None,
        only_supervised: bool = False,
        **fields: Any,
    ) -> bool: ...

    def transition(
        self,
        execution_id: int,
        from_statuses: Sequence[ExecutionStatus],
        to_status: ExecutionStatus,
        *,
        key: str | None = None,
        **fields: Any,
    ) -> bool: ...

    def finish(
        self,
        execution_id: int,
        status: ExecutionStatus,
        exit_code: int | None,
        reason: str,
        *,
        key: str | None = None,
        **fields: Any,
    ) -> bool: ...

    def by_session(self, session_id: str) -> list[Execution]: ...

    def delete(self, execution_id: int) -> bool: ...

    def beat(self, execution_id: int, at: str, uptime_s: float | None, key: str) -> bool: ...

    def queued(self) -> list[Execution]: ...

    def claim_slot(
        self, execution_id: int, max_parallel: int, from_status: ExecutionStatus
    ) -> Claim: ...

    def usage_limit_until(self, now: str) -> str | None: ...

    def spent_since(self, since: str) -> float: ...

    def slots_in_use(self) -> int: ...

    def active(self) -> list[Execution]: ...

    def owing_post_actions(self) -> list[Execution]: ...

    def stats_rows(self, since_iso: str, sample: int = 10_000) -> dict[str, Any]: ...


@runtime_checkable
class Store(Protocol):
    """An open, migrated store."""

    # Read-only properties, so that each backend's own classes satisfy them.
    @property
    def documents(self) -> DocumentsAPI: ...

    @property
    def executions(self) -> ExecutionsAPI: ...

    @property
    def path(self) -> Path:
        """What this home's run markers (EMDX_DB) name: the SQLite file, also in team mode."""
        ...

    @property
    def location(self) -> str:
        """What `open_store` takes to open the same store again: the file path, or the URL
        with its credentials (never shown: see `display`)."""
        ...

    @property
    def display(self) -> str:
        """The store as messages may name it (a PostgreSQL URL without its password)."""
        ...

    @property
    def version(self) -> int: ...

    def integrity_ok(self) -> bool: ...

    def complete_post_actions(
        self,
        execution_id: int,
        output: tuple[str, str, str | None, list[str], int] | None,
        add_tags: list[str],
        remove_tags: list[str],
    ) -> tuple[bool, int | None]: ...

    def cancel_when(self, cancelled: Callable[[], bool] | None) -> None:
        """Make this store's statements stop (raising StoreError) soon after `cancelled()`
        turns true — the TUI's superseded searches; None: never."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...
