"""No git command emdx runs executes configuration an agent planted (DESIGN §8).

The agent of a `--worktree` run can write its worktree (and, through it, the configuration it
shares with the user's repository). Every emdx command that later looks at that worktree —
`cleanup branches` (also `--dry-run`), `cleanup all`, `cleanup dirs`, the next start — must not
run what it planted: `core.fsmonitor` in a git directory of its own that `.git` points to, or in
the shared config, or a filter driver.
"""

from __future__ import annotations

import os
from pathlib import Path

from escape_helpers import (
    Runs,
    actions_by_target,
    cleanup_env,
    git,
    git_repo,
    make_old,
    plant_evil_gitdir,
    procs,
    reaper,
    runs,
    svc,
    tree_digest,
)

__all__ = ["cleanup_env", "git_repo", "procs", "reaper", "runs", "svc"]


def _worktree_run(runs: Runs, repo: Path) -> tuple[int, Path, str]:
    doc = runs.doc("# Quick\nFAKE:events=1\n", title="Quick")
    row = runs.wait_final(runs.start(doc, "--worktree", cwd=repo))
    assert row.status.value == "completed", row
    return row.id, Path(str(row.working_dir)), str(row.branch)


def _every_cleanup(runs: Runs, repo: Path) -> None:
    for args in (
        ("cleanup", "branches", "--dry-run"),
        ("cleanup", "all", "--dry-run"),
        ("cleanup", "branches", "--yes"),
        ("cleanup", "branches", "--yes", "--force"),
        ("cleanup", "all", "--yes", "--older-than", "0s"),
    ):
        done = runs.cli(*args, cwd=repo)
        assert done.code == 0, done


def test_a_planted_gitdir_with_fsmonitor_never_runs(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """`.git` → `gitdir: evil`, `evil/config` with `core.fsmonitor = "<command>"`: every later
    `cleanup branches --dry-run` and `cleanup all` ran the command from the user's shell."""
    marker = tmp_path / "PWNED-fsmonitor"
    _, workdir, branch = _worktree_run(runs, git_repo)
    plant_evil_gitdir(workdir, marker)
    plan = runs.cli("cleanup", "branches", "--dry-run", "--json", cwd=git_repo)
    assert plan.code == 0, plan
    action = actions_by_target(plan.stdout)[branch]
    # Its .git no longer points into the repository: not trusted, so possibly dirty.
    assert action["result"] == "kept" and "does not point into" in action["detail"], action
    _every_cleanup(runs, git_repo)
    assert not marker.exists()
    # `cleanup all` removed the directory (git never ran in it), then the branch.
    assert not os.path.lexists(workdir)
    assert not git(git_repo, "branch", "--list", branch)


def test_fsmonitor_planted_in_the_shared_config_never_runs(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """From its worktree the agent can `git config core.fsmonitor …`, which lands in the
    repository's own config; emdx's git calls override it."""
    marker = tmp_path / "PWNED-shared"
    _, workdir, _ = _worktree_run(runs, git_repo)
    git(workdir, "config", "core.fsmonitor", f"touch {marker}; true")
    (workdir / "README.md").write_text("changed by the agent\n")
    _every_cleanup(runs, git_repo)
    again = runs.doc("# Next\nFAKE:events=1\n", title="Next")
    row = runs.wait_final(runs.start(again, "--worktree", cwd=git_repo))
    assert row.status.value == "completed", row
    assert not marker.exists()


def test_a_filter_driver_planted_by_the_agent_never_runs(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """A `clean` filter (config shared with the repository + `.gitattributes` in the worktree)
    runs on `git status` for every modified file: emdx's dirty check must not run it."""
    marker = tmp_path / "PWNED-filter"
    _, workdir, branch = _worktree_run(runs, git_repo)
    git(workdir, "config", "filter.evil.clean", f"sh -c 'touch {marker}; cat'")
    (workdir / ".gitattributes").write_text("* filter=evil\n")
    # Same size as committed ("hello\n"): git must hash the file, through the filter, to know.
    (workdir / "README.md").write_text("HELLO\n")
    make_old(workdir / "README.md", 3600)
    plan = runs.cli("cleanup", "branches", "--dry-run", "--json", cwd=git_repo)
    assert plan.code == 0, plan
    action = actions_by_target(plan.stdout)[branch]
    assert action["result"] == "kept" and "uncommitted" in action["detail"], action
    _every_cleanup(runs, git_repo)
    assert not marker.exists()


def test_a_hook_planted_in_the_repository_never_runs(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """A `post-checkout` hook written into the shared `.git/hooks` (the agent can reach it)
    would run on the next `git worktree add` of a start."""
    marker = tmp_path / "PWNED-hook"
    _worktree_run(runs, git_repo)
    hook = git_repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    victim = tree_digest(git_repo / ".git" / "hooks")
    _worktree_run(runs, git_repo)
    _every_cleanup(runs, git_repo)
    assert not marker.exists()
    assert tree_digest(git_repo / ".git" / "hooks") == victim
