"""What every store backend offers (SQLite, PostgreSQL): the interface the service codes against.

`tests/store_contract/` checks that both backends keep the same contract behind it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from emdx.models import (
    Document,
    ExecOptions,
    Execution,
    ExecutionEvent,
    ExecutionStatus,
    SearchHit,
    TagCount,
    WorkerInfo,
)
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
        host: str | None = None,
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
        queued_job: int | None = None,
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
        self,
        execution_id: int,
        max_parallel: int,
        from_status: ExecutionStatus,
        job: int | None = None,
    ) -> Claim: ...

    def usage_limit_until(self, now: str) -> str | None: ...

    def spent_since(self, since: str) -> float: ...

    def slots_in_use(self) -> int: ...

    def active(self) -> list[Execution]: ...

    def owing_post_actions(self) -> list[Execution]: ...

    def stats_rows(self, since_iso: str, sample: int = 10_000) -> dict[str, Any]: ...


# Team mode's queues: runs go to `emdx` unless --queue names another; a worktree run goes to
# the workers that hold its repository (`emdx worker --repo PATH`).
DEFAULT_QUEUE = "emdx"


def repo_queue(name: str, root: str | None) -> str:
    """The queue of runs that need a worker holding the repository `name` (its directory's
    name: the paths differ from host to host) whose first commit is `root` (two unrelated
    repositories of one name are not the same)."""
    return f"repo:{name}@{root[:12]}" if root else f"repo:{name}"


@dataclass(frozen=True)
class Job:
    """What a team worker's task is handed: the job and the run it dispatches."""

    job_id: int
    execution_id: int
    run_key: str
    worker_id: int
    abort_reason: Callable[[], str | None] = lambda: None
    """Why the job is being aborted: "user_request" (`exec kill`) or "shutdown" (the worker
    stops); None while it is not."""


class JobQueueAPI(Protocol):
    """Team mode's dispatch and the run logs every host reads (PostgreSQL only: see
    `store.pg.queue`; SQLite has neither: runs start here and their log is the file)."""

    def append_events(self, run_key: str, entries: Sequence[Mapping[str, Any] | str]) -> int: ...

    def events_since(
        self, execution_id: int, after_seq: int = 0, limit: int = 1000
    ) -> list[ExecutionEvent]: ...

    def defer(
        self,
        execution_id: int,
        run_key: str,
        *,
        queue: str = ...,
        priority: int = 0,
        delay_s: float = 0.0,
        prompt: bytes | None = None,
        from_status: ExecutionStatus | None = None,
    ) -> int: ...

    def prompt(self, execution_id: int) -> bytes | None: ...

    def request_abort(self, job_id: int) -> bool: ...

    def orphaned_queued(self) -> list[int]: ...

    def clock_offset_s(self) -> float: ...

    def register_worker(
        self,
        worker_id: int,
        *,
        name: str,
        host: str,
        pid: int,
        queues: Sequence[str],
        repos: Sequence[str],
        concurrency: int,
        heartbeat_s: float,
    ) -> None: ...

    def worker_stopped(self, worker_id: int) -> None: ...

    def live_workers(self) -> dict[int, tuple[str, ...]]: ...

    def workers_here(self, host: str) -> dict[int, int]:
        """The live workers (as `live_workers` judges) registered on `host`: id → pid."""
        ...

    def workers(self, include_gone: bool = False) -> list[WorkerInfo]: ...

    def serve(
        self,
        *,
        name: str,
        queues: Sequence[str],
        concurrency: int,
        heartbeat_s: float,
        handler: Callable[[Job], Awaitable[None]],
        on_registered: Callable[[int], None],
        periodic: Callable[[], None] | None = None,
        say: Callable[[str], None] = ...,
    ) -> None: ...


@runtime_checkable
class Store(Protocol):
    """An open, migrated store."""

    # Read-only properties, so that each backend's own classes satisfy them.
    @property
    def documents(self) -> DocumentsAPI: ...

    @property
    def executions(self) -> ExecutionsAPI: ...

    @property
    def queue(self) -> JobQueueAPI | None:
        """Team mode's job queue; None for SQLite (runs start on this machine)."""
        ...

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
