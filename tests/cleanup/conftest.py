"""Fixtures for the worktree and cleanup tests (defined in cleanup_helpers and testkit)."""

from cleanup_helpers import cleanup_env, git_repo, procs, runs
from testkit import reap_leftovers as reaper
from testkit import service as svc

__all__ = ["cleanup_env", "git_repo", "procs", "reaper", "runs", "svc"]
