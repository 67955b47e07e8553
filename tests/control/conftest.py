"""Fixtures for the execution control tests (defined in control_helpers, importable by tests)."""

from control_helpers import control_env, ctl

__all__ = ["control_env", "ctl"]
