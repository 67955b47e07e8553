"""The scripted model server driven by the real Claude Code CLI (no network, no real model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testkit import REPO, claude_bin, offline_env

from emdx.testing.model_server import ScriptedModelServer

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 120.0
BASE_ARGS = [
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--allowedTools",
    "Bash,Write,Read",
    "--permission-mode",
    "dontAsk",
]


@dataclass
class Sandbox:
    cwd: Path
    config: Path
    home: Path
    tmp: Path


@dataclass
class Run:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        results = [e for e in self.events if e.get("type") == "result"]
        assert results, f"no result event; stderr:\n{self.stderr}"
        return results[-1]


def make_sandbox(root: Path) -> Sandbox:
    dirs = {name: root / name for name in ("cwd", "config", "home", "tmp")}
    for path in dirs.values():
        path.mkdir(parents=True)
    return Sandbox(**dirs)


def run_claude(
    server: ScriptedModelServer,
    box: Sandbox,
    prompt: str,
    extra: Sequence[str] = (),
) -> Run:
    # Inherited CLAUDE*/ANTHROPIC* variables (a developer's own session, a real key, a model
    # override) must not leak into the run under test.
    env = offline_env(server.url, box.config, box.home, box.tmp)
    proc = subprocess.Popen(
        [claude_bin(), *BASE_ARGS, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=box.cwd,
        env=env,
        # Own process group, so a timeout can kill the CLI and whatever it started.
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(prompt, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"claude did not finish within {RUN_TIMEOUT}s\n{stdout[-2000:]}\n{stderr}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return Run(proc.returncode, events, stderr)


def bash(command: str) -> dict[str, Any]:
    return {"tool_use": {"name": "Bash", "input": {"command": command, "description": "test"}}}


def multitool_script(cwd: Path) -> list[dict[str, Any]]:
    notes = cwd / "notes.txt"
    return [
        {"text": "Listing first.", **bash("echo from-bash > bash.txt && cat bash.txt")},
        {
            "tool_use": {
                "name": "Write",
                "input": {"file_path": str(notes), "content": "line one\nline two\n"},
            }
        },
        {"tool_use": {"name": "Read", "input": {"file_path": str(notes)}}},
        {"text": "All three tools ran.", "usage": {"input_tokens": 1200, "output_tokens": 80}},
    ]


def test_bash_write_read_script_really_runs_tools(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    with ScriptedModelServer(multitool_script(box.cwd)) as server:
        run = run_claude(server, box, "Use the tools.")

    assert run.returncode == 0, run.stderr
    assert (box.cwd / "bash.txt").read_text() == "from-bash\n"
    assert (box.cwd / "notes.txt").read_text() == "line one\nline two\n"
    result = run.result
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "All three tools ran."
    assert result["session_id"]
    assert result["num_turns"] == 4
    assert result["total_cost_usd"] > 0
    # Each tool result went back to the model: the last request carries three of them.
    assert len(server.requests) == 4
    last = server.requests[-1]["messages"]
    results = [
        block
        for message in last
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert len(results) == 3
    assert "line two" in json.dumps(results[-1])
    assert [entry["turn"] for entry in server.log if entry["kind"] == "main"] == [0, 1, 2, 3]


def test_http_400_ends_run_with_error(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script = [{"error": {"status": 400, "type": "invalid_request_error", "message": "nope"}}]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Hello")

    assert run.returncode == 1
    assert run.result["is_error"] is True
    assert run.result["api_error_status"] == 400
    assert "nope" in run.result["result"]


def test_max_turns_exhaustion(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script = [bash("echo one > one.txt"), bash("echo two > two.txt"), {"text": "unreachable"}]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Hello", ["--max-turns", "1"])

    assert run.returncode == 1
    assert run.result["subtype"] == "error_max_turns"
    assert run.result["is_error"] is True
    # The first tool still ran; the CLI stops before asking the model a second time.
    assert (box.cwd / "one.txt").exists()
    assert not (box.cwd / "two.txt").exists()
    assert len(server.requests) == 1


def test_concurrent_runs_share_one_server(tmp_path: Path) -> None:
    boxes = [make_sandbox(tmp_path / f"run{i}") for i in range(2)]
    scripts = {
        "default": [bash("sleep 1; echo default > out.txt"), {"text": "default done"}],
        "other": [bash("sleep 1; echo other > out.txt"), {"text": "other done"}],
    }
    with ScriptedModelServer(scripts=scripts) as server, ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(run_claude, server, boxes[0], "Plain prompt"),
            pool.submit(run_claude, server, boxes[1], "Marked prompt [[script:other]]"),
        ]
        runs = [future.result() for future in futures]

    for run, expected in zip(runs, ["default", "other"], strict=True):
        assert run.returncode == 0, run.stderr
        assert run.result["result"] == f"{expected} done"
    assert (boxes[0].cwd / "out.txt").read_text() == "default\n"
    assert (boxes[1].cwd / "out.txt").read_text() == "other\n"
    assert runs[0].result["session_id"] != runs[1].result["session_id"]
    assert sorted(entry["script"] for entry in server.log) == ["default"] * 2 + ["other"] * 2


def test_resume_continues_script_with_history(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script = [
        bash("echo first > first.txt"),
        {"text": "first run done"},
        bash("cat first.txt"),
        {"text": "second run done"},
    ]
    with ScriptedModelServer(scripts={"resumable": script}) as server:
        first = run_claude(server, box, "[[script:resumable]] start")
        session = first.result["session_id"]
        second = run_claude(server, box, "continue", ["--resume", session])

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert second.result["result"] == "second run done"
    assert second.result["session_id"] == session
    # The resumed run's first request carried the whole first session (2 assistant turns),
    # and the marker in the original first message still selected the named script.
    resumed = server.requests[2]["messages"]
    assert sum(1 for m in resumed if m["role"] == "assistant") == 2
    assert "first run done" in json.dumps(resumed)
    assert [entry["script"] for entry in server.log] == ["resumable"] * 4


def test_auxiliary_requests_do_not_consume_turns() -> None:
    with ScriptedModelServer([{"text": "scripted"}]) as server:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            request = urllib.request.Request(
                server.url + path,
                data=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]

        messages = [{"role": "user", "content": "hi"}]
        aux = post("/v1/messages", {"model": "m", "max_tokens": 1, "messages": messages})
        count = post("/v1/messages/count_tokens", {"model": "m", "messages": messages})
        main = post(
            "/v1/messages",
            {"model": "m", "messages": messages, "tools": [{"name": "Bash", "input_schema": {}}]},
        )

        assert aux["content"][0]["type"] == "text"
        assert count["input_tokens"] > 0
        assert main["content"] == [{"type": "text", "text": "scripted"}]
        assert main["model"] == "m"
        assert len(server.requests) == 1
        assert [a["path"] for a in server.aux_requests] == [
            "/v1/messages",
            "/v1/messages/count_tokens",
        ]


def test_standalone_server_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    script_file = tmp_path / "script.json"
    script_file.write_text(json.dumps({"default": [{"text": "hi"}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emdx.testing.model_server", "--script", str(script_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("MODEL_SERVER_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/v1/models", timeout=10)
        assert info.value.code == 404
        info.value.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
