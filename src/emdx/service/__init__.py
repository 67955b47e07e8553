"""The one API both shells call: documents, executions, health and cleanup.

`Service` holds one open store and composes the modules of this package, each of which does one
thing: `documents`, `scheduler` (the one start path and the queue), `liveness` (the one judge),
`kill` (the one kill path), `repair` (the sweep every command that looks at runs does first),
`monitor` (health, stats, following), `cleanup`, `preflight`. Returns dataclasses from
`emdx.models`, raises `EmdxError` subclasses; never prints, never imports typer, rich or textual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emdx import paths, runlog, system
from emdx.errors import EmdxError, InvalidStateError, NotFoundError
from emdx.models import (
    Document,
    ExecOptions,
    ExecType,
    Execution,
    SearchHit,
    TagCount,
    WorkerInfo,
)
from emdx.runlog import LogTail
from emdx.service import kill, repair
from emdx.service.documents import (
    MAX_DOCUMENT_BYTES,
    Documents,
    SavedDocument,
    decode_document,
    title_from_content,
)
from emdx.service.holds import hold_reason
from emdx.service.kill import KillResult, run_identities
from emdx.service.liveness import Judgement, default_probe, judge
from emdx.service.scheduler import Scheduler, fill_slots, make_run_key
from emdx.store import Store, open_store

if TYPE_CHECKING:  # imported by the commands that use them only (listings stay quick)
    from emdx.service import cleanup as cleanups
    from emdx.service.monitor import ExecStats, RunHealth
    from emdx.service.preparing import WorkerConfig


def __getattr__(name: str) -> object:
    if name in ("ExecStats", "RunHealth"):
        from emdx.service import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "ExecStats",
    "KillResult",
    "LogTail",
    "RunHealth",
    "SavedDocument",
    "Service",
    "decode_document",
    "make_run_key",
    "run_identities",
    "title_from_content",
]


class Service:
    """Holds the open store; one per CLI invocation, TUI worker call or supervisor."""

    def __init__(self, store: Store | None = None) -> None:
        self._store = store
        self.last_sweep: repair.SweepReport | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store()
        return self._store

    def open(self) -> None:
        """Open the store now (it is otherwise opened on first use): its errors, here."""
        _ = self.store

    def cancel_when(self, cancelled: Callable[[], bool] | None) -> None:
        """Stop this service's database work soon after `cancelled()` turns true (a TUI worker
        superseded by a newer keystroke, or quitting); the call in progress raises StoreError."""
        self.store.cancel_when(cancelled)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def documents(self) -> Documents:
        return Documents(self.store)

    @property
    def scheduler(self) -> Scheduler:
        return Scheduler(self.store)

    # -- documents -------------------------------------------------------------------------

    def save_document(
        self,
        content: str,
        title: str | None = None,
        tags: Sequence[str] | str | None = None,
        project: str | None = None,
        detect: bool = True,
        parent_id: int | None = None,
        source: str = "input",
    ) -> SavedDocument:
        return self.documents.save(content, title, tags, project, detect, parent_id, source)

    def get_document(self, doc_id: int, touch: bool = False) -> Document:
        return self.documents.get(doc_id, touch)

    def list_documents(
        self,
        project: str | None = None,
        limit: int | None = 50,
        deleted: bool = False,
        tags: Sequence[str] | str | None = None,
    ) -> list[Document]:
        return self.documents.listing(project, limit, deleted, tags)

    def find_documents(
        self,
        query: str,
        tags: Sequence[str] | str | None = None,
        project: str | None = None,
        limit: int = 20,
        snippets: bool = True,
    ) -> list[SearchHit]:
        return self.documents.find(query, tags, project, limit, snippets)

    def tag_document(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        return self.documents.tag(doc_id, tags)

    def untag_document(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        return self.documents.untag(doc_id, tags)

    def tag_counts(self) -> list[TagCount]:
        return self.documents.tag_counts()

    def delete_document(self, doc_id: int) -> Document:
        return self.documents.delete(doc_id)

    def restore_document(self, doc_id: int) -> Document:
        return self.documents.restore(doc_id)

    # -- starting --------------------------------------------------------------------------

    def start_execution(
        self,
        doc_id: int,
        options: ExecOptions | None = None,
        *,
        parent_execution_id: int | None = None,
        working_dir: Path | None = None,
        exec_type: ExecType | None = None,
        prompt: str | None = None,
        include_deleted: bool = False,
    ) -> Execution:
        return self.scheduler.start(
            doc_id,
            options,
            parent_execution_id=parent_execution_id,
            working_dir=working_dir,
            exec_type=exec_type,
            prompt=prompt,
            include_deleted=include_deleted,
        )

    def retry_execution(self, ref: str | int) -> Execution:
        return self.scheduler.retry(ref)

    def resume_execution(self, ref: str | int, prompt: str) -> Execution:
        return self.scheduler.resume(ref, prompt)

    # -- reading ---------------------------------------------------------------------------

    def sweep(self, who: str = "emdx") -> repair.SweepReport:
        """What every command that looks at runs does first (see `emdx.service.repair`)."""
        self.last_sweep = repair.sweep(self.store, who)
        return self.last_sweep

    def get_execution(self, ref: str | int) -> Execution:
        return self.store.executions.resolve(ref)

    def list_executions(
        self,
        statuses: Sequence[str] | None = None,
        limit: int | None = 50,
        doc_id: int | None = None,
    ) -> list[Execution]:
        return self.store.executions.list_executions(statuses, limit, doc_id=doc_id)

    def active_executions(self) -> list[Execution]:
        """Every run not yet final (preparing, queued, running, waiting), oldest first."""
        return self.store.executions.active()

    def hold_reason(self) -> str | None:
        """Why queued runs do not start now (a usage limit a run waits out, today's budget
        spent), if they do not: every view says it next to a queued run."""
        return hold_reason(self.store)

    def judge(self, execution: Execution) -> Judgement:
        return judge(execution, default_probe(self.store))

    def runner_alive(self, execution: Execution) -> bool:
        return system.same_process(execution.pid, execution.pid_started_at)

    def reconcile(self, execution: Execution) -> Execution:
        """The row, repaired if its supervisor is gone (a zombie execution)."""
        from emdx.service import monitor

        return monitor.current(self.store, execution.id, "emdx")

    def log_path(self, execution: Execution) -> Path:
        """The run's log file; an error saying why when there is none (`monitor.log_path`)."""
        from emdx.service import monitor

        return monitor.log_path(execution)

    def log_entries(self, execution: Execution, last: int | None = None) -> list[dict[str, Any]]:
        """The run's log entries (the `last` ones); an error saying why when it has no log.
        In team mode a run of another host is read from the team's copy of its log."""
        from emdx.service import monitor

        if monitor.shared_log(self.store, execution):
            entries = [entry for _, entry in monitor.shared_entries(self.store, execution)]
            return entries if last is None else entries[-last:] if last > 0 else []
        return runlog.read_entries(monitor.log_path(execution), last)

    def iter_log(self, execution: Execution) -> Iterator[dict[str, Any]]:
        """Every entry of the run's log, one at a time (bounded memory)."""
        from emdx.service import monitor

        if monitor.shared_log(self.store, execution):
            yield from (entry for _, entry in monitor.shared_entries(self.store, execution))
            return
        path = monitor.log_path(execution)
        try:
            yield from runlog.iter_entries(path)
        except OSError as exc:
            raise NotFoundError(f"cannot read the log {path}: {exc.strerror or exc}") from exc

    def follow_execution(
        self, execution_id: int, poll_s: float = 0.2, last: int | None = None
    ) -> Iterator[dict[str, Any]]:
        from emdx.service import monitor

        return monitor.follow(self.store, execution_id, poll_s, last)

    def wait_for_final(self, execution_id: int, timeout_s: float) -> Execution:
        from emdx.service import monitor

        return monitor.wait_for_final(self.store, execution_id, timeout_s)

    def execution_stats(self) -> ExecStats:
        """Totals; `zombies` are the runs found with their supervisor gone — by this command's
        sweep, which repaired them, if it ran one."""
        from emdx.service import monitor

        swept = self.last_sweep.repaired if self.last_sweep is not None else None
        return monitor.stats(self.store, swept)

    def health(self, interval_s: float = 0.2) -> list[RunHealth]:
        from emdx.service import monitor

        return monitor.health(self.store, interval_s)

    # -- stopping and cleaning up ----------------------------------------------------------

    def kill_execution(self, ref: str | int, force: bool = False) -> KillResult:
        result = kill.kill_execution(self.store, ref, force)
        if not result.already_final:
            fill_slots(self.store)
        return result

    def cleanup_processes(self, dry_run: bool = False) -> list[cleanups.Action]:
        from emdx.service import cleanup as cleanups

        return cleanups.processes(self.store, dry_run)

    def cleanup_executions(
        self, older_than_s: float = 1800.0, dry_run: bool = False
    ) -> list[cleanups.Action]:
        from emdx.service import cleanup as cleanups

        return cleanups.executions(self.store, older_than_s, dry_run)

    def cleanup_dirs(
        self, older_than_s: float = 7 * 86400.0, dry_run: bool = False, keep_going: bool = False
    ) -> list[cleanups.Action]:
        """Old run directories removed. A `runs/` that cannot be trusted (a link) is an error,
        or with `keep_going` one failed line (`cleanup all` goes on with the branches)."""
        from emdx.service import cleanup as cleanups

        try:
            return cleanups.dirs(self.store, older_than_s, dry_run)
        except EmdxError as exc:
            if not keep_going:
                raise
            return [cleanups.Action("dir", str(paths.runs_dir()), f"refused: {exc}", "failed")]

    def repository_here(self) -> Path | None:
        """The git repository the current directory is in (where `cleanup` looks for
        branches), if any."""
        return system.git.toplevel()

    def cleanup_branches(
        self, repo: Path | None = None, force: bool = False, dry_run: bool = False
    ) -> list[cleanups.Action]:
        from emdx.service import branches as branch_cleanup

        return branch_cleanup.branches(self.store, repo, force, dry_run)

    # -- team mode ---------------------------------------------------------------------------

    def serve_worker(self, config: WorkerConfig, say: Callable[[str], None]) -> None:
        """`emdx worker`: take the team's queued runs until stopped (see `service.team`)."""
        from emdx.service import team

        team.serve(self.store, config, say)

    def workers(self, include_gone: bool = False) -> list[WorkerInfo]:
        """The team's workers (alive ones; with `include_gone` stopped and lost ones too)."""
        queue = self.store.queue
        if queue is None:
            raise InvalidStateError(
                "there are workers only in team mode: set EMDX_DATABASE_URL to the team's "
                "PostgreSQL database"
            )
        return queue.workers(include_gone)
