"""Undoing a start that never ran: its row, directory or worktree, files, and the branch it
made (only what this start created)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from emdx import paths
from emdx.errors import EmdxError
from emdx.models import Execution
from emdx.store import Store
from emdx.system import git


def discard(store: Store, execution_id: int, run_key: str) -> None:
    """Undo a start that never ran: its row, directory or worktree, files, and its branch —
    only if this start created it (recorded in the row, or proven by git: the worktree
    registered at the run's own directory is on the branch its `worktree add -b` made)."""
    try:
        row: Execution | None = store.executions.get(execution_id)
    except EmdxError:
        row = None
    if row is not None and row.run_key != run_key:
        row = None  # the id now belongs to another run (a restored backup): not ours to touch
    runs = paths.runs_dir()
    path = runs / run_key
    repo = Path(row.repo) if row is not None and row.repo else None
    branch = row.branch if row is not None and row.branch_created else None
    if (
        repo is not None
        and branch is not None
        and git.branch_mark(repo, branch)
        not in (
            None,
            run_key,
        )
    ):
        branch = None  # replaced since by a branch of the same name that is not this run's
    if repo is not None and branch is None:
        for tree in git.worktrees(repo):
            where = Path(tree.path)
            if where.name == run_key and os.path.realpath(where.parent) == os.path.realpath(runs):
                branch = tree.branch
    if row is not None:
        with contextlib.suppress(EmdxError):
            store.executions.delete(execution_id)
    if repo is not None:
        git.unlock_worktree(repo, path)
    with contextlib.suppress(OSError, EmdxError):
        paths.remove_tree(path, runs)
    if repo is not None:
        git.forget_worktree(repo, path)
        if branch is not None:
            git.delete_branch(repo, branch)
    for file in (paths.prompt_path(run_key), paths.env_path(run_key)):
        with contextlib.suppress(OSError):
            file.unlink()
