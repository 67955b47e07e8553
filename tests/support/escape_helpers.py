"""Helpers for the attacks on cleanup, git and branches: victim trees, planted git dirs.

The worktree and cleanup suite's fixtures (real repositories, the fake agent, runs through the
CLI) are reused from cleanup_helpers; a test plays the hostile agent by leaving files behind in
its run's directory after the run, which is what an agent's tools would have done.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from cleanup_helpers import (
    Runs,
    cleanup_env,
    commit_file,
    git,
    git_repo,
    parse_json,
    procs,
    runs,
    worktrees,
)
from testkit import reap_leftovers as reaper
from testkit import service as svc

__all__ = [
    "Runs",
    "cleanup_env",
    "commit_file",
    "git",
    "git_repo",
    "parse_json",
    "procs",
    "reaper",
    "runs",
    "svc",
    "worktrees",
]

Digest = dict[str, tuple[Any, ...]]


def tree_digest(root: Path) -> Digest:
    """Every entry under `root` (and `root` itself): kind, mode, and content hash or link
    target, never following a link. Equal digests mean byte-identical trees."""
    found: Digest = {}

    def record(path: Path) -> None:
        info = os.lstat(path)
        rel = str(path.relative_to(root)) if path != root else "."
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[rel] = ("dir", mode)
        else:
            found[rel] = ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest())

    record(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            record(Path(dirpath) / name)
    return found


def victim_tree(root: Path) -> Path:
    """A directory outside EMDX_HOME with files, a subdirectory and an old mtime (so that an
    "orphan older than 5 minutes" rule would apply to it)."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "precious.txt").write_text("the user's work\n")
    (root / "sub" / "notes.md").write_text("# notes\n")
    (root / "sub" / "deeper" / "data.bin").write_bytes(os.urandom(256))
    os.chmod(root / "sub", 0o755)
    make_old(root)
    return root


def make_old(path: Path, seconds: float = 30 * 86400.0) -> None:
    """Set the mtime of `path` (not of what a link points to) `seconds` into the past."""
    import time

    moment = time.time() - seconds
    os.utime(path, (moment, moment), follow_symlinks=False)


def victim_worktree(tmp_path: Path) -> tuple[Path, Path]:
    """Another repository of the user's with a linked worktree holding uncommitted work:
    (repository, worktree)."""
    repo = tmp_path / "victim-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Victim")
    git(repo, "config", "user.email", "victim@example.invalid")
    commit_file(repo, "README.md", "victim\n", "initial")
    tree = tmp_path / "victim-worktree"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(tree))
    (tree / "uncommitted.txt").write_text("not committed anywhere\n")
    make_old(tree)
    return repo, tree


def plant_evil_gitdir(worktree: Path, marker: Path) -> None:
    """What a hostile agent leaves in its worktree: a git directory of its own whose config
    runs a command (`core.fsmonitor`) and a `.git` file pointing at it."""
    evil = worktree / "evil"
    (evil / "objects").mkdir(parents=True)
    (evil / "refs").mkdir()
    (evil / "HEAD").write_text("ref: refs/heads/main\n")
    (evil / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
        f'\tfsmonitor = "touch {marker}; true"\n'
    )
    dot_git = worktree / ".git"
    dot_git.unlink()
    dot_git.write_text("gitdir: evil\n")


def actions_by_target(stdout: str) -> dict[str, dict[str, Any]]:
    return {a["target"]: a for a in parse_json(stdout)["actions"]}
