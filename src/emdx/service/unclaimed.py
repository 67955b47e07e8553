"""What a team worker prepared for a run and never claimed (DESIGN §9): a worker killed between
making a run's directory (a worktree, on a branch of its own) and moving the row queued →
running leaves them on its host, owned by no run here — the run itself is queued again and
runs wherever a worker takes it. The next worker on the host removes them when it starts, and
any worker before it prepares a run whose directory (or worktree registration) is already there.

Before it makes anything, a worker writes its host on the row and in `logs/<key>.prepared`
(`mark_prepared`): a home several hosts share (an NFS home) holds other hosts' directories,
which are theirs to judge. Only what this host made for that run goes: the directory (never
through a link), its worktree registration in the repository git lists it under, and the branch
git says is checked out there if emdx made it for that run.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Collection, Iterable
from pathlib import Path

from emdx import paths, smart
from emdx.errors import EmdxError
from emdx.models import Execution, ExecutionStatus
from emdx.service.cleanup import Action, run_dir_key
from emdx.store import Store
from emdx.system import git

HOST_MAX_BYTES = 4096


def mark_prepared(key: str, host: str) -> None:
    paths.write_private(paths.prepared_path(key), host.encode("utf-8", "replace"), new=False)


def prepared_by(key: str) -> str | None:
    with contextlib.suppress(OSError, EmdxError):
        return paths.read_bounded(paths.prepared_path(key), HOST_MAX_BYTES).decode(
            "utf-8", "replace"
        )
    return None


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
    """Every run directory (or worktree registration left without its directory) this host
    prepared for a run it never claimed, removed."""
    runs = paths.runs_dir()
    if not os.path.lexists(runs):
        return []
    paths.private_dir(runs)  # a planted link in place of runs/ is refused, not followed
    repos = [Path(os.path.realpath(repo)) for repo in repos]
    with os.scandir(runs) as listing:
        keys = {entry.name for entry in listing if paths.is_real_dir(runs / entry.name)}
    where = os.path.realpath(runs)
    for repo in repos:
        for tree in git.worktrees(repo):
            in_runs = os.path.realpath(os.path.dirname(tree.path)) == where
            if in_runs and not os.path.lexists(tree.path):
                keys.add(os.path.basename(tree.path))  # its directory is gone already
    actions = []
    for key in sorted(keys):
        if prepared_by(key) != host:
            continue  # not made here, or by another host sharing this home
        try:
            row = store.executions.by_key(key)
        except EmdxError:
            continue
        if row is not None and is_unclaimed_here(row, host, live_workers):
            actions.append(discard(row, key, repos))
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
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISDIR(info.st_mode):
        return Action(kind, str(path), f"{detail}: not a directory, left alone", "failed")
    try:
        if info is not None:
            paths.remove_tree(path, runs)
    except (OSError, EmdxError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Action(kind, str(path), f"{detail}: {why}", "failed")
    for leftover in (paths.prompt_path(key), paths.prepared_path(key)):
        with contextlib.suppress(OSError):
            leftover.unlink()
    if found is not None:
        repo, branch = found
        git.forget_worktree(repo, path)
        if branch and _made_for(row, key, repo, branch) and git.delete_branch(repo, branch).ok:
            detail += f"; branch {branch} deleted"
    return Action(kind, str(path), detail, "done")


def _made_for(row: Execution, key: str, repo: Path, branch: str) -> bool:
    """Whether emdx made `branch` (checked out in this host's directory of the run) for `row`'s
    run: marked with its key, or — killed before the mark — named as emdx names that run's
    branches. Never the row's own branch while the run is running (a shared repository)."""
    running = row.status.is_active and row.status is not ExecutionStatus.QUEUED
    if running and row.branch == branch and os.path.realpath(row.repo or "") == str(repo):
        return False
    mark = git.branch_mark(repo, branch)
    if mark is not None:
        return mark == key
    base = smart.branch_name(row.id, row.doc_title)
    return re.fullmatch(re.escape(base) + r"(-\d+)?", branch) is not None


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
