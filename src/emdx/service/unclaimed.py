"""What a team worker prepared for a run and never claimed (DESIGN §9): a worker killed between
making a run's directory (a worktree, on a branch of its own) and moving the row queued →
running leaves them on its host, owned by no run here — the run itself is queued again and
runs wherever a worker takes it. The next worker on the host removes them when it starts, and
any worker before it prepares a run whose directory is already there.

Only what this host made for that run goes: the directory (never through a link), its worktree
registration in the repository git lists it under, and the branch git says is checked out
there if emdx marked it with the run's key.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection, Iterable
from pathlib import Path

from emdx import paths
from emdx.errors import EmdxError
from emdx.models import Execution, ExecutionStatus
from emdx.service.cleanup import Action, run_dir_key
from emdx.store import Store
from emdx.system import git


def is_unclaimed_here(row: Execution, host: str, live_workers: Collection[int]) -> bool:
    """Whether this host's directory of `row`'s run was never the run's: the run went on (or
    was prepared again) on another host, or is still queued after the worker of this host that
    prepared it stopped beating."""
    if row.host != host:
        return True
    return row.status is ExecutionStatus.QUEUED and row.worker_id not in live_workers


def sweep(
    store: Store, host: str, repos: Iterable[Path], live_workers: Collection[int]
) -> list[Action]:
    """Every run directory of this home whose run this host never claimed, removed."""
    runs = paths.runs_dir()
    if not os.path.lexists(runs):
        return []
    paths.private_dir(runs)  # a planted link in place of runs/ is refused, not followed
    with os.scandir(runs) as listing:
        names = sorted(entry.name for entry in listing)
    actions = []
    for name in names:
        try:
            if not stat.S_ISDIR(os.lstat(runs / name).st_mode):
                continue  # a link (never followed) or a file: not a directory emdx made
            row = store.executions.by_key(name)
        except (OSError, EmdxError):
            continue
        if row is not None and is_unclaimed_here(row, host, live_workers):
            actions.append(discard(row, name, repos))
    return actions


def discard(row: Execution, key: str, repos: Iterable[Path]) -> Action:
    """Remove this host's directory `runs/<key>` of `row`'s run, its worktree and its branch."""
    runs = paths.runs_dir()
    path = runs / key
    found = _worktree_at(path, repos)
    kind = "dir" if found is None else "worktree"
    detail = f"prepared here for execution #{row.id}, never claimed here"
    if found is not None:
        git.unlock_worktree(found[0], path)
    try:
        paths.remove_tree(path, runs)
    except (OSError, EmdxError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Action(kind, str(path), f"{detail}: {why}", "failed")
    with contextlib.suppress(OSError):
        paths.prompt_path(key).unlink()
    if found is not None:
        repo, branch = found
        git.forget_worktree(repo, path)
        # The row's own branch while it runs elsewhere (a shared repository) is never touched.
        running = row.status.is_active and row.status is not ExecutionStatus.QUEUED
        theirs = running and row.branch == branch and os.path.realpath(row.repo or "") == str(repo)
        if branch and not theirs and git.branch_mark(repo, branch) == key:
            git.delete_branch(repo, branch)
            detail += f"; branch {branch} deleted"
    return Action(kind, str(path), detail, "done")


def _worktree_at(path: Path, repos: Iterable[Path]) -> tuple[Path, str | None] | None:
    """The repository whose worktree list (its own registry, not the directory's `.git`, which
    anything may have written) names `path`, and the branch checked out there."""
    where = run_dir_key(path)
    for repo in repos:
        real = Path(os.path.realpath(repo))
        for tree in git.worktrees(real):
            if run_dir_key(tree.path) == where:
                return real, tree.branch
    return None
