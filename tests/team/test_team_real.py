"""Team mode end to end with the real Claude Code CLI: two worker hosts run it against the
scripted model server, a third host submits, follows and reads the outcome."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from team_helpers import Team
from testkit import claude_bin

from emdx.testing.model_server import ScriptedModelServer, offline_claude_env

pytestmark = pytest.mark.integration

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "work": [
        {"tool_use": {"name": "Bash", "input": {"command": "echo done > out.txt"}}},
        {"text": "wrote out.txt", "usage": {"input_tokens": 120, "output_tokens": 8}},
    ]
}


def test_the_real_cli_runs_on_two_worker_hosts(team: Team, tmp_path: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="emdx-team-"))  # short: the CLI's socket path
    server = ScriptedModelServer(scripts=SCRIPTS).start()
    try:
        config = tmp_path / "claude-config"
        config.mkdir(exist_ok=True)
        team.base_env = {
            k: v for k, v in team.base_env.items() if not k.startswith(("ANTHROPIC", "CLAUDE"))
        }
        team.base_env.update(
            offline_claude_env(server.url, str(config), team.base_env["HOME"], tmp_dir=str(scratch))
        )
        team.base_env["EMDX_CLAUDE_BIN"] = claude_bin()
        team.start_worker("alpha")
        team.start_worker("beta")
        doc = team.save("laptop", "[[script:work]] write the file", "Team work")
        ids = [team.submit("laptop", doc) for _ in range(4)]
        rows = [team.wait_final(i, 120) for i in ids]
        for row in rows:
            assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success"), (
                row,
                team.events(row.id),
            )
            assert row.claude_code_version and row.session_id and row.num_turns
            assert row.working_dir and (Path(row.working_dir) / "out.txt").read_text() == "done\n"
        assert {r.host for r in rows} == {"alpha", "beta"}, [r.host for r in rows]
        shown = team.cli("laptop", "exec", "show", str(ids[0]))
        assert shown.code == 0 and "wrote out.txt" in shown.stdout, shown.stdout
        logs = team.cli("laptop", "exec", "logs", str(ids[-1]))
        assert "echo done > out.txt" in logs.stdout, logs.stdout
    finally:
        server.stop()
        team.stop()
        shutil.rmtree(scratch, ignore_errors=True)
