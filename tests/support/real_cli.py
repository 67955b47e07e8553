"""The real Claude Code CLI against the scripted model server, driven through `python -m emdx`:
the environment every integration test runs in and the helpers that read what emdx recorded."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testkit import (
    Cli,
    assert_gone,
    kill_test_processes,
    recorded_identities,
    run_processes,
    started_id,
    use_offline_claude,
    wait_until,
)

from emdx.models import Execution
from emdx.store import open_store
from emdx.testing.model_server import ScriptedModelServer

RUN_DEADLINE_S = 90.0


@dataclass
class Env:
    server: ScriptedModelServer
    emdx_home: Path
    workdir: Path


def _all_rows(emdx_home: Path) -> list[Execution]:
    if not (emdx_home / "knowledge.db").exists():
        return []
    with contextlib.closing(open_store(emdx_home / "knowledge.db")) as store:
        return store.executions.list_executions(None, None)


@contextlib.contextmanager
def real_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_env: Path,
    scripts: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    oauth: bool = False,
    max_retries: int | None = None,
) -> Iterator[Env]:
    """A scripted server playing `scripts`, the real CLI as emdx's agent (the supervisors
    inherit this environment); when the test ends, every process it started is killed."""
    # Short: the CLI puts a unix socket under TMPDIR, and socket paths are limited to 108 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="emdx-it-"))
    server = ScriptedModelServer(scripts=scripts).start()
    try:
        config = tmp_path / "claude-config"
        config.mkdir()
        use_offline_claude(monkeypatch, server.url, config, tmp_path / "home", scratch,
                           oauth=oauth, max_retries=max_retries)  # fmt: skip
        monkeypatch.setenv("EMDX_HEARTBEAT_SECONDS", "1")
        monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "3")
        monkeypatch.delenv("EMDX_MAX_PARALLEL", raising=False)
        monkeypatch.delenv("EMDX_EXECUTION_ID", raising=False)
        # Commands run from a directory outside any git repository: a gameplan started inside
        # a repo gets a worktree and a branch there, and this repository must not get them.
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
        yield Env(server, isolated_env, tmp_path)
    finally:
        try:
            kill_test_processes(isolated_env, recorded_identities(lambda: _all_rows(isolated_env)))
        finally:
            server.stop()
            shutil.rmtree(scratch, ignore_errors=True)


# --- helpers -----------------------------------------------------------------------------


def save_doc(cli: Cli, content: str, title: str, tags: str | None = None) -> int:
    args = ["save", "--title", title, "--project", "it"]
    if tags:
        args += ["--tags", tags]
    result = cli(*args, input=content)
    assert result.code == 0, result.stderr
    # "saved #N: title ..."
    return int(result.stdout.split("#", 1)[1].split(":", 1)[0])


def show(cli: Cli, execution_id: int) -> dict[str, Any]:
    result = cli("exec", "show", str(execution_id), "--json")
    assert result.code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def doc_json(cli: Cli, doc_id: int) -> dict[str, Any]:
    result = cli("view", str(doc_id), "--json")
    assert result.code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def list_json(cli: Cli) -> list[dict[str, Any]]:
    result = cli("exec", "list", "--json", "--limit", "500")
    assert result.code == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def raw_log(cli: Cli, execution_id: int) -> list[dict[str, Any]]:
    result = cli("exec", "logs", str(execution_id), "--raw")
    assert result.code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def start_background(cli: Cli, doc_id: int, *extra: str) -> int:
    result = cli("claude", "execute", str(doc_id), "--background", *extra)
    assert result.code == 0, result.stderr
    return started_id(result.stdout)


def wait_final(cli: Cli, execution_id: int, deadline_s: float = RUN_DEADLINE_S) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        row = show(cli, execution_id)
        if row["status"] in ("completed", "failed", "killed"):
            return row
        if time.monotonic() > deadline:
            pytest.fail(
                f"execution {execution_id} still {row['status']} after {deadline_s}s\n"
                + diagnose(row)
            )
        time.sleep(0.2)


def diagnose(row: dict[str, Any]) -> str:
    """The row, the supervisor's stderr and the log tail, for assertion messages."""
    parts = [json.dumps(row, indent=1)]
    if row.get("log_file"):
        log = Path(row["log_file"])
        err = log.with_name(f"{row['run_key']}.runner.err")
        for path in (err, log):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text()[-4000:]}")
    return "\n".join(parts)


def assert_outcome(row: dict[str, Any], status: str, exit_code: int | None, reason: str) -> None:
    got = (row["status"], row["exit_code"], row["reason"])
    assert got == (status, exit_code, reason), diagnose(row)


def assert_run_processes_gone(env: Env, row: dict[str, Any], deadline_s: float = 15.0) -> None:
    identities = []
    if row["agent_pid"]:
        identities.append((row["agent_pid"], row["agent_started_at"]))
    if row["pid"]:
        identities.append((row["pid"], row["pid_started_at"]))
    assert_gone(identities, deadline_s, f" of run {row['id']}")
    wait_until(
        lambda: not run_processes(row["id"], env.emdx_home),
        deadline_s,
        message=lambda: f"marked processes {run_processes(row['id'], env.emdx_home)} to exit",
    )


def iso(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def tool_uses(entries: list[dict[str, Any]]) -> list[str]:
    names = []
    for entry in entries:
        raw = entry.get("raw")
        if not isinstance(raw, dict) or raw.get("type") != "assistant":
            continue
        for block in raw.get("message", {}).get("content", []):
            if block.get("type") == "tool_use":
                names.append(block["name"])
    return names
