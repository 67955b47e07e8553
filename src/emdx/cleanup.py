"""Cleanup: zombie executions, orphaned processes, stuck rows, old run directories, exec branches.

Every function returns the actions it took (or, with dry_run, would take) so that the shells can
show them as a table or JSON. Nothing here touches a run whose supervisor is alive and running.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emdx import paths, system
from emdx.agent.outcome import EXIT_SIGKILL, EXIT_TIMEOUT
from emdx.errors import EnvironmentProblem, NotFoundError
from emdx.models import Execution, ExecutionStatus, Reason, parse_time, utc_now
from emdx.runner import launch
from emdx.service import RUNNER_STARTUP_GRACE_S, Service, run_identities

# A directory with no row is only an orphan once it is this old (a start creates the row first,
# but a clock skew or a slow disk should never make cleanup race a start).
ORPHAN_DIR_MIN_AGE_S = 300.0


@dataclass(frozen=True)
class Action:
    """One thing cleanup did or would do."""

    kind: str  # process | execution | dir | branch | worktree
    target: str
    detail: str
    result: str  # done | would do | kept | failed | no permission | already gone

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _age_s(moment: str | None) -> float | None:
    parsed = parse_time(moment)
    return None if parsed is None else (utc_now() - parsed).total_seconds()


def _signal_report(identities: list[tuple[int, float]], dry_run: bool, why: str) -> list[Action]:
    """Kill each (pid, start) process tree-wide; one action per pid: killed / already gone / no
    permission (a pid whose start time changed is not ours and is never signalled)."""
    actions = []
    for pid, started in identities:
        if not system.same_process(pid, started):
            actions.append(Action("process", str(pid), why, "already gone"))
            continue
        if dry_run:
            actions.append(Action("process", str(pid), why, "would do"))
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except PermissionError:
            actions.append(Action("process", str(pid), why, "no permission"))
            continue
        except ProcessLookupError:
            actions.append(Action("process", str(pid), why, "already gone"))
            continue
        if not system.wait_gone([(pid, started)], launch.kill_grace()):
            system.kill_identified([(pid, started)], 0, force=True)
        actions.append(Action("process", str(pid), f"{why}: killed", "done"))
    return actions


def processes(service: Service, dry_run: bool = False) -> list[Action]:
    """Zombie executions, orphaned agent processes and runs past their timeout."""
    store = service.store
    actions: list[Action] = []
    handled: set[int] = set()
    running = store.executions.list_executions(["running"], None)
    for ex in running:
        if ex.run_key is None:
            continue  # a row from an earlier release: `cleanup executions` repairs those
        alive = service.runner_alive(ex)
        age = _age_s(ex.started_at or ex.created_at) or 0.0
        if not alive and (ex.pid_started_at is not None or age > RUNNER_STARTUP_GRACE_S):
            actions += _finish_dead(service, ex, dry_run)
            handled.add(ex.id)
        elif alive and ex.options.timeout_s and age > ex.options.timeout_s + 60 and _stale(ex):
            # The supervisor should have enforced the timeout and stopped beating: it is frozen
            # or wedged. (Age alone is wall-clock and jumps with the clock; a fresh heartbeat
            # means the supervisor is at work and keeps its own monotonic watch.)
            actions += _finish_overdue(service, ex, dry_run)
            handled.add(ex.id)
    actions += _orphans(service, dry_run, skip=handled)
    if not dry_run:
        launch.start_queued(store)
    return actions


def _stale(ex: Execution) -> bool:
    from emdx.runner.supervisor import heartbeat_interval

    age = ex.heartbeat_age_s
    return age is None or age > 3 * heartbeat_interval()


def _finish_dead(service: Service, ex: Execution, dry_run: bool) -> list[Action]:
    why = f"execution #{ex.id}: supervisor gone"
    actions = _signal_report(run_identities(ex), dry_run, why)
    if dry_run:
        actions.append(
            Action("execution", f"#{ex.id}", "running → failed (137, runner_lost)", "would do")
        )
    elif service.store.executions.finish(
        ex.id, ExecutionStatus.FAILED, EXIT_SIGKILL, Reason.RUNNER_LOST
    ):
        actions.append(
            Action("execution", f"#{ex.id}", "running → failed (137, runner_lost)", "done")
        )
    return actions


def _finish_overdue(service: Service, ex: Execution, dry_run: bool) -> list[Action]:
    why = f"execution #{ex.id}: past its {ex.options.timeout_s:g}s timeout"
    actions = _signal_report(run_identities(ex), dry_run, why)
    detail = "running → failed (124, timeout)"
    if dry_run:
        actions.append(Action("execution", f"#{ex.id}", detail, "would do"))
    elif service.store.executions.finish(
        ex.id, ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.TIMEOUT
    ):
        actions.append(Action("execution", f"#{ex.id}", detail, "done"))
    return actions


def _orphans(service: Service, dry_run: bool, skip: set[int]) -> list[Action]:
    """Processes marked EMDX_EXECUTION_ID=<id> whose run no supervisor owns any more."""
    by_run = system.scan_marked_processes(service.store.path)
    actions = []
    for execution_id, identities in sorted(by_run.items()):
        if execution_id in skip:
            continue
        ex: Execution | None
        try:
            ex = service.store.executions.get(execution_id)
        except NotFoundError:
            ex = None
        if ex is not None and ex.status.is_active:
            if ex.status is ExecutionStatus.QUEUED or service.runner_alive(ex):
                continue  # owned by a live supervisor (or about to be)
            age = _age_s(ex.started_at or ex.created_at) or 0.0
            if ex.pid_started_at is None and age <= RUNNER_STARTUP_GRACE_S:
                continue
        if ex is not None and ex.status.is_final and service.runner_alive(ex):
            # The supervisor is still finishing (post-actions, starting the next run): its own
            # cleanup kills what is left; do not race it.
            continue
        label = "no such execution" if ex is None else f"execution #{ex.id} is {ex.status.value}"
        actions += _signal_report(identities, dry_run, f"orphaned agent process ({label})")
    return actions


def executions(
    service: Service, older_than_s: float = 1800.0, dry_run: bool = False
) -> list[Action]:
    """Rows still `running` after `older_than_s` with no live process → failed/124/stuck."""
    actions = []
    for ex in service.store.executions.list_executions(["running"], None):
        age = _age_s(ex.started_at or ex.created_at)
        if age is None or age < older_than_s:
            continue
        if service.runner_alive(ex) or system.same_process(ex.agent_pid, ex.agent_started_at):
            continue
        label = ex.old_id or f"#{ex.id}"
        detail = f"running for {age / 3600:.1f} h, no live process → failed (124, stuck)"
        if dry_run:
            actions.append(Action("execution", label, detail, "would do"))
            continue
        if service.store.executions.finish(
            ex.id, ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.STUCK
        ):
            actions.append(Action("execution", label, detail, "done"))
    if not dry_run and actions:
        launch.start_queued(service.store)
    return actions


def _remove_dir(path: Path) -> str | None:
    """Remove a run directory; a git worktree is unregistered from its repository first."""
    if (path / ".git").is_file():
        common = system.git(["rev-parse", "--git-common-dir"], cwd=path)
        if common.ok:
            repo_git = Path(common.out if os.path.isabs(common.out) else path / common.out)
            system.git(["worktree", "remove", "--force", str(path)], cwd=repo_git.parent)
    if path.exists():
        try:
            shutil.rmtree(path)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def dirs(
    service: Service, older_than_s: float = 7 * 86400.0, dry_run: bool = False
) -> list[Action]:
    """Run directories (and worktrees) of runs finished more than `older_than_s` ago, and
    directories no row knows; never one of an active run."""
    runs = paths.runs_dir()
    if not runs.is_dir():
        return []
    # A directory can serve several runs (a resume continues in its parent's directory).
    owners: dict[str, list[Execution]] = {}
    for row in service.store.executions.list_executions(None, None):
        if row.working_dir:
            owners.setdefault(str(Path(row.working_dir)), []).append(row)
    actions = []
    now = time.time()
    for path in sorted(runs.iterdir()):
        if not path.is_dir():
            continue
        rows = owners.get(str(path))
        if rows:
            if any(not row.status.is_final for row in rows):
                continue
            ages = [_age_s(row.completed_at) for row in rows]
            if any(age is None for age in ages):
                continue
            age = min(a for a in ages if a is not None)
            if age < older_than_s:
                continue
            newest = max(rows, key=lambda row: row.id)
            detail = f"execution #{newest.id} {newest.status.value} {age / 86400:.1f} days ago"
        else:
            try:
                mtime_age = now - path.stat().st_mtime
            except OSError:
                continue
            if mtime_age < ORPHAN_DIR_MIN_AGE_S:
                continue
            detail = "no execution row"
        kind = "worktree" if (path / ".git").is_file() else "dir"
        if dry_run:
            actions.append(Action(kind, str(path), detail, "would do"))
            continue
        failure = _remove_dir(path)
        actions.append(
            Action(
                kind,
                str(path),
                detail if failure is None else f"{detail}: {failure}",
                "done" if failure is None else "failed",
            )
        )
    return actions


@dataclass(frozen=True)
class BranchInfo:
    name: str
    merged: bool
    in_use: bool
    worktree: str | None
    locked: bool
    dirty: bool
    execution_id: int | None


def default_branch(repo: Path) -> str:
    """origin's HEAD, else init.defaultBranch if it exists, else main/master, else current."""
    head = system.git(["symbolic-ref", "--short", "refs/remotes/origin/HEAD"], cwd=repo)
    if head.ok and head.out:
        return head.out
    candidates = []
    configured = system.git(["config", "--get", "init.defaultBranch"], cwd=repo)
    if configured.ok and configured.out:
        candidates.append(configured.out)
    candidates += ["main", "master"]
    for name in candidates:
        if system.git(["rev-parse", "--verify", "--quiet", f"refs/heads/{name}"], cwd=repo).ok:
            return name
    current = system.git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=repo)
    return current.out if current.ok else "HEAD"


@dataclass(frozen=True)
class Worktree:
    path: str
    locked: bool


def _worktrees(repo: Path) -> dict[str, Worktree]:
    """branch name → its worktree (from `git worktree list --porcelain`)."""
    listing = system.git(["worktree", "list", "--porcelain"], cwd=repo)
    result: dict[str, Worktree] = {}
    for block in listing.out.split("\n\n"):
        lines = block.splitlines()
        path = next(
            (line[len("worktree ") :] for line in lines if line.startswith("worktree ")), None
        )
        branch = next(
            (
                line[len("branch refs/heads/") :]
                for line in lines
                if line.startswith("branch refs/heads/")
            ),
            None,
        )
        if path and branch:
            locked = any(line == "locked" or line.startswith("locked ") for line in lines)
            result[branch] = Worktree(path, locked)
    return result


def branch_report(service: Service, repo: Path) -> tuple[str, list[BranchInfo]]:
    base = default_branch(repo)
    listing = system.git(["for-each-ref", "--format=%(refname:short)", "refs/heads/exec-*"], repo)
    merged_out = system.git(["branch", "--merged", base, "--format=%(refname:short)"], repo)
    merged = set(merged_out.out.splitlines()) if merged_out.ok else set()
    trees = _worktrees(repo)
    rows = service.store.executions.list_executions(None, None)
    active = {ex.branch for ex in rows if ex.branch and ex.status.is_active}
    finished_dirs = {
        str(Path(ex.working_dir)) for ex in rows if ex.working_dir and ex.status.is_final
    }
    infos = []
    for name in listing.out.splitlines():
        name = name.strip()
        if not name:
            continue
        tree = trees.get(name)
        locked = tree is not None and tree.locked
        if locked and tree is not None and tree.path in finished_dirs and name not in active:
            # Our run ended but its supervisor died before unlocking: the lock is stale.
            locked = not system.git(["worktree", "unlock", tree.path], repo).ok
        dirty = False
        if tree is not None and Path(tree.path).is_dir():
            status = system.git(["status", "--porcelain"], cwd=tree.path)
            dirty = bool(status.out) if status.ok else False
        number = name.split("-")[1] if name.count("-") >= 1 else ""
        infos.append(
            BranchInfo(
                name,
                name in merged,
                name in active,
                tree.path if tree else None,
                locked,
                dirty,
                int(number) if number.isdigit() else None,
            )
        )
    return base, infos


def branches(
    service: Service, repo: Path | None = None, force: bool = False, dry_run: bool = False
) -> list[Action]:
    """Delete merged exec-* branches (and their worktrees); unmerged or dirty ones too with
    force; never a branch whose run is active, here or in another EMDX_HOME (its worktree is
    locked while the run lives)."""
    repo = repo or system.git_toplevel()
    if repo is None:
        raise EnvironmentProblem("not inside a git repository: run `emdx cleanup branches` there")
    base, infos = branch_report(service, repo)
    actions = []
    for info in infos:
        state = "merged" if info.merged else "unmerged"
        detail = f"{state} into {base}" + (f", worktree {info.worktree}" if info.worktree else "")
        if info.in_use:
            actions.append(Action("branch", info.name, f"{detail}; its run is active", "kept"))
            continue
        if info.locked:
            actions.append(
                Action("branch", info.name, f"{detail}; worktree locked by a live run", "kept")
            )
            continue
        if not info.merged and not force:
            actions.append(Action("branch", info.name, f"{detail}; --force deletes it", "kept"))
            continue
        if info.dirty and not force:
            actions.append(
                Action(
                    "branch",
                    info.name,
                    f"{detail}; uncommitted changes, --force deletes them",
                    "kept",
                )
            )
            continue
        if dry_run:
            actions.append(Action("branch", info.name, detail, "would do"))
            continue
        if info.worktree:
            removed = system.git(["worktree", "remove", "--force", info.worktree], repo)
            if not removed.ok and Path(info.worktree).exists():
                actions.append(Action("branch", info.name, f"{detail}: {removed.err}", "failed"))
                continue
            system.git(["worktree", "prune"], repo)
        # -D: merged-ness was checked against the default branch above; `-d` would check HEAD.
        deleted = system.git(["branch", "-D", info.name], repo)
        actions.append(
            Action(
                "branch",
                info.name,
                detail if deleted.ok else f"{detail}: {deleted.err}",
                "done" if deleted.ok else "failed",
            )
        )
    return actions
