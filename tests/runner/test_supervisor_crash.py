"""A bug inside the supervisor must still end the run: agent killed, row failed and explained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runner_helpers import Runs

from emdx import paths, runlog

# Loaded by every Python process started with this PYTHONPATH; only the supervisor (the one
# process that imports emdx's stream parser) is affected, and only when the variable is set.
SITECUSTOMIZE = """
import os
if os.environ.get("EMDX_TEST_BREAK_PARSER"):
    try:
        import emdx.agent.progress as progress
    except ImportError:
        pass
    else:
        def broken(self, event):
            raise RuntimeError("injected parser bug")
        progress.Progress.update = broken
"""


def test_unexpected_supervisor_error_fails_the_run_and_kills_the_agent(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("EMDX_TEST_BREAK_PARSER", "1")
    pidfile = runs.pidfile()
    doc = runs.doc(f"# crash\nFAKE:pidfile={pidfile}\nFAKE:setsid-child\nFAKE:sleep=60\n")
    execution = runs.service.start_execution(doc)

    row = runs.wait_final(execution.id, timeout=30)
    assert (row.status.value, row.exit_code, row.reason) == ("failed", 1, "supervisor_error")
    assert row.agent_pid is not None  # the agent had started: the error hit while it ran
    # The agent (by recorded identity) and its setsid child (by the run's marker) are gone.
    runs.assert_all_gone(row)
    assert row.log_file
    messages = [str(e["message"]) for e in runlog.read_entries(Path(row.log_file))]
    assert any("supervisor error: RuntimeError: injected parser bug" in m for m in messages)
    stderr = paths.runner_err_path(str(row.run_key)).read_text()
    assert "injected parser bug" in stderr  # the traceback is kept for the bug report
