"""Fixtures for the supervisor tests (defined in runner_helpers, importable by the tests)."""

from runner_helpers import reap_leftovers, runner_env, runs, service

__all__ = ["reap_leftovers", "runner_env", "runs", "service"]
