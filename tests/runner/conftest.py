"""Fixtures for the supervisor tests (defined in runner_helpers and testkit, importable by the
tests)."""

from runner_helpers import runner_env, runs
from testkit import reap_leftovers, service

__all__ = ["reap_leftovers", "runner_env", "runs", "service"]
