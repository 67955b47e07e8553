"""The one API both shells call: documents, executions, health and cleanup.

Returns dataclasses from `emdx.models`, raises `EmdxError` subclasses; never prints, never imports
typer, rich or textual.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from emdx import paths, preflight, runlog, smart, system
from emdx import tags as tagvocab
from emdx.agent.outcome import EXIT_SIGKILL, EXIT_SIGTERM
from emdx.errors import (
    EmdxError,
    EnvironmentProblem,
    InvalidInputError,
    InvalidStateError,
    StoreError,
)
from emdx.models import (
    Document,
    ExecOptions,
    ExecType,
    Execution,
    ExecutionStatus,
    Reason,
    SearchHit,
    TagCount,
    parse_time,
    percentile,
    utc_now,
)
from emdx.runner import launch
from emdx.store import Store, open_store
from emdx.system import git

# Documents are prompts; beyond this they are surely a mistake (a log file, a binary) and would
# make every list and search slow.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
TITLE_MAX = 200


def title_from_content(content: str, fallback: str) -> str:
    """The first non-empty line (a markdown heading without its `#`s), else `fallback`."""
    for line in content.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:TITLE_MAX]
    return fallback[:TITLE_MAX]


def decode_document(data: bytes, source: str) -> str:
    """Bytes from a file or stdin as document text, or a clear error for what cannot be one."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidInputError(
            f"{source} is {len(data) / 1048576:.1f} MiB; documents are limited to "
            f"{MAX_DOCUMENT_BYTES // 1048576} MiB"
        )
    if b"\x00" in data:
        raise InvalidInputError(f"{source} looks binary (contains NUL bytes); emdx stores text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{source} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise InvalidInputError(f"{source} is empty; nothing to save")
    return text


def detect_project(cwd: Path | None = None) -> str | None:
    top = git.toplevel(cwd or Path.cwd())
    return top.name if top else None


def make_run_key(doc_id: int | None) -> str:
    """Document id, microsecond timestamp, pid and a random suffix: unique across processes."""
    # os.urandom, not secrets: the suffix only breaks ties, and `secrets` costs 5 ms to import.
    return f"{doc_id or 0}-{time.time_ns() // 1000}-{os.getpid()}-{os.urandom(4).hex()}"


def run_identities(execution: Execution) -> list[tuple[int, float]]:
    """Every process of a run as (pid, start time): the supervisor first (so that it cannot
    record an outcome of its own for an agent being killed), the agent, then every process
    carrying the run's marker (tools that escaped with setsid, orphans)."""
    found = []
    if execution.pid and execution.pid_started_at is not None:
        found.append((execution.pid, execution.pid_started_at))
    if execution.agent_pid and execution.agent_started_at is not None:
        found.append((execution.agent_pid, execution.agent_started_at))
    found += system.marked_processes(execution.id, exclude={pid for pid, _ in found})
    return found


# A row may say running for a moment before its supervisor records itself.
RUNNER_STARTUP_GRACE_S = 30.0


@dataclass(frozen=True)
class KillResult:
    execution: Execution
    already_final: bool
    needed_sigkill: bool = False


class ExecutionService:
    """Mixin of `Service`: starting, following and stopping executions."""

    @property
    def store(self) -> Store:
        raise NotImplementedError

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
        """The one start path (CLI foreground/background, TUI, retry, resume)."""
        options = options or ExecOptions()
        preflight.ensure_ready(worktree=options.worktree is True and working_dir is None)
        doc = self.store.documents.get(doc_id, include_deleted=include_deleted)
        plan = smart.plan_for(doc, options.smart, options.tools)
        repo: Path | None = None
        # --worktree asks for one; a gameplan gets one by default when run inside a repo.
        wanted = options.worktree or (options.worktree is None and plan.wants_worktree)
        if working_dir is None and wanted:
            repo = git.toplevel()
        options = replace(options, worktree=repo is not None)
        if exec_type is not None:
            plan = replace(plan, exec_type=exec_type)
        if prompt is not None:
            plan = replace(plan, prompt=prompt)
        if options.after_id is not None:
            self.store.executions.get(options.after_id)  # unknown id: fail before any row exists
        options = replace(options, tools=plan.tools)

        execution_id, run_key = self._create_row(doc, plan.exec_type, options, parent_execution_id)
        try:
            if repo is not None:
                workdir, branch = self._make_worktree(execution_id, repo, run_key, doc.title)
                if prompt is None:
                    plan = replace(
                        plan, prompt=smart.plan_for_type(doc, plan.exec_type, branch).prompt
                    )
            else:
                workdir = working_dir or self._make_run_dir(run_key)
            _write_private(
                paths.prompt_path(execution_id), plan.prompt.encode("utf-8", "surrogatepass")
            )
            self.store.executions.update(
                execution_id,
                working_dir=str(workdir),
                log_file=str(paths.run_log_path(execution_id)),
            )
        except (OSError, EmdxError) as exc:
            self._discard(execution_id, run_key)
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError(f"could not prepare execution: {detail}") from exc

        # Read the dependency only now that our row exists: if it finishes after this read, its
        # supervisor's queue pass sees our row; if before, we see its final state here.
        dependency = None
        if options.after_id is not None:
            dependency = self.store.executions.get(options.after_id)
        if dependency is None or dependency.status is ExecutionStatus.COMPLETED:
            self._launch(execution_id)
        elif dependency.status.is_final:
            self.store.executions.finish(
                execution_id, ExecutionStatus.FAILED, 1, Reason.DEPENDENCY_FAILED
            )
        # otherwise it stays queued; the dependency's supervisor starts it when it ends
        return self.store.executions.get(execution_id)

    def _create_row(
        self,
        doc: Document,
        exec_type: ExecType,
        options: ExecOptions,
        parent_execution_id: int | None,
    ) -> tuple[int, str]:
        for _ in range(5):
            run_key = make_run_key(doc.id)
            try:
                execution_id = self.store.executions.create(
                    run_key=run_key,
                    doc_id=doc.id,
                    doc_title=doc.title,
                    exec_type=exec_type.value,
                    options=options,
                    parent_execution_id=parent_execution_id,
                )
            except StoreError as exc:
                if "UNIQUE" in str(exc.__cause__):
                    continue
                raise
            return execution_id, run_key
        raise StoreError("could not allocate a unique run key; try again")

    def _make_run_dir(self, run_key: str) -> Path:
        run_dir = paths.private_dir(paths.runs_dir()) / run_key
        # mkdir, not exist_ok: two runs must never share a directory, even on a key collision.
        os.mkdir(run_dir, paths.DIR_MODE)
        return run_dir

    def _make_worktree(
        self, execution_id: int, repo: Path, run_key: str, title: str
    ) -> tuple[Path, str]:
        """A worktree on a branch emdx creates: `exec-<id>-<slug>`, or `…-2`, `…-3` when that
        name is taken (ids repeat across homes and fresh databases; a user's branch is never
        reused, nor deleted by the undo). The row records the repository first and the branch
        once it is created, so that only what this run created is ever removed."""
        runs = paths.private_dir(paths.runs_dir())
        path = runs / run_key
        self.store.executions.update(execution_id, repo=str(repo))
        base = smart.branch_name(execution_id, title)
        for attempt in range(1, 100):
            branch = base if attempt == 1 else f"{base}-{attempt}"
            if git.branch_exists(repo, branch):
                continue
            result = git.add_worktree(repo, path, branch)
            if result.ok:
                break
            if git.branch_exists(repo, branch) and "already exists" in result.err:
                continue  # taken between our check and git's: try the next name
            detail = result.err.splitlines()[-1] if result.err else "git worktree add failed"
            raise EnvironmentProblem(f"cannot create a worktree in {repo}: {detail}")
        else:
            raise EnvironmentProblem(f"no free branch name for {base} in {repo}")
        self.store.executions.update(execution_id, branch=branch, branch_created=True)
        # git made the directory through whatever `runs` was at that moment: it must be ours.
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or os.path.realpath(path.parent) != str(runs):
            raise EnvironmentProblem(f"the worktree {path} is not inside {runs}")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, paths.DIR_MODE)
        finally:
            os.close(fd)
        return path, branch

    def _discard(self, execution_id: int, run_key: str) -> None:
        """Undo a start that failed half way: no row, directory, worktree or prompt, and the
        branch only if the row records that this start created it."""
        repo = branch = None
        with contextlib.suppress(EmdxError):
            row = self.store.executions.get(execution_id)
            if row.repo and row.branch and row.branch_created:
                repo, branch = Path(row.repo), row.branch
        with contextlib.suppress(EmdxError):
            self.store.executions.delete(execution_id)
        path = paths.runs_dir() / run_key
        if repo is not None:
            git.unlock_worktree(repo, path)
        with contextlib.suppress(OSError, EmdxError):
            paths.remove_tree(path, paths.runs_dir())
        if repo is not None and branch is not None:
            git.prune_worktrees(repo)
            git.delete_branch(repo, branch)
        with contextlib.suppress(OSError):
            paths.prompt_path(execution_id).unlink()

    def _launch(self, execution_id: int) -> None:
        if not self.store.executions.claim_slot(execution_id, launch.max_parallel()):
            return  # stays queued: a finishing supervisor starts it
        try:
            pid, started = launch.spawn_runner(execution_id)
        except (OSError, EmdxError) as exc:
            self.store.executions.finish(
                execution_id, ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED
            )
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError(f"could not start the supervisor: {detail}") from exc
        self.store.executions.update(execution_id, pid=pid, pid_started_at=started)

    # -- reading ----------------------------------------------------------------------------

    def get_execution(self, ref: str | int) -> Execution:
        return self.store.executions.resolve(ref)

    def list_executions(
        self, statuses: Sequence[str] | None = None, limit: int | None = 50
    ) -> list[Execution]:
        return self.store.executions.list_executions(statuses, limit)

    def follow_execution(
        self, execution_id: int, poll_s: float = 0.2, last: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Log entries of a run (the `last` ones, then new ones) until it has a final state."""
        execution = self.store.executions.get(execution_id)
        if execution.status is ExecutionStatus.RUNNING and execution.run_key is None:
            raise InvalidStateError(
                f"execution {execution.old_id or execution_id} is a running row from an earlier "
                "emdx release with no supervisor to follow; `emdx cleanup executions` repairs it"
            )
        path = Path(execution.log_file) if execution.log_file else paths.run_log_path(execution_id)
        if last is not None:
            yield from runlog.read_entries(path, last)

        def finished() -> bool:
            current = self.reconcile(self.store.executions.get(execution_id))
            return current.status.is_final

        yield from runlog.follow(path, finished, poll_s, start_at_end=last is not None)

    def wait_for_final(self, execution_id: int, timeout_s: float) -> Execution:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.reconcile(self.store.executions.get(execution_id))
            if current.status.is_final or time.monotonic() >= deadline:
                return current
            time.sleep(0.1)

    def execution_stats(self) -> ExecStats:
        since = utc_now() - timedelta(hours=24)
        rows = self.store.executions.stats_rows(since.isoformat(timespec="microseconds"))
        by_status: dict[str, int] = rows["by_status"]
        finished_ok = by_status.get("completed", 0)
        finished = finished_ok + by_status.get("failed", 0) + by_status.get("killed", 0)
        durations = sorted(rows["durations"])
        running = self.store.executions.list_executions(["running"], None)
        zombies = [e.id for e in running if not self.runner_alive(e) and e.pid is not None]
        return ExecStats(
            total=sum(by_status.values()),
            by_status=by_status,
            last_24h=rows["recent"],
            success_rate=(finished_ok / finished) if finished else None,
            median_duration_s=_rounded(percentile(durations, 50)),
            p95_duration_s=_rounded(percentile(durations, 95)),
            total_cost_usd=sum(t["cost_usd"] for t in rows["per_type"]),
            total_input_tokens=sum(t["input_tokens"] for t in rows["per_type"]),
            total_output_tokens=sum(t["output_tokens"] for t in rows["per_type"]),
            per_type=rows["per_type"],
            running=len(running),
            queued=by_status.get("queued", 0),
            zombies=zombies,
        )

    # -- liveness ---------------------------------------------------------------------------

    def runner_alive(self, execution: Execution) -> bool:
        return system.same_process(execution.pid, execution.pid_started_at)

    def reconcile(self, execution: Execution) -> Execution:
        """A running row whose supervisor is gone is a zombie execution: fail it, kill leftovers.

        The compare-and-set means a supervisor that finishes at the same moment wins cleanly.
        """
        if execution.status is not ExecutionStatus.RUNNING or self.runner_alive(execution):
            return execution
        if execution.run_key is None:
            # A row from an earlier release: no identity to judge; `cleanup executions` repairs it.
            return execution
        if execution.pid is None or execution.pid_started_at is None:
            started = parse_time(execution.started_at or execution.created_at)
            age = (utc_now() - started).total_seconds() if started else RUNNER_STARTUP_GRACE_S
            if age < RUNNER_STARTUP_GRACE_S:
                return execution
        self._kill_run_processes(execution, grace_s=2.0)
        if self.store.executions.finish(
            execution.id, ExecutionStatus.FAILED, EXIT_SIGKILL, Reason.RUNNER_LOST
        ):
            launch.start_queued(self.store)
        return self.store.executions.get(execution.id)

    def _kill_run_processes(
        self, execution: Execution, grace_s: float, force: bool = False
    ) -> bool:
        """SIGTERM, grace, SIGKILL to every process of the run (see run_identities)."""
        return system.kill_identified(run_identities(execution), grace_s, force=force)

    def health(self, interval_s: float = 0.2) -> list[RunHealth]:
        """Liveness of every active run, judged by pid AND start time; zombies are repaired.

        Verdicts: healthy; starting (no supervisor recorded yet); queued; unresponsive (alive,
        heartbeat older than 3 × interval); zombie (the supervisor is gone: the row is failed
        with reason runner_lost and the run's leftover processes are killed); stuck (a running
        row from an earlier release, for `cleanup executions`).
        """
        from emdx.runner.supervisor import heartbeat_interval

        rows = self.store.executions.list_executions(["running", "queued"], None)
        identities: list[tuple[int, float]] = []
        for ex in rows:
            for pid, started in ((ex.pid, ex.pid_started_at), (ex.agent_pid, ex.agent_started_at)):
                if pid and started is not None:
                    identities.append((pid, started))
        infos = system.sample_processes(identities, interval_s)
        limit = 3 * heartbeat_interval()
        report = []
        for ex in rows:
            runner = infos.get(ex.pid or -1) if self.runner_alive(ex) else None
            agent_ok = system.same_process(ex.agent_pid, ex.agent_started_at)
            agent = infos.get(ex.agent_pid or -1) if agent_ok else None
            age = ex.heartbeat_age_s
            repaired = None
            if ex.status is ExecutionStatus.QUEUED:
                verdict = "queued"
            elif runner is not None:
                verdict = "unresponsive" if age is None or age > limit else "healthy"
                if age is None and ex.heartbeat_at is None:
                    verdict = "healthy" if (ex.duration_s or 0) <= limit else "unresponsive"
            elif ex.run_key is None:
                verdict = "stuck"  # an earlier release's row: `emdx cleanup executions`
            else:
                fixed = self.reconcile(ex)
                if fixed.status is ExecutionStatus.RUNNING:
                    verdict = "starting"
                else:
                    verdict = "zombie"
                    repaired = fixed
            report.append(
                RunHealth(ex, verdict, runner is not None, agent_ok, age, runner, agent, repaired)
            )
        return report

    def retry_execution(self, ref: str | int) -> Execution:
        """A new run of the same document with the same options, linked to the old one."""
        old = self.store.executions.resolve(ref)
        if old.doc_id is None:
            raise InvalidStateError(f"execution {old.id} has no document to run again")
        if old.status.is_active:
            raise InvalidStateError(f"execution {old.id} is still {old.status.value}")
        options = replace(old.options, after_id=None)
        if old.exec_type == ExecType.RESUME.value and old.options.resume_prompt:
            return self.resume_execution(
                old.parent_execution_id or old.id, old.options.resume_prompt
            )
        return self.start_execution(old.doc_id, options, parent_execution_id=old.id)

    def resume_execution(self, ref: str | int, prompt: str) -> Execution:
        """Continue the agent session of a finished run, as a new linked run in the same dir."""
        old = self.store.executions.resolve(ref)
        if not prompt.strip():
            raise InvalidInputError("give a prompt to continue the session with")
        if old.status.is_active:
            raise InvalidStateError(f"execution {old.id} is still {old.status.value}")
        if not old.session_id:
            raise InvalidStateError(f"execution {old.id} has no agent session to resume")
        if old.doc_id is None:
            raise InvalidStateError(f"execution {old.id} has no document")
        if not old.working_dir or not _is_real_dir(old.working_dir):
            raise InvalidStateError(
                f"the working directory of execution {old.id} is gone or not a directory "
                f"(a symbolic link is never followed): {old.working_dir}"
            )
        options = replace(
            old.options,
            smart=False,
            after_id=None,
            resume_session=old.session_id,
            resume_prompt=prompt,
        )
        return self.start_execution(
            old.doc_id,
            options,
            parent_execution_id=old.id,
            working_dir=Path(old.working_dir),
            exec_type=ExecType.RESUME,
            prompt=prompt,
            include_deleted=True,
        )

    # -- stopping ---------------------------------------------------------------------------

    def kill_execution(self, ref: str | int, force: bool = False) -> KillResult:
        """The one kill path: ask the supervisor (it forwards SIGTERM, waits, SIGKILLs and records
        `killed`); if it is gone or does not finish in time, kill every process of the run here."""
        execution = self.store.executions.resolve(ref)
        if execution.status.is_final:
            return KillResult(execution, already_final=True)
        if execution.status is ExecutionStatus.QUEUED:
            self.store.executions.transition(
                execution.id,
                (ExecutionStatus.QUEUED,),
                ExecutionStatus.KILLED,
                exit_code=EXIT_SIGTERM,
                reason=Reason.KILLED,
            )
            current = self.store.executions.get(execution.id)
            if current.status is ExecutionStatus.KILLED or current.status.is_final:
                return KillResult(current, already_final=False)
            execution = current  # it started meanwhile: kill it as a running one
        grace = launch.kill_grace()
        if not force and self.runner_alive(execution):
            system.signal_pid(execution.pid or 0, signal.SIGTERM)
            # Poll without reconciling: a supervisor that died of our signal (before it could
            # install its handlers) is still a kill, not a lost runner.
            deadline = time.monotonic() + grace + 10.0
            while time.monotonic() < deadline:
                current = self.store.executions.get(execution.id)
                if current.status.is_final:
                    return KillResult(current, False, current.exit_code == EXIT_SIGKILL)
                if not self.runner_alive(current):
                    break
                time.sleep(0.05)
        needed = self._kill_run_processes(execution, grace_s=0 if force else grace, force=force)
        code = EXIT_SIGKILL if (force or needed) else EXIT_SIGTERM
        self.store.executions.finish(execution.id, ExecutionStatus.KILLED, code, Reason.KILLED)
        launch.start_queued(self.store)
        return KillResult(self.store.executions.get(execution.id), False, needed or force)


@dataclass(frozen=True)
class RunHealth:
    execution: Execution
    verdict: str
    runner_alive: bool
    agent_alive: bool
    heartbeat_age_s: float | None
    runner: system.ProcessInfo | None
    agent: system.ProcessInfo | None
    repaired: Execution | None = None

    @property
    def healthy(self) -> bool:
        return self.verdict in ("healthy", "starting", "queued")

    def to_dict(self) -> dict[str, Any]:
        def proc(info: system.ProcessInfo | None) -> dict[str, Any] | None:
            if info is None:
                return None
            return {
                "pid": info.pid,
                "cpu_percent": info.cpu_percent,
                "rss_bytes": info.rss_bytes,
                "children": info.num_children,
            }

        return {
            "id": self.execution.id,
            "doc_title": self.execution.doc_title,
            "status": (self.repaired or self.execution).status.value,
            "verdict": self.verdict,
            "healthy": self.healthy,
            "runner_alive": self.runner_alive,
            "agent_alive": self.agent_alive,
            "heartbeat_age_s": None
            if self.heartbeat_age_s is None
            else round(self.heartbeat_age_s, 3),
            "runner": proc(self.runner),
            "agent": proc(self.agent),
            "repaired": self.repaired.to_dict() if self.repaired else None,
        }


@dataclass(frozen=True)
class ExecStats:
    total: int
    by_status: dict[str, int]
    last_24h: dict[str, int]
    success_rate: float | None
    median_duration_s: float | None
    p95_duration_s: float | None
    total_cost_usd: float
    total_input_tokens: int
    total_output_tokens: int
    per_type: list[dict[str, Any]]
    running: int
    queued: int
    zombies: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _write_private(path: Path, data: bytes) -> None:
    fd = paths.open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _is_real_dir(path: str) -> bool:
    """A directory, not a symbolic link to one (an agent may have swapped its directory)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class SavedDocument:
    id: int
    title: str
    project: str | None
    tags: tuple[str, ...]


class Service(ExecutionService):
    """Holds the open store; one per CLI invocation or TUI session."""

    def __init__(self, store: Store | None = None) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store()
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        if not content.strip():
            raise InvalidInputError(f"{source} is empty; nothing to save")
        if len(content.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
            raise InvalidInputError(
                f"{source} is larger than {MAX_DOCUMENT_BYTES // 1048576} MiB; not saved"
            )
        clean_title = (title or "").strip() or title_from_content(content, source)
        clean_title = re.sub(r"\s+", " ", clean_title)[:TITLE_MAX]
        tag_list = tagvocab.parse_list(tags)
        if project is None and detect:
            project = detect_project()
        doc_id = self.store.documents.save(clean_title, content, project, tag_list, parent_id)
        return SavedDocument(doc_id, clean_title, project, tuple(tag_list))

    def get_document(self, doc_id: int, touch: bool = False) -> Document:
        doc = self.store.documents.get(doc_id)
        if touch:
            self.store.documents.touch(doc_id)
        return doc

    def list_documents(
        self,
        project: str | None = None,
        limit: int | None = 50,
        deleted: bool = False,
        tags: Sequence[str] | str | None = None,
    ) -> list[Document]:
        return self.store.documents.list_documents(
            project=project, limit=limit, deleted=deleted, tags=tagvocab.parse_list(tags)
        )

    def find_documents(
        self,
        query: str,
        tags: Sequence[str] | str | None = None,
        project: str | None = None,
        limit: int = 20,
    ) -> list[SearchHit]:
        tag_list = tagvocab.parse_list(tags)
        if not query.strip():
            if not tag_list:
                raise InvalidInputError("give a search query or --tags")
            docs = self.store.documents.list_documents(project=project, limit=limit, tags=tag_list)
            return [SearchHit(doc, 0.0, "") for doc in docs]
        return self.store.documents.search(query, tag_list, project, limit)

    def tag_document(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        tag_list = tagvocab.parse_list(list(tags))
        if not tag_list:
            raise InvalidInputError("give at least one tag")
        return self.store.documents.add_tags(doc_id, tag_list)

    def untag_document(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        tag_list = tagvocab.parse_list(list(tags))
        if not tag_list:
            raise InvalidInputError("give at least one tag")
        return self.store.documents.remove_tags(doc_id, tag_list)

    def tag_counts(self) -> list[TagCount]:
        return self.store.documents.tag_counts()

    def delete_document(self, doc_id: int) -> Document:
        doc = self.store.documents.get(doc_id)
        self.store.documents.set_deleted(doc_id, True)
        return doc

    def restore_document(self, doc_id: int) -> Document:
        self.store.documents.set_deleted(doc_id, False)
        return self.store.documents.get(doc_id)
