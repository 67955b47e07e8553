"""Fixtures for the worktree and cleanup tests (defined in cleanup_helpers)."""

from cleanup_helpers import cleanup_env, git_repo, procs, reaper, runs, svc

__all__ = ["cleanup_env", "git_repo", "procs", "reaper", "runs", "svc"]
