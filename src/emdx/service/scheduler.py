"""The one start path: prepare a run (crash-safe), claim a slot, spawn its supervisor; the queue
pass that fills free slots without a daemon; `--after`; retry and resume.

A start is a sequence of small committed steps, each of which leaves a row that any later
command can finish or undo: the row is created `preparing` with its creator's identity (a
creator that dies leaves an *abandoned* row, undone by the next sweep); the repository is
recorded before a worktree is made and the branch once git made it; then the row goes
`running` (a slot claimed by compare-and-set) or `queued`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from emdx import agent, paths, settings, smart, system
from emdx.errors import (
    EmdxError,
    EnvironmentProblem,
    Interrupted,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    RunKeyTaken,
    StoreError,
)
from emdx.models import (
    Document,
    ExecOptions,
    ExecType,
    Execution,
    ExecutionStatus,
)
from emdx.reasons import Reason
from emdx.service import preflight
from emdx.service.environment import capture_environment, run_environment
from emdx.service.holds import hold_reason
from emdx.service.undo import discard
from emdx.store import Store
from emdx.store.api import DEFAULT_QUEUE, repo_queue
from emdx.store.connection import is_transient, retry_transient
from emdx.system import git, spawn


def make_run_key(doc_id: int | None) -> str:
    """Document id, microsecond timestamp, pid and a random suffix: unique across processes,
    databases and restored backups (the identity of a run's files and processes)."""
    # os.urandom, not secrets: the suffix only breaks ties, and `secrets` costs 5 ms to import.
    return f"{doc_id or 0}-{time.time_ns() // 1000}-{os.getpid()}-{os.urandom(4).hex()}"


def launch(store: Store, execution_id: int, from_status: ExecutionStatus) -> bool:
    """The one way a run starts: claim a slot (compare-and-set from `from_status`, under the
    cap), spawn its supervisor, record it. False when no slot is free, new runs are held (see
    `hold_reason`) or the row moved on; a spawn that fails ends the run failed/spawn_failed
    and raises."""
    if hold_reason(store) is not None:
        return False
    claim = store.executions.claim_slot(execution_id, settings.max_parallel(), from_status)
    if claim != "claimed":
        return False
    execution = store.executions.get(execution_id)
    try:
        if not execution.run_key:
            raise StoreError(f"execution {execution_id} has no run key: it cannot be supervised")
        pid, started = spawn.supervisor(
            execution.id,
            run_environment(execution),
            paths.runner_err_path(execution.run_key),
            paths.emdx_home(),
        )
    except (OSError, EmdxError) as exc:
        store.executions.finish(execution_id, ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED)
        paths.forget_environment(execution.run_key)
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreError(f"could not start the supervisor: {detail}") from exc
    # The supervisor records itself too; whichever write lands last carries the same values.
    store.executions.update(execution_id, key=execution.run_key, pid=pid, pid_started_at=started)
    return True


def fill_slots(store: Store) -> list[int]:
    """The queue pass: start queued runs, oldest first, while slots are free; fail those whose
    dependency failed. Every finishing supervisor and every command that looks at runs repeats
    it, so the queue moves without a daemon; the compare-and-set claim means concurrent passes
    never start a run twice or exceed the cap. Costs no write while nothing can start."""
    started: list[int] = []
    if store.queue is not None:
        return started  # team mode: the workers take queued runs
    queued = store.executions.queued()
    if not queued:
        return started
    cap = settings.max_parallel()
    for row in queued:
        after = row.options.after_id
        if after is not None:
            try:
                dependency: Execution | None = store.executions.get(after)
            except NotFoundError:
                dependency = None
            if dependency is not None and dependency.status.is_active:
                continue
            if dependency is None or dependency.status is not ExecutionStatus.COMPLETED:
                store.executions.finish(row.id, ExecutionStatus.FAILED, 1, Reason.DEPENDENCY_FAILED)
                paths.forget_environment(row.run_key)
                continue
        if store.executions.slots_in_use() >= cap or hold_reason(store) is not None:
            break
        try:
            if launch(store, row.id, ExecutionStatus.QUEUED):
                started.append(row.id)
        except StoreError:
            continue  # recorded as spawn_failed; the next one may start
    return started


# How long a team start rereads its row through a flapping connection.
DISPATCH_CHECK_S = 10.0


def queue_name(options: ExecOptions) -> str:
    """Team mode: the queue a run goes to: --queue (a worktree run's is its repository's, set
    when it was created), else the default."""
    return options.queue or DEFAULT_QUEUE


class Scheduler:
    """Starting runs, over one open store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(
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
        """The one start path (CLI foreground/background, TUI, retry, resume). In team mode
        the row is queued with a job, and a worker (on whichever host takes it) prepares its
        directory and starts its supervisor (`service.team`)."""
        options = options or ExecOptions()
        team = self.store.queue is not None
        if not team:
            preflight.ensure_ready(worktree=options.worktree is True and working_dir is None)
        doc = self.store.documents.get(doc_id, include_deleted=include_deleted)
        plan = smart.plan_for(doc, options.smart, options.tools)
        repo: Path | None = None
        # --worktree asks for one; a gameplan gets one by default when run inside a repo.
        wanted = options.worktree or (options.worktree is None and plan.wants_worktree)
        if working_dir is None and wanted:
            repo = git.toplevel()
        options = replace(options, worktree=repo is not None)
        if team and repo is not None and options.queue is None:
            # The workers holding this repository (`emdx worker --repo`) take it.
            options = replace(options, queue=repo_queue(repo.name, git.root_commit(repo)))
        if team and working_dir is not None:
            raise InvalidStateError(
                "resume is not available in team mode: the session's directory is on the "
                "host that ran it (`exec retry` starts the document afresh on any worker)"
            )
        if exec_type is not None:
            plan = replace(plan, exec_type=exec_type)
        if prompt is not None:
            plan = replace(plan, prompt=prompt)
        if options.after_id is not None:
            self.store.executions.get(options.after_id)  # unknown id: fail before any row exists
        options = replace(options, tools=plan.tools)

        execution_id, run_key = self._create_row(doc, plan.exec_type, options, parent_execution_id)
        if team:
            return self._dispatch(execution_id, run_key, plan.prompt, options, repo)
        with self._undone_if_it_fails(execution_id, run_key):
            try:
                if repo is not None:
                    workdir, branch = self.make_worktree(execution_id, repo, run_key, doc.title)
                    if prompt is None:
                        plan = replace(
                            plan, prompt=smart.plan_for_type(doc, plan.exec_type, branch).prompt
                        )
                else:
                    workdir = working_dir or self.make_run_dir(run_key)
                text = plan.prompt.encode("utf-8", "surrogatepass")
                # New files only (O_EXCL): a run's files are its own, never another's.
                paths.write_private(paths.prompt_path(run_key), text)
                paths.write_private(paths.env_path(run_key), capture_environment())
                self.store.executions.update(
                    execution_id,
                    working_dir=str(workdir),
                    log_file=str(paths.run_log_path(run_key)),
                    heartbeat_s=settings.heartbeat_seconds(),
                )
            except OSError as exc:
                raise StoreError(f"could not prepare execution: {exc.strerror or exc}") from exc
            self._schedule(execution_id, options.after_id)
        return self.store.executions.get(execution_id)

    def _dispatch(
        self,
        execution_id: int,
        run_key: str,
        prompt: str,
        options: ExecOptions,
        repo: Path | None,
    ) -> Execution:
        """Team mode: queue the row with its job (one transaction), on the queue of workers
        that hold the repository for a worktree run. The prompt travels with it; the
        environment does not (a run starts with its worker's, so no secret is stored)."""
        queue = self.store.queue
        assert queue is not None
        executions = self.store.executions
        with self._undone_if_it_fails(execution_id, run_key):
            if options.after_id is not None:
                dependency = executions.get(options.after_id)
                if (
                    dependency.status.is_final
                    and dependency.status is not ExecutionStatus.COMPLETED
                ):
                    executions.finish(
                        execution_id, ExecutionStatus.FAILED, 1, Reason.DEPENDENCY_FAILED
                    )
                    return executions.get(execution_id)
            if repo is not None:
                executions.update(execution_id, repo=str(repo))
            name = queue_name(options)
            try:
                queue.defer(
                    execution_id,
                    run_key,
                    queue=name,
                    priority=options.priority,
                    prompt=prompt.encode("utf-8", "surrogatepass"),
                    from_status=ExecutionStatus.PREPARING,
                )
            except StoreError as exc:
                # The connection died around the COMMIT: it may have landed. Undo only what
                # the database says did not (a queued row with its job is a submitted run).
                if not is_transient(exc) or not self._queued_after_all(execution_id):
                    raise
        return retry_transient(lambda: executions.get(execution_id), DISPATCH_CHECK_S)

    def _queued_after_all(self, execution_id: int) -> bool:
        try:
            row = retry_transient(lambda: self.store.executions.get(execution_id), DISPATCH_CHECK_S)
        except EmdxError:
            return False
        return row.status is not ExecutionStatus.PREPARING and row.job_id is not None

    def _create_row(
        self,
        doc: Document,
        exec_type: ExecType,
        options: ExecOptions,
        parent_execution_id: int | None,
    ) -> tuple[int, str]:
        me = os.getpid()
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
                    creator=(me, system.process_start_time(me)),
                    # Team mode: the creator is judged on its own host only.
                    host=settings.host_name() if self.store.queue is not None else None,
                )
            except RunKeyTaken:
                continue
            return execution_id, run_key
        raise StoreError("could not allocate a unique run key; try again")

    def make_run_dir(self, run_key: str) -> Path:
        run_dir = paths.private_dir(paths.runs_dir()) / run_key
        # mkdir, not exist_ok: two runs must never share a directory, even on a key collision.
        os.mkdir(run_dir, paths.DIR_MODE)
        return run_dir

    def make_worktree(
        self,
        execution_id: int,
        repo: Path,
        run_key: str,
        title: str,
        queued_job: int | None = None,
    ) -> tuple[Path, str]:
        """A worktree on a branch emdx creates: `exec-<id>-<slug>`, or `…-2`, `…-3` when that
        name is taken (ids repeat across homes and fresh databases; a user's branch is never
        reused, nor deleted by the undo). The row records the repository first and the branch
        once it is created, so that only what this run created is ever removed."""
        runs = paths.private_dir(paths.runs_dir())
        path = runs / run_key
        if os.path.lexists(path) or git.registered_path(repo, path) is not None:
            # Never through whatever is there (a link would have git write where it points).
            raise EnvironmentProblem(f"{path} is taken already (a link, or an earlier worktree)")
        if not self.store.executions.update(execution_id, queued_job=queued_job, repo=str(repo)):
            raise InvalidStateError("the run was killed, queued again or taken meanwhile")
        base = smart.branch_name(execution_id, title)
        for attempt in range(1, 100):
            branch = base if attempt == 1 else f"{base}-{attempt}"
            if git.branch_name_taken(repo, branch):
                continue
            result = git.add_worktree(repo, path, branch)
            if result.ok:
                break
            if f"'{branch}' already exists" in result.err:
                continue  # taken between our check and git's: try the next name
            if git.branch_exists(repo, branch) and git.registered_path(repo, path) is None:
                git.delete_branch(repo, branch)  # git made it, then failed on the directory
            detail = result.err.splitlines()[-1] if result.err else "git worktree add failed"
            raise EnvironmentProblem(f"cannot create a worktree in {repo}: {detail}")
        else:
            raise EnvironmentProblem(f"no free branch name for {base} in {repo}")
        recorded = self.store.executions.update(
            execution_id, queued_job=queued_job, branch=branch, branch_created=True
        )
        git.mark_branch(repo, branch, run_key)
        if not recorded:  # the caller removes what was made (its directory is marked as its)
            raise InvalidStateError("the run was killed, queued again or taken meanwhile")
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

    def _schedule(self, execution_id: int, after_id: int | None) -> None:
        """A prepared row goes `running` (a slot is free and it depends on nothing unfinished),
        `queued`, or `failed` (its dependency failed)."""
        executions = self.store.executions
        if after_id is not None:
            dependency = executions.get(after_id)
            if dependency.status.is_final and dependency.status is not ExecutionStatus.COMPLETED:
                executions.finish(execution_id, ExecutionStatus.FAILED, 1, Reason.DEPENDENCY_FAILED)
                paths.forget_environment(executions.get(execution_id).run_key)
                return
            if dependency.status.is_active:
                executions.transition(
                    execution_id, (ExecutionStatus.PREPARING,), ExecutionStatus.QUEUED
                )
                # It may have ended between our read and our queueing: its queue pass would
                # have missed us, so pass once more.
                fill_slots(self.store)
                return
        if not launch(self.store, execution_id, ExecutionStatus.PREPARING):
            executions.transition(
                execution_id, (ExecutionStatus.PREPARING,), ExecutionStatus.QUEUED
            )
            fill_slots(self.store)  # a slot may have freed meanwhile

    @contextlib.contextmanager
    def _undone_if_it_fails(self, execution_id: int, run_key: str) -> Iterator[None]:
        """A start that fails or is interrupted (Ctrl-C) half way leaves nothing behind."""
        try:
            yield
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            self._abandon(execution_id, run_key, interrupted)
            if interrupted:
                raise Interrupted(
                    f"interrupted: the start of execution #{execution_id} was undone"
                ) from exc
            raise

    def _abandon(self, execution_id: int, run_key: str, interrupted: bool) -> None:
        """After a start failed or was interrupted: undo a row that never started; a run whose
        supervisor is already up is killed like any other (when interrupted)."""
        try:
            current: Execution | None = self.store.executions.get(execution_id)
        except EmdxError:
            current = None
        if current is None or current.status in (ExecutionStatus.PREPARING, ExecutionStatus.QUEUED):
            discard(self.store, execution_id, run_key)
        elif current.status.is_active and interrupted:
            from emdx.service.kill import kill_execution

            with contextlib.suppress(EmdxError):
                kill_execution(self.store, execution_id)

    def retry(self, ref: str | int) -> Execution:
        """A new run of the same document with the same options, linked to the old one (for a
        resume: the same continuation of the same session)."""
        old = self.store.executions.resolve(ref)
        if old.doc_id is None:
            raise InvalidStateError(f"execution {old.id} has no document to run again")
        if old.status.is_active:
            raise InvalidStateError(f"execution {old.id} is still {old.status.value}")
        options = replace(old.options, after_id=None)
        if old.exec_type == ExecType.RESUME.value and old.options.resume_prompt:
            return self.resume(old.parent_execution_id or old.id, old.options.resume_prompt)
        return self.start(old.doc_id, options, parent_execution_id=old.id)

    def resume(self, ref: str | int, prompt: str) -> Execution:
        """Continue the agent session of a finished run, as a new linked run in the same dir."""
        old = self.store.executions.resolve(ref)
        if not prompt.strip():
            raise InvalidInputError("give a prompt to continue the session with")
        if old.status.is_active:
            raise InvalidStateError(f"execution {old.id} is still {old.status.value}")
        if not old.session_id:
            raise InvalidStateError(f"execution {old.id} has no agent session to resume")
        if not agent.is_session_id(old.session_id):
            raise InvalidStateError(
                f"execution {old.id} recorded a session id that is not one Claude Code gives "
                "(an agent wrote it?); not resumed"
            )
        if old.doc_id is None:
            raise InvalidStateError(f"execution {old.id} has no document")
        if not old.working_dir or not paths.is_real_dir(old.working_dir):
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
        return self.start(
            old.doc_id,
            options,
            parent_execution_id=old.id,
            working_dir=Path(old.working_dir),
            exec_type=ExecType.RESUME,
            prompt=prompt,
            include_deleted=True,
        )
