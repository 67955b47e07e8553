"""Cleanup: zombie executions, orphaned processes, stuck rows, old run directories (exec branches:
`service/branches.py`).

Every function returns the actions it took (or, with dry_run, would take) so that the shells can
show them as a table or JSON. Nothing here touches a run whose supervisor is alive and running.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emdx import paths, settings, system
from emdx.agent.outcome import EXIT_TIMEOUT
from emdx.errors import EmdxError
from emdx.models import Execution, ExecutionStatus, parse_time, utc_now
from emdx.reasons import Reason
from emdx.service import repair
from emdx.service.kill import finish_from_outside, run_identities
from emdx.service.liveness import Verdict, default_probe, judge
from emdx.service.scheduler import fill_slots
from emdx.service.undo import discard
from emdx.store import Store
from emdx.system import git

Identity = tuple[int, float]

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


def _signal_report(identities: list[Identity], dry_run: bool, why: str) -> list[Action]:
    """Stop the processes all at once (SIGTERM, one grace for all, SIGKILL the rest); one
    action per pid: killed / already gone / no permission (a pid whose start time changed is
    not ours and is never signalled)."""
    if dry_run:
        return [
            Action("process", str(pid), why, "would do" if alive else "already gone")
            for pid, st in identities
            for alive in [system.same_process(pid, st)]
        ]
    sent = {pid: system.send_signal(pid, st, signal.SIGTERM) for pid, st in identities}
    targets = [(pid, st) for pid, st in identities if sent[pid] == "sent"]
    if targets and not system.wait_gone(targets, settings.kill_grace()):
        for pid, st in targets:
            system.send_signal(pid, st, signal.SIGKILL)
        system.wait_gone(targets, 5.0)
    actions = []
    for pid, st in identities:
        if sent[pid] == "denied":
            actions.append(Action("process", str(pid), why, "no permission"))
        elif sent[pid] == "gone":
            actions.append(Action("process", str(pid), why, "already gone"))
        elif system.same_process(pid, st):
            actions.append(Action("process", str(pid), f"{why}: still alive", "failed"))
        else:
            actions.append(Action("process", str(pid), f"{why}: killed", "done"))
    return actions


def processes(store: Store, dry_run: bool = False) -> list[Action]:
    """Zombie executions, abandoned starts, runs past their timeout whose supervisor stopped
    enforcing it, and orphaned processes (by their run-key marker)."""
    probe = default_probe(store)
    actions: list[Action] = []
    handled: set[str] = set()
    for ex in store.executions.active():
        verdict = judge(ex, probe)
        label = f"#{ex.id}"
        if verdict.verdict is Verdict.ZOMBIE:
            why = f"execution #{ex.id}: supervisor gone"
            actions += _signal_report(run_identities(ex), dry_run, why)
            outcome = repair.read_outcome(ex)
            planned = (
                f"{ex.status.value} → {outcome['status']} ({outcome['exit_code']}, "
                f"{outcome['reason']}, from its outcome file)"
                if outcome
                else f"{ex.status.value} → failed (137, runner_lost)"
            )
            if dry_run:
                actions.append(Action("execution", label, planned, "would do"))
            else:
                fixed = repair.repair_zombie(store, ex, "`emdx cleanup processes`")
                if fixed.status.is_final:
                    actions.append(Action("execution", label, planned, "done"))
        elif verdict.verdict is Verdict.OVERDUE:
            why = f"execution #{ex.id}: overdue ({verdict.detail})"
            detail = f"{ex.status.value} → failed (124, overdue)"
            if dry_run:
                actions += _signal_report(run_identities(ex), dry_run, why)
                actions.append(Action("execution", label, detail, "would do"))
            else:
                # Recorded first: the supervisor, if it wakes up, finds a final state and keeps it.
                won = finish_from_outside(
                    store,
                    ex,
                    ExecutionStatus.FAILED,
                    EXIT_TIMEOUT,
                    Reason.OVERDUE,
                    f"stopped by `emdx cleanup processes` ({verdict.detail})",
                )
                actions += _signal_report(run_identities(ex), dry_run, why)
                if won:
                    actions.append(Action("execution", label, detail, "done"))
        elif verdict.verdict is Verdict.ABANDONED and ex.run_key:
            detail = "preparing, its creator gone → start undone"
            if not dry_run:
                discard(store, ex.id, ex.run_key)
            actions.append(Action("execution", label, detail, "would do" if dry_run else "done"))
        else:
            continue
        if ex.run_key:
            handled.add(ex.run_key)
    actions += _orphans(store, dry_run, skip=handled)
    actions += _stale_environments(store, dry_run)
    if not dry_run:
        # Owed post-actions and the queue pass, as every command that looks at runs does.
        repair.sweep(store, "`emdx cleanup processes`")
    return actions


# A start writes the environment file before its row can be read as prepared: younger files
# may belong to a start still in progress.
STALE_ENV_MIN_AGE_S = 60.0


def _stale_environments(store: Store, dry_run: bool) -> list[Action]:
    """Captured environments (they hold the secrets of the runs' callers) of runs that are no
    longer active, or that no row knows: removed."""
    logs = paths.logs_dir()
    if not os.path.isdir(logs) or os.path.islink(logs):
        return []
    actions = []
    now = time.time()
    with os.scandir(logs) as listing:
        found = [entry for entry in listing if entry.name.endswith(".env.json")]
    for entry in sorted(found, key=lambda e: e.name):
        key = entry.name[: -len(".env.json")]
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if now - info.st_mtime < STALE_ENV_MIN_AGE_S:
            continue
        row = store.executions.by_key(key)
        if row is not None and row.status.is_active:
            continue
        label = "no such execution" if row is None else f"execution #{row.id} is {row.status.value}"
        if dry_run:
            actions.append(
                Action("file", entry.name, f"captured environment ({label})", "would do")
            )
            continue
        try:
            os.unlink(entry.path)
        except OSError as exc:
            actions.append(Action("file", entry.name, f"captured environment: {exc}", "failed"))
            continue
        actions.append(Action("file", entry.name, f"captured environment ({label})", "done"))
    return actions


def _orphans(store: Store, dry_run: bool, skip: set[str]) -> list[Action]:
    """Processes marked with a run key of this home whose run no supervisor owns any more."""
    probe = default_probe(store)
    actions = []
    for key, identities in sorted(system.scan_marked_processes(store.path).items()):
        if key in skip:
            continue
        ex = store.executions.by_key(key)
        if ex is not None:
            verdict = judge(ex, probe)
            if ex.status.is_active and verdict.verdict is not Verdict.ZOMBIE:
                continue  # owned by a live supervisor (or about to be)
            if ex.status.is_final and verdict.runner_alive:
                # The supervisor is still finishing (post-actions, the queue pass): its own
                # cleanup kills what is left; do not race it.
                continue
        label = "no such execution" if ex is None else f"execution #{ex.id} is {ex.status.value}"
        actions += _signal_report(identities, dry_run, f"orphaned agent process ({label})")
    return actions


def executions(store: Store, older_than_s: float = 1800.0, dry_run: bool = False) -> list[Action]:
    """Rows still `running` after `older_than_s` with no live process → failed/124/stuck."""
    actions = []
    for ex in store.executions.list_executions(["running"], None):
        age = _age_s(ex.started_at or ex.created_at)
        if age is None or age < older_than_s:
            continue
        if system.same_process(ex.pid, ex.pid_started_at) or system.same_process(
            ex.agent_pid, ex.agent_started_at
        ):
            continue
        label = ex.old_id or f"#{ex.id}"
        detail = f"running for {age / 3600:.1f} h, no live process → failed (124, stuck)"
        if dry_run:
            actions.append(Action("execution", label, detail, "would do"))
            continue
        if store.executions.finish(ex.id, ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.STUCK):
            actions.append(Action("execution", label, detail, "done"))
    if not dry_run and actions:
        fill_slots(store)
    return actions


def run_dir_key(path: str | Path) -> str:
    """A run directory as compared: its parent resolved (a home spelled through a link is the
    same home), its own name kept as is (it may be a link, which is never followed)."""
    where = Path(path)
    return os.path.join(os.path.realpath(where.parent), where.name)


def is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _home_repos(rows: list[Execution]) -> list[Path]:
    """The repositories this home made worktrees in (trusted: the user started runs there)."""
    return sorted({Path(row.repo) for row in rows if row.repo and row.branch})


def _remove_run_dir(path: Path, runs: Path, rows: list[Execution], repos: list[Path]) -> str | None:
    """Remove a run directory without following links; a worktree is also unregistered from
    the repository this home recorded for it (git is never run inside the directory)."""
    repo = next((Path(row.repo) for row in rows if row.repo and row.branch), None)
    if repo is None:
        repo = next((r for r in repos if git.admin_dir(r, path) is not None), None)
    if repo is not None:
        git.unlock_worktree(repo, path)
    try:
        paths.remove_tree(path, runs)
    except (OSError, EmdxError) as exc:
        return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if repo is not None:
        git.forget_worktree(repo, path)
    return None


def _unsaved_work(path: Path, rows: list[Execution], repos: list[Path]) -> str | None:
    """Why a worktree must not be removed without --force, if it must not: uncommitted
    changes, or a `.git` that no longer points into its repository (so git cannot tell)."""
    repo = next((Path(row.repo) for row in rows if row.repo and row.branch), None)
    if repo is None:
        repo = next((r for r in repos if git.admin_dir(r, path) is not None), None)
    if repo is None:
        return None  # not a worktree of a repository this home knows: a plain directory
    dirty = git.is_dirty(repo, path)
    if dirty is None:
        return "its .git does not point into its repository: `emdx cleanup branches --force`"
    if dirty:
        return "uncommitted changes: `emdx cleanup branches --force` removes them"
    return None


def dirs(store: Store, older_than_s: float = 7 * 86400.0, dry_run: bool = False) -> list[Action]:
    """Run directories (and worktrees) of runs finished more than `older_than_s` ago, and
    directories no row knows; never one of an active run, never through a symbolic link."""
    runs = paths.runs_dir()
    if not os.path.lexists(runs):
        return []
    paths.private_dir(runs)  # a planted link in place of runs/ is refused, not followed
    runs_real = Path(os.path.realpath(runs))
    rows_all = store.executions.list_executions(None, None)
    # A directory can serve several runs (a resume continues in its parent's directory).
    owners: dict[str, list[Execution]] = {}
    for row in rows_all:
        if row.working_dir:
            owners.setdefault(run_dir_key(row.working_dir), []).append(row)
    repos = _home_repos(rows_all)
    actions = []
    now = time.time()
    with os.scandir(runs) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        path = runs / entry.name
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(path)
            detail = f"link to {target}: never followed, left in place"
            actions.append(Action("link", str(path), detail, "kept"))
            continue
        if not stat.S_ISDIR(info.st_mode):
            continue  # emdx makes only directories here
        rows = owners.get(str(runs_real / entry.name))
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
            if now - info.st_mtime < ORPHAN_DIR_MIN_AGE_S:
                continue
            detail = "no execution row"
        worktree = any(row.branch for row in rows or []) or os.path.lexists(path / ".git")
        kind = "worktree" if worktree else "dir"
        unsaved = _unsaved_work(path, rows or [], repos) if worktree else None
        if unsaved is not None:
            # Uncommitted work is the user's to keep or throw away, knowingly.
            actions.append(Action(kind, str(path), f"{detail}; {unsaved}", "kept"))
            continue
        if dry_run:
            actions.append(Action(kind, str(path), detail, "would do"))
            continue
        failure = _remove_run_dir(path, runs, rows or [], repos)
        actions.append(
            Action(
                kind,
                str(path),
                detail if failure is None else f"{detail}: {failure}",
                "done" if failure is None else "failed",
            )
        )
    return actions
