"""The scripted model server driven by the real Claude Code CLI (no network, no real model)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testkit import REPO, claude_bin, offline_env, wait_until

from emdx.testing.model_server import OFFLINE_OAUTH_TOKEN, ScriptedModelServer

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
        results = self.results
        assert results, f"no result event; stderr:\n{self.stderr}"
        return results[-1]

    @property
    def results(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == "result"]

    def system(self, subtype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == "system" and e.get("subtype") == subtype]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


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
    *,
    oauth: bool = False,
    max_retries: int | None = None,
) -> Run:
    # Inherited CLAUDE*/ANTHROPIC* variables (a developer's own session, a real key, a model
    # override) must not leak into the run under test.
    env = offline_env(
        server.url, box.config, box.home, box.tmp, oauth=oauth, max_retries=max_retries
    )
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
                answer: dict[str, Any] = json.loads(response.read())
                return answer

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


# --- script features for issue 12: errors that pass, headers, limits, background tasks ------


def main_statuses(server: ScriptedModelServer) -> list[int]:
    return [entry["status"] for entry in server.log if entry["kind"] == "main"]


def overloaded(times: int | None = None, **headers: str) -> dict[str, Any]:
    error: dict[str, Any] = {"status": 529, "type": "overloaded_error", "message": "Overloaded"}
    if times is not None:
        error["times"] = times
    if headers:
        error["headers"] = headers
    return error


def test_529_twice_then_success_is_retried_by_the_cli(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script = [{"error": overloaded(times=2), "text": "answered after the retries"}]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Hello")

    assert run.returncode == 0, run.stderr
    assert run.result["is_error"] is False
    assert run.result["result"] == "answered after the retries"
    retries = run.system("api_retry")
    assert [(r["attempt"], r["error_status"], r["error"]) for r in retries] == [
        (1, 529, "overloaded"),
        (2, 529, "overloaded"),
    ]
    assert main_statuses(server) == [529, 529, 200]


def test_529_always_ends_when_the_cli_gives_up(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    with ScriptedModelServer([{"error": overloaded()}]) as server:
        run = run_claude(server, box, "Hello", max_retries=1)

    assert run.returncode == 1
    assert [r["max_retries"] for r in run.system("api_retry")] == [1]
    result = run.result
    assert (result["subtype"], result["is_error"]) == ("success", True)
    assert result["api_error_status"] == 529
    assert result["terminal_reason"] == "api_error"
    assert main_statuses(server) == [529, 529]


def test_error_headers_reach_the_cli(tmp_path: Path) -> None:
    # A retry-after longer than the CLI's own first backoff (about 0.5 s) sets the wait.
    box = make_sandbox(tmp_path / "cc")
    script = [{"error": overloaded(times=1, **{"retry-after": "2"}), "text": "ok"}]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Hello")

    assert run.returncode == 0, run.stderr
    [retry] = run.system("api_retry")
    assert retry["retry_delay_ms"] >= 2000
    assert main_statuses(server) == [529, 200]


def test_usage_limit_on_the_subscriber_path_then_resume(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script = [
        {
            "error": {
                "status": 429,
                "type": "rate_limit_error",
                "message": "This request would exceed your account's rate limit.",
                "times": 1,
                "rate_limit": {"status": "rejected", "claim": "five_hour", "reset_in": 20},
            },
            "text": "carried on after the limit",
        }
    ]
    with ScriptedModelServer(script) as server:
        before = time.time()
        limited = run_claude(server, box, "Start the work.", oauth=True)
        after = time.time()
        resumed = run_claude(
            server,
            box,
            "Continue.",
            ["--resume", limited.result["session_id"]],
            oauth=True,
        )

    assert limited.returncode == 1, limited.stderr
    [event] = limited.of_type("rate_limit_event")
    info = event["rate_limit_info"]
    assert (info["status"], info["rateLimitType"]) == ("rejected", "five_hour")
    assert before + 20 - 1 <= info["resetsAt"] <= after + 20 + 1
    result = limited.result
    assert result["is_error"] is True
    assert result["api_error_status"] == 429
    assert result["api_error"] == "usage_limit_reached"
    assert "limit" in result["result"]
    # A usage limit is not retried; the resumed run asked for the same turn again and got it,
    # with the first run's prompt in its history.
    assert main_statuses(server) == [429, 200]
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.result["result"] == "carried on after the limit"
    assert "Start the work." in json.dumps(server.requests[-1]["messages"])
    for entry in server.log:
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        assert headers["authorization"] == f"Bearer {OFFLINE_OAUTH_TOKEN}"
        assert "x-api-key" not in headers


def test_rate_limit_headers_on_a_successful_turn(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script = [
        {
            "text": "fine",
            "rate_limit": {"status": "allowed_warning", "reset_in": 3600, "utilization": 0.9},
        }
    ]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Hello", oauth=True)

    assert run.returncode == 0, run.stderr
    [event] = run.of_type("rate_limit_event")
    windows = event["rate_limit_info"]["unifiedWindows"]
    assert windows["five_hour"]["status"] == "allowed_warning"
    assert windows["five_hour"]["utilization"] == 0.9


def test_background_task_outlives_the_first_result(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script: list[dict[str, Any]] = [
        {
            "text": "Starting it in the background.",
            "tool_use": {
                "name": "Bash",
                "input": {
                    "command": "echo started; sleep 2; echo finished > bg.txt",
                    "description": "slow job",
                    "run_in_background": True,
                },
            },
        },
        {"text": "It runs in the background."},
        {"text": "The background job finished."},
    ]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Run the slow job in the background.")

    assert run.returncode == 0, run.stderr
    assert (box.cwd / "bg.txt").read_text() == "finished\n"
    [started] = run.system("task_started")
    assert started["is_backgrounded"] is True
    [notification] = run.system("task_notification")
    assert notification["status"] == "completed"
    assert [len(e["tasks"]) for e in run.system("background_tasks_changed")] == [1, 0]
    results = run.results
    assert [r["result_index"] for r in results] == [0, 1]
    assert [r["result"] for r in results] == [
        "It runs in the background.",
        "The background job finished.",
    ]
    # The second result came after the task: the CLI waited for it and took another turn.
    kinds = [(e["type"], e.get("subtype")) for e in run.events]
    assert kinds.index(("system", "task_notification")) < len(kinds) - 1
    assert kinds[-1] == ("result", "success")
    assert main_statuses(server) == [200, 200, 200]


def test_denied_tool_is_reported(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    fetch = {"name": "WebFetch", "input": {"url": "https://example.com/", "prompt": "Sum up"}}
    script: list[dict[str, Any]] = [{"tool_use": fetch}, {"text": "The tool was not allowed."}]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Fetch the page.")

    assert run.returncode == 0, run.stderr
    [denial] = run.result["permission_denials"]
    assert denial["tool_name"] == "WebFetch"
    assert denial["tool_input"] == fetch["input"]
    [event] = run.system("permission_denied")
    assert event["tool_name"] == "WebFetch"
    assert len(server.requests) == 2


def test_budget_exceeded(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    script: list[dict[str, Any]] = [
        {
            "tool_use": {"name": "Bash", "input": {"command": "echo one", "description": "1"}},
            "usage": {"input_tokens": 50000, "output_tokens": 1000},
        },
        {"text": "unreachable"},
    ]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Work.", ["--max-budget-usd", "0.1"])

    assert run.returncode == 1
    result = run.result
    assert (result["subtype"], result["is_error"]) == ("error_max_budget_usd", True)
    assert result["total_cost_usd"] > 0.1
    assert result["errors"] == ["Reached maximum budget ($0.1)"]
    assert len(server.requests) == 1


def test_multi_block_turn_with_cache_usage(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "cc")
    usage = {
        "input_tokens": 1000,
        "cache_read_input_tokens": 200,
        "cache_creation_input_tokens": 30,
        "output_tokens": 50,
    }
    script = [
        {
            "text": "Two checks.",
            "tool_use": [
                bash("echo one > one.txt")["tool_use"],
                bash("echo two > two.txt")["tool_use"],
            ],
            "usage": usage,
        },
        {"text": "Both ran.", "usage": {"input_tokens": 0, "output_tokens": 0}},
    ]
    with ScriptedModelServer(script) as server:
        run = run_claude(server, box, "Run both checks.")

    assert run.returncode == 0, run.stderr
    assert (box.cwd / "one.txt").exists() and (box.cwd / "two.txt").exists()
    first = run.of_type("assistant")[:3]
    assert [block["type"] for e in first for block in e["message"]["content"]] == [
        "text",
        "tool_use",
        "tool_use",
    ]
    assert len({e["message"]["id"] for e in first}) == 1
    # Each of the three carries the provisional usage of message_start.
    assert all(e["message"]["usage"] == {**usage, "output_tokens": 1} for e in first)
    final = run.result["usage"]
    assert (final["input_tokens"], final["output_tokens"]) == (1000, 50)
    assert (final["cache_read_input_tokens"], final["cache_creation_input_tokens"]) == (200, 30)
    assert len(server.requests) == 2


# --- the server alone -----------------------------------------------------------------------


def post(
    server: ScriptedModelServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(
        server.url + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), json.loads(error.read())


def conversation(*messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": list(messages),
        "tools": [{"name": "Bash", "input_schema": {}}],
    }


def test_error_times_count_per_session() -> None:
    script = [{"error": overloaded(times=1), "text": "second try"}]
    body = conversation({"role": "user", "content": "hi"})
    with ScriptedModelServer(script) as server:
        answers = [
            post(server, body, {"x-claude-code-session-id": session})
            for session in ("one", "one", "two")
        ]

    assert [status for status, _, _ in answers] == [529, 200, 529]
    assert answers[1][2]["content"] == [{"type": "text", "text": "second try"}]


def test_rate_limit_and_headers_are_sent_with_success_and_error() -> None:
    script: list[dict[str, Any]] = [
        {"text": "ok", "headers": {"x-extra": "1"}, "rate_limit": {"status": "allowed"}},
        {
            "error": {
                "status": 429,
                "type": "rate_limit_error",
                "message": "limit",
                "times": 1,
                "rate_limit": {"resets_at": 1900000000, "claim": "seven_day"},
            },
            "headers": {"retry-after": "7"},
            "text": "after the limit",
        },
    ]
    first = conversation({"role": "user", "content": "hi"})
    second = conversation(
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": "more"},
    )
    with ScriptedModelServer(script) as server:
        ok_status, ok_headers, _ = post(server, first)
        limit_status, limit_headers, limit_body = post(server, second)
        after_status, after_headers, _ = post(server, second)

    ok = {k.lower(): v for k, v in ok_headers.items()}
    assert ok_status == 200
    assert ok["x-extra"] == "1"
    assert ok["anthropic-ratelimit-unified-status"] == "allowed"
    assert "retry-after" not in ok
    limit = {k.lower(): v for k, v in limit_headers.items()}
    assert limit_status == 429
    assert limit_body["error"]["type"] == "rate_limit_error"
    assert limit["anthropic-ratelimit-unified-status"] == "rejected"
    assert limit["anthropic-ratelimit-unified-reset"] == "1900000000"
    assert limit["anthropic-ratelimit-unified-representative-claim"] == "seven_day"
    assert limit["anthropic-ratelimit-unified-7d-status"] == "rejected"
    assert limit["anthropic-ratelimit-unified-overage-status"] == "rejected"
    assert limit["retry-after"] == "7"
    # The error's rate limit went with the error only; the turn's headers with both answers.
    after = {k.lower(): v for k, v in after_headers.items()}
    assert after_status == 200
    assert "anthropic-ratelimit-unified-status" not in after
    assert after["retry-after"] == "7"
    assert [entry["status"] for entry in server.log] == [200, 429, 200]


def test_resume_filler_is_not_a_model_turn() -> None:
    # What 2.1.197 sends when it resumes a session whose last prompt got no answer.
    body = conversation(
        {"role": "user", "content": "start"},
        {"role": "assistant", "content": [{"type": "text", "text": "No response requested."}]},
        {"role": "user", "content": "continue"},
    )
    with ScriptedModelServer([{"text": "first turn"}, {"text": "second turn"}]) as server:
        _, _, answer = post(server, body)

    assert answer["content"] == [{"type": "text", "text": "first turn"}]
    assert [entry["turn"] for entry in server.log] == [0]


@pytest.mark.parametrize(
    "turn",
    [
        {"error": {"status": 529}, "text": "never sent"},
        {"error": {"status": 529, "times": "2"}},
        {"error": {"status": 529, "retries": 2}},
        {"text": "x", "rate_limit": {"reset_in": 1, "resets_at": 2}},
        {"text": "x", "rate_limit": {"status": "exhausted"}},
        {"text": "x", "rate_limit": {"claim": "daily"}},
        {"text": "x", "headers": {"x-list": ["a"]}},
    ],
)
def test_bad_turns_are_refused_when_the_server_is_made(turn: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ScriptedModelServer([turn])


def test_a_reset_connection_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    with ScriptedModelServer([{"text": "hi"}]) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\n")
            wait_until(lambda: server.connections == 1, 10, message="connection accepted")
            # Linger 0: close() sends RST, as a CLI dropping a keep-alive connection does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The handler has finished once the server no longer tracks the connection.
        wait_until(lambda: server.connections == 0, 10, message="handler to finish")
        status, _, _ = post(server, conversation({"role": "user", "content": "hi"}))

    assert status == 200
    assert "Traceback" not in capfd.readouterr().err
