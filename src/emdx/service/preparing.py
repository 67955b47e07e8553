"""A team run's turn on a worker (see `service.team`): whether it is to start now (it is
ours, ready, this host can run it), and if so its directory and prompt made on this host, the
row claimed queued → running by compare-and-set under the job that runs it, and nothing left
behind when it is not ours after all (`unclaimed`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emdx import paths, settings, smart
from emdx.errors import (
    EmdxError,
    EnvironmentProblem,
    InvalidStateError,
    NotFoundError,
    StoreUnavailable,
)
from emdx.models import ExecType, Execution, ExecutionStatus
from emdx.reasons import Reason
from emdx.service import preflight, unclaimed
from emdx.service.environment import run_environment
from emdx.service.holds import hold_reason
from emdx.service.kill import finish_from_outside, note_run
from emdx.service.scheduler import Scheduler, queue_name
from emdx.store import Job, JobQueueAPI, Store
from emdx.store.connection import retry_transient
from emdx.system import git

# A held or dependent run's next turn, this many seconds later.
RETRY_HELD_S = 5.0
RETRY_AFTER_S = 1.0
# How long a claimed run's start retries its database reads and writes (a blip, a short outage).
CLAIMED_RETRY_S = 60.0
# Claims are counted per worker by procrastinate (its concurrency), not against EMDX_MAX_PARALLEL.
NO_CAP = 1 << 31


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    host: str
    queues: tuple[str, ...]
    repos: Mapping[str, Path] = field(default_factory=dict)
    """Repository queue (`repo_queue`: its name and first commit) → its path on this host: the
    worktree runs it takes."""
    concurrency: int = 1
    heartbeat_s: float = 10.0


def worker_config(
    name: str | None, queues: list[str], repos: list[Path], concurrency: int
) -> WorkerConfig:
    """The worker's settings, checked: repositories must be git repositories here."""
    from emdx.store.api import DEFAULT_QUEUE, repo_queue

    if concurrency < 1:
        raise InvalidStateError("--concurrency must be at least 1")
    found: dict[str, Path] = {}
    if repos and git.available() is None:
        raise EnvironmentProblem(
            "--repo needs git, which is not on PATH", ["install git (e.g. apt-get install git)"]
        )
    for repo in repos:
        top = git.toplevel(repo)
        if top is None:
            raise InvalidStateError(f"--repo {repo} is not a git repository")
        found[repo_queue(top.name, git.root_commit(top))] = top
    host = settings.host_name()
    return WorkerConfig(
        name=name or f"{host}-{os.getpid()}",
        host=host,
        queues=tuple(queues or [DEFAULT_QUEUE]),
        repos=found,
        concurrency=concurrency,
        heartbeat_s=settings.worker_heartbeat(),
    )


def check_host(worktrees: bool) -> None:
    """The pre-flight of a local start, on this host: its agent found and runnable, its home
    writable, git there for worktree runs (EnvironmentProblem, with its fixes)."""
    preflight.ensure_ready()
    # Where each run's directory and files go; git for worktree runs.
    checks = [
        preflight.check_writable(paths.runs_dir()),
        preflight.check_writable(paths.logs_dir()),
    ]
    if worktrees:
        checks.append(preflight.check_git(True))
    for check in checks:
        if not check.ok:
            detail = check.detail if check.name != "git" else f"git: {check.detail}"
            raise EnvironmentProblem(detail, [check.fix] if check.fix else [])


def host_problem(worktrees: bool) -> str | None:
    """Why this host cannot run a run now (see `check_host`), or None."""
    try:
        check_host(worktrees)
    except EmdxError as exc:
        return str(exc)
    return None


class Preparation:
    """The worker's half that prepares a run's turn (`_Worker` is the other: it starts, waits
    for and stops the run)."""

    store: Store
    queue: JobQueueAPI
    config: WorkerConfig
    say: Callable[[str], None]
    worker_id: int | None
    cannot: str | None  # why this host cannot run runs now, as last said
    left: set[str | None]  # the runs whose log says so

    def _failed(self, execution: Execution, why: str) -> None:
        with contextlib.suppress(EmdxError):
            finish_from_outside(
                self.store,
                execution,
                ExecutionStatus.FAILED,
                1,
                Reason.SPAWN_FAILED,
                f"worker {self.config.name} on {self.config.host}: {why}",
            )

    def _prepare(self, job: Job) -> tuple[Execution, dict[str, str]] | None:
        """The run's turn: None when it is not to start now (gone, not ours, killed, held,
        waiting for another run); else its directory and prompt are made here, the row
        claimed (queued → running) and the environment to start it with returned."""
        store, executions = self.store, self.store.executions
        try:
            row = executions.get(job.execution_id)
        except NotFoundError:
            return None
        if row.run_key != job.run_key or row.status is not ExecutionStatus.QUEUED:
            return None  # another run's id (a restored backup), or killed / started already
        if row.job_id != job.job_id:
            return None  # queued again meanwhile (this worker was thought lost): not ours
        if not self._ready(row):
            return None
        try:
            execution = self._make_workdir(row, job.job_id)
        except StoreUnavailable as exc:
            # The database blipped while the run was prepared (it never started): it stays
            # queued, and the next sweep gives it a new job (its job ends with this one).
            self._leave(row)
            self.say(f"execution #{row.id}: left queued, the database did not answer: {exc}")
            return None
        except (OSError, EmdxError) as exc:
            self._leave(row)
            if self._still_queued(row.id, job.job_id):
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self._failed(row, f"could not prepare the run: {detail}")
            return None  # else: killed, queued again or taken elsewhere meanwhile
        if (
            job.abort_reason() is not None  # this worker is stopping: leave it to the others
            or executions.claim_slot(row.id, NO_CAP, ExecutionStatus.QUEUED, job.job_id)
            != "claimed"
        ):
            # Killed, queued again or given up while we prepared: nothing of it may stay
            # behind (a run left queued gets a new job from the next sweep).
            self._leave(execution)
            return None
        # Ours now: the row names this host's directory and the job that runs it (a kill from
        # any host aborts that one), whatever another preparer wrote meanwhile. A database that
        # blips now must not leave the run claimed and never started (failed runner_lost 30 s
        # later): its start waits out a short outage.
        workdir = str(execution.working_dir)
        retry_transient(
            lambda: self._record_here(row.id, row.run_key or "", workdir, job=job.job_id),
            CLAIMED_RETRY_S,
        )
        execution = retry_transient(lambda: executions.get(row.id), CLAIMED_RETRY_S)
        note_run(
            store,
            execution,
            f"taken by worker {self.config.name} on {self.config.host} (job {job.job_id})",
            "📥",
        )
        current = retry_transient(lambda: executions.get(row.id), CLAIMED_RETRY_S)
        return current, run_environment(execution)

    def _ready(self, row: Execution) -> bool:
        """Whether the run may start now; if not, its next turn is queued (or it failed)."""
        executions = self.store.executions
        delay = None
        after = row.options.after_id
        if after is not None:
            try:
                dependency: Execution | None = executions.get(after)
            except NotFoundError:
                dependency = None
            if dependency is not None and dependency.status.is_active:
                delay = RETRY_AFTER_S
            elif dependency is None or dependency.status is not ExecutionStatus.COMPLETED:
                executions.finish(row.id, ExecutionStatus.FAILED, 1, Reason.DEPENDENCY_FAILED)
                return False
        if delay is None and hold_reason(self.store) is not None:
            delay = RETRY_HELD_S
        if delay is None and not self._can_run(row):
            delay = RETRY_HELD_S  # for a worker that can (or this one, fixed meanwhile)
        if delay is None:
            return True
        self.queue.defer(
            row.id,
            row.run_key or "",
            queue=queue_name(row.options),
            priority=row.options.priority,
            delay_s=delay,
        )
        return False

    def _can_run(self, row: Execution) -> bool:
        """Whether this host can run the run now (`host_problem`); a change is said once, and
        the run's log says (once) why this worker left it queued."""
        problem = host_problem(row.options.worktree is True)
        if problem != self.cannot:
            self.cannot = problem
            self.say(
                f"this host cannot run runs now: {problem}; they are left queued for the others"
                if problem
                else "this host can run runs again"
            )
        if problem is not None and row.run_key not in self.left:
            self.left.add(row.run_key)
            with contextlib.suppress(EmdxError):
                note_run(
                    self.store,
                    row,
                    f"left queued by worker {self.config.name} on {self.config.host}: {problem}",
                    "⏸",
                )
        return problem is None

    def _make_workdir(self, row: Execution, job: int) -> Execution:
        """The run's directory on this host (a worktree of this host's copy of its
        repository), its prompt file, and the row fields that say where it runs — each
        write only while the row is still queued under `job` (a worker that was frozen
        meanwhile, its run queued again and taken elsewhere, overwrites nothing)."""
        key = row.run_key or ""
        scheduler = Scheduler(self.store)
        prompt = self.queue.prompt(row.id)
        if prompt is None:
            raise InvalidStateError("its prompt is not in the team's database")
        # This host's name goes on the row (and in the home) before anything is made here,
        # so that a worker of this host starting meanwhile never takes the directory for a
        # leftover; one that is there already was left by a preparer of this host that died
        # before its claim.
        path = paths.runs_dir() / key
        self._record_here(row.id, key, str(path), queued_job=job)
        unclaimed.mark_prepared(key, self.config.host)
        repos = self.config.repos.values()
        if os.path.lexists(path) or any(git.registered_path(r, path) for r in repos):
            action = unclaimed.discard(row, key, repos)
            self.say(f"execution #{row.id}: {action.target}: {action.detail} ({action.result})")
        if row.options.worktree:
            repo = self.config.repos.get(row.options.queue or "")
            if repo is None:
                raise InvalidStateError(
                    f"this worker does not hold the repository of queue {row.options.queue!r}"
                )
            workdir, branch = scheduler.make_worktree(
                row.id, repo, key, row.doc_title, queued_job=job
            )
            if row.exec_type is not ExecType.RESUME and row.doc_id is not None:
                doc = self.store.documents.get(row.doc_id, include_deleted=True)
                text = smart.plan_for_type(doc, row.exec_type, branch).prompt
                prompt = text.encode("utf-8", "surrogatepass")
        else:
            workdir = scheduler.make_run_dir(key)
        paths.write_private(paths.prompt_path(key), prompt)
        self._record_here(row.id, key, str(workdir), queued_job=job)
        return self.store.executions.get(row.id)

    def _record_here(
        self,
        execution_id: int,
        key: str,
        workdir: str,
        *,
        queued_job: int | None = None,
        job: int | None = None,
    ) -> None:
        """The row fields that say where the run runs: before the claim only while the row is
        queued under `queued_job` (else the run is not ours: InvalidStateError), once claimed
        with the `job` that runs it."""
        fields: dict[str, Any] = {} if job is None else {"job_id": job}
        written = self.store.executions.update(
            execution_id,
            key=key,
            queued_job=queued_job,
            working_dir=workdir,
            log_file=str(paths.run_log_path(key)),
            heartbeat_s=settings.heartbeat_seconds(),
            host=self.config.host,
            worker_id=self.worker_id,
            **fields,
        )
        if not written and queued_job is not None:
            raise InvalidStateError("the run was killed, queued again or taken meanwhile")

    def _still_queued(self, execution_id: int, job: int) -> bool:
        with contextlib.suppress(EmdxError):
            row = self.store.executions.get(execution_id)
            return row.status is ExecutionStatus.QUEUED and row.job_id == job
        return False

    def _leave(self, row: Execution) -> None:
        """What this host made for a run it does not run (see `unclaimed`), removed."""
        key = row.run_key or ""
        with contextlib.suppress(EmdxError):
            row = self.store.executions.get(row.id)
        if row.run_key != key:
            return
        path = paths.runs_dir() / key
        repos = self.config.repos.values()
        if os.path.lexists(path) or any(git.registered_path(r, path) for r in repos):
            unclaimed.discard(row, key, repos)
        else:
            for made in (paths.prompt_path(key), paths.prepared_path(key)):
                with contextlib.suppress(OSError):
                    made.unlink()
