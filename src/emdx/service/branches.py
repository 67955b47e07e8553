"""Cleanup of exec-* branches: which are this home's, merged, in use or dirty, and deleting
them (their worktrees first) — never a branch whose run is active, nor another home's or the
user's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emdx import paths
from emdx.errors import EmdxError, EnvironmentProblem
from emdx.models import Execution
from emdx.service.cleanup import Action, is_link, run_dir_key
from emdx.store import Store
from emdx.system import git


@dataclass(frozen=True)
class BranchInfo:
    name: str
    merged: bool
    in_use: bool
    worktree: str | None
    locked: bool
    dirty: bool | None
    execution_id: int | None
    owned: bool
    """Created by a run of this EMDX_HOME in this repository (only those are ever deleted)."""
    foreign_worktree: bool = False
    """Its worktree is not the run's directory (moved by someone): never removed by emdx."""


def branch_report(store: Store, repo: Path, dry_run: bool = True) -> tuple[str, list[BranchInfo]]:
    """Every exec-* branch of `repo`, with what decides whether cleanup may delete it. A stale
    lock (the run ended but its supervisor died before unlocking) is lifted unless `dry_run`."""
    repo = Path(os.path.realpath(repo))
    base = git.default_branch(repo)
    listing = git.run(["for-each-ref", "--format=%(refname:short)", "refs/heads/exec-*"], repo)
    merged = git.merged_branches(repo, base)
    trees = {tree.branch: tree for tree in git.worktrees(repo) if tree.branch}
    rows = store.executions.list_executions(None, None)
    owned: dict[str, Execution] = {}
    for candidate in sorted(rows, key=lambda r: r.id):
        if (
            candidate.branch
            and candidate.branch_created
            and candidate.repo
            and os.path.realpath(candidate.repo) == str(repo)
        ):
            owned[candidate.branch] = candidate
    # A name can outlive its branch: deleted by hand, then made again by another home's run.
    owned = {name: row for name, row in owned.items() if git.branch_mark(repo, name) == row.run_key}
    active = {name for name, owner in owned.items() if owner.status.is_active}
    infos = []
    for name in listing.out.splitlines():
        name = name.strip()
        if not name:
            continue
        row = owned.get(name)
        tree = trees.get(name)
        locked = tree is not None and tree.locked
        foreign = False
        dirty: bool | None = False
        if row is not None and tree is not None:
            foreign = not row.working_dir or run_dir_key(tree.path) != run_dir_key(row.working_dir)
            if locked and not foreign and name not in active and row.status.is_final:
                # Our run ended but its supervisor died before unlocking: the lock is stale.
                locked = False if dry_run else not git.unlock_worktree(repo, Path(tree.path))
            where = Path(tree.path)
            if os.path.isdir(where) and not is_link(where):
                dirty = git.is_dirty(repo, where)
        infos.append(
            BranchInfo(
                name=name,
                merged=name in merged,
                in_use=name in active,
                worktree=tree.path if tree else None,
                locked=locked,
                dirty=dirty,
                execution_id=row.id if row else None,
                owned=row is not None,
                foreign_worktree=foreign,
            )
        )
    return base, infos


def _verdict(info: BranchInfo, base: str, force: bool) -> tuple[str, str | None]:
    """(detail, reason to keep or None) for one branch."""
    state = "merged" if info.merged else "unmerged"
    detail = f"{state} into {base}" + (f", worktree {info.worktree}" if info.worktree else "")
    if not info.owned:
        return detail, "not created by a run of this EMDX_HOME in this repository"
    if info.in_use:
        return detail, "its run is active"
    if info.locked:
        return detail, "worktree locked by a live run"
    if info.foreign_worktree:
        return detail, "its worktree is not the run's directory (moved?): remove it by hand"
    if not info.merged and not force:
        return detail, "--force deletes it"
    if info.dirty is None and not force:
        return detail, "its worktree's .git does not point into this repository, or git "
        "could not read it: --force deletes it"
    if info.dirty and not force:
        return detail, "uncommitted changes, --force deletes them"
    return detail, None


def branches(
    store: Store, repo: Path | None = None, force: bool = False, dry_run: bool = False
) -> list[Action]:
    """Delete merged exec-* branches this home created (and their worktrees); unmerged or dirty
    ones too with force; never a branch whose run is active, nor another home's or the user's."""
    repo = repo or git.toplevel()
    if repo is None:
        raise EnvironmentProblem("not inside a git repository: run `emdx cleanup branches` there")
    base, infos = branch_report(store, repo, dry_run)
    runs = paths.runs_dir()
    actions = []
    for info in infos:
        detail, keep = _verdict(info, base, force)
        if keep is not None:
            actions.append(Action("branch", info.name, f"{detail}; {keep}", "kept"))
            continue
        if dry_run:
            actions.append(Action("branch", info.name, detail, "would do"))
            continue
        if info.worktree:
            where = Path(info.worktree)
            git.unlock_worktree(repo, where)
            if os.path.lexists(where):
                try:
                    paths.remove_tree(where, runs)
                except (OSError, EmdxError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    actions.append(Action("branch", info.name, f"{detail}: {why}", "failed"))
                    continue
            git.forget_worktree(repo, where)
        deleted = git.delete_branch(repo, info.name)
        actions.append(
            Action(
                "branch",
                info.name,
                detail if deleted.ok else f"{detail}: {deleted.err}",
                "done" if deleted.ok else "failed",
            )
        )
    return actions
