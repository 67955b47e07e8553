"""emdx deletes only the branches it created, in this home (DESIGN §8).

Execution ids repeat: a fresh `knowledge.db` (which the corrupt-database message suggests)
starts again at 1, and a second EMDX_HOME numbers its own runs. So `exec-<id>-<slug>` can be a
branch of the user's, or of another home's run.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest
from escape_helpers import (
    Runs,
    actions_by_target,
    cleanup_env,
    commit_file,
    git,
    git_repo,
    procs,
    reaper,
    runs,
    svc,
    worktrees,
)
from testkit import seed_execution_ids, started_id

from emdx import paths, smart
from emdx.errors import StoreError
from emdx.models import ExecOptions

__all__ = ["cleanup_env", "git_repo", "procs", "reaper", "runs", "svc"]


def _next_id() -> int:
    conn = sqlite3.connect(str(paths.db_path()))
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'executions'").fetchone()
    finally:
        conn.close()
    return int(row[0]) + 1


def _users_branch(repo: Path, name: str) -> str:
    """A branch of the user's with a commit of its own; returns that commit."""
    git(repo, "checkout", "-q", "-b", name)
    tip = commit_file(repo, "mine.txt", "the user's commits\n", "user work")
    git(repo, "checkout", "-q", "main")
    return tip


def test_a_taken_branch_name_gets_a_free_one_and_the_users_branch_survives(
    runs: Runs, git_repo: Path
) -> None:
    """The start failed with "a branch named … already exists" and its undo ran `git branch -D`
    on that pre-existing branch, taking the user's commits with it."""
    title = "Fix the parser"
    doc = runs.doc(f"# {title}\nFAKE:events=1\n", title=title)
    expected = smart.branch_name(_next_id(), title)
    tip = _users_branch(git_repo, expected)
    git(git_repo, "branch", f"{expected}-2")  # the next free name is -3

    done = runs.cli("claude", "execute", str(doc), "--background", "--worktree", cwd=git_repo)
    assert done.code == 0, done
    row = runs.wait_final(started_id(done.stdout))
    assert row.status.value == "completed", row
    assert row.branch == f"{expected}-3"
    assert f"branch: {expected}-3 ({expected} already existed)" in done.stdout
    assert git(git_repo, "rev-parse", expected) == tip
    assert worktrees(git_repo)[str(row.working_dir)] == row.branch
    # Cleanup may delete the run's branch, never the user's.
    cleaned = runs.cli("cleanup", "branches", "--yes", "--force", "--json", cwd=git_repo)
    acts = actions_by_target(cleaned.stdout)
    assert acts[str(row.branch)]["result"] == "done", acts
    assert acts[expected]["result"] == "kept" and acts[f"{expected}-2"]["result"] == "kept"
    assert git(git_repo, "rev-parse", expected) == tip


def test_a_branch_below_the_name_makes_it_taken(runs: Runs, git_repo: Path) -> None:
    """A branch `exec-<id>-<slug>/x` (a ref cannot be both a file and a directory) made the
    start fail instead of picking a free name."""
    title = "Nested"
    doc = runs.doc(f"# {title}\nFAKE:events=1\n", title=title)
    expected = smart.branch_name(_next_id(), title)
    git(git_repo, "branch", f"{expected}/x")
    done = runs.cli("claude", "execute", str(doc), "--background", "--worktree", cwd=git_repo)
    assert done.code == 0, done
    row = runs.wait_final(started_id(done.stdout))
    assert row.status.value == "completed" and row.branch == f"{expected}-2", row
    assert git(git_repo, "branch", "--list", f"{expected}/x")


def test_a_failed_worktree_start_never_deletes_a_preexisting_branch(
    runs: Runs, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start that fails after making its worktree undoes only what it made: its own branch
    and worktree, not the user's branch of the same name."""
    title = "Doomed"
    doc = runs.doc(f"# {title}\nFAKE:events=1\n", title=title)
    expected = smart.branch_name(_next_id(), title)
    tip = _users_branch(git_repo, expected)
    real_write = paths.write_private

    def disk_full_at_the_prompt(path: Path, data: bytes, **kwargs: bool) -> None:
        if path.name.endswith(".prompt.md"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data, **kwargs)

    monkeypatch.setattr(paths, "write_private", disk_full_at_the_prompt)
    monkeypatch.chdir(git_repo)
    with pytest.raises(StoreError, match="No space left"):
        runs.service.start_execution(doc, ExecOptions(worktree=True))
    monkeypatch.setattr(paths, "write_private", real_write)
    assert git(git_repo, "rev-parse", expected) == tip
    assert not git(git_repo, "branch", "--list", f"{expected}-2")
    assert set(worktrees(git_repo)) == {str(git_repo)}
    assert runs.service.list_executions(None, None) == []
    assert os.listdir(paths.runs_dir()) == []
    assert not list(paths.logs_dir().iterdir())


def test_one_home_never_deletes_another_homes_branches(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """`cleanup all --yes --force` from one EMDX_HOME deleted finished-run branches and
    worktrees that belonged to two other homes."""
    quick = "# Quick\nFAKE:events=1\n"
    others = []
    for name in ("other-home-a", "other-home-b"):
        env = {"EMDX_HOME": str(tmp_path / name)}
        assert runs.cli("list", env=env).code == 0  # creates and migrates that home
        seed_execution_ids(tmp_path / name / "knowledge.db")
        saved = runs.cli("save", "--title", "Quick", env=env, input=quick)
        assert saved.code == 0, saved
        doc_id = saved.stdout.split("#")[1].split(":")[0]
        started = runs.cli("claude", "execute", doc_id, "--worktree", env=env, cwd=git_repo)
        assert started.code == 0, started
        listed = runs.cli("exec", "list", "--json", env=env)
        [row] = listed.json()
        assert row["status"] == "completed", row
        others.append((str(row["branch"]), str(row["working_dir"])))
    doc = runs.doc(quick, title="Quick")
    mine = runs.wait_final(runs.start(doc, "--worktree", cwd=git_repo))
    user_tip = _users_branch(git_repo, "exec-1-quick")

    done = runs.cli("cleanup", "all", "--yes", "--force", "--older-than", "0s", cwd=git_repo)
    assert done.code == 0, done
    assert not git(git_repo, "branch", "--list", str(mine.branch))
    trees = worktrees(git_repo)
    for branch, workdir in others:
        assert git(git_repo, "branch", "--list", branch), branch
        assert trees.get(workdir) == branch
        assert Path(workdir).is_dir()
    assert git(git_repo, "rev-parse", "exec-1-quick") == user_tip
