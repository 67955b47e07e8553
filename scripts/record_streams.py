"""Record the stream-json output of real Claude Code versions against the scripted model server.

Regenerates ``tests/fixtures/stream/<version>/<fixture>.jsonl`` and ``summary.json`` (exit code,
stderr, results, system events and the server's view of the requests of every run) for each
version installed side by side under ``--cc-root`` (``npm install --prefix
/work/cc/<version> @anthropic-ai/claude-code@<version>``). Not run by tests; it takes a few
minutes (the "529 until it gives up" scenario waits out the CLI's own ~3 minutes of retries).

Every run gets a fresh cwd, ``CLAUDE_CONFIG_DIR``, ``HOME`` and ``TMPDIR`` under one temporary
root and its own server. The recordings are stdout as printed, except that the temporary paths,
the server's port, uuids, message/tool/request ids, background task ids and the messaging
socket's pid are replaced consistently (first seen, first numbered), so that a re-recording
differs from the last one only where the CLI's behaviour did.

    python scripts/record_streams.py                      # every version under /work/cc
    python scripts/record_streams.py --version 2.1.332 --scenario background_task
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from emdx.testing.model_server import ScriptedModelServer, offline_claude_env  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "stream"
DEFAULT_CC_ROOT = Path("/work/cc")
ALLOWED_TOOLS = "Bash,Write,Read"
RUN_TIMEOUT = 420.0
SIGTERM_WAIT = 30.0

JSON = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One CLI process of a scenario; its stdout becomes ``<fixture>.jsonl``."""

    fixture: str
    prompt: str
    extra: tuple[str, ...] = ()
    # --resume the session of the scenario's previous step.
    resume: bool = False
    # SIGTERM the CLI once this file exists in its cwd (a tool is running).
    sigterm_when: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    script: list[JSON]
    steps: tuple[Step, ...]
    oauth: bool = False
    max_retries: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def bash(command: str, description: str, **extra: Any) -> JSON:
    return {"name": "Bash", "input": {"command": command, "description": description, **extra}}


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "success_multitool",
        "Bash, Write, Read in three turns, then a text answer",
        [
            {
                "text": "I'll start with a shell command.",
                "tool_use": bash("echo hello from bash", "Print a greeting"),
                "usage": {"input_tokens": 2400, "output_tokens": 60},
            },
            {
                "tool_use": {
                    "name": "Write",
                    "input": {"file_path": "{cwd}/notes.txt", "content": "alpha\nbeta\n"},
                },
                "usage": {"input_tokens": 2600, "output_tokens": 70},
            },
            {
                "tool_use": {"name": "Read", "input": {"file_path": "{cwd}/notes.txt"}},
                "usage": {"input_tokens": 2800, "output_tokens": 40},
            },
            {
                "text": "Done: wrote notes.txt and read it back.",
                "usage": {"input_tokens": 3000, "output_tokens": 30},
            },
        ],
        (Step("success_multitool", "Write notes.txt with alpha and beta, then read it back."),),
    ),
    Scenario(
        "multi_block_turn",
        "one API turn of text + 2 Bash calls (3 assistant events, one message.id), "
        "usage with cache tokens, then a text turn",
        [
            {
                "text": "Two quick checks.",
                "tool_use": [bash("echo first", "First check"), bash("echo second", "Second")],
                "usage": {
                    "input_tokens": 1000,
                    "cache_read_input_tokens": 200,
                    "cache_creation_input_tokens": 30,
                    "output_tokens": 50,
                },
            },
            {
                "text": "Both checks passed.",
                "usage": {
                    "input_tokens": 40,
                    "cache_read_input_tokens": 1230,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 10,
                },
            },
        ],
        (Step("multi_block_turn", "Run both checks."),),
    ),
    Scenario(
        "background_task",
        "a Bash call with run_in_background that outlives the first result (sleep 8)",
        [
            {
                "text": "Starting the slow job in the background.",
                "tool_use": bash(
                    "echo started; sleep 8; echo finished > bg.txt",
                    "Slow job",
                    run_in_background=True,
                ),
            },
            {"text": "The job runs in the background; I will report when it is done."},
            {"tool_use": {"name": "Read", "input": {"file_path": "{cwd}/bg.txt"}}},
            {"text": "The background job finished."},
        ],
        (Step("background_task", "Run the slow job in the background."),),
    ),
    Scenario(
        "usage_limit_oauth",
        "subscriber (OAuth) path: one tool turn, then 429 with the unified rate-limit headers "
        "(five_hour rejected, reset in 20 s); then --resume after the limit",
        [
            {"tool_use": bash("echo before the limit", "Some work")},
            {
                "error": {
                    "status": 429,
                    "type": "rate_limit_error",
                    "message": "This request would exceed your account's rate limit. "
                    "Please try again later.",
                    "times": 1,
                    "rate_limit": {"status": "rejected", "claim": "five_hour", "reset_in": 20},
                },
                "text": "Carried on after the limit.",
            },
        ],
        (
            Step("usage_limit_oauth", "Do some work."),
            Step("usage_limit_resumed", "Continue where you stopped.", resume=True),
        ),
        oauth=True,
    ),
    Scenario(
        "overloaded_gives_up",
        "529 overloaded to every request, default retries (10)",
        [{"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}],
        (Step("overloaded_gives_up", "Hello."),),
    ),
    Scenario(
        "overloaded_then_success",
        "529 overloaded to the first 2 requests, then a text answer",
        [
            {
                "error": {
                    "status": 529,
                    "type": "overloaded_error",
                    "message": "Overloaded",
                    "times": 2,
                },
                "text": "Answered after two retries.",
            }
        ],
        (Step("overloaded_then_success", "Hello."),),
    ),
    Scenario(
        "rate_limited",
        "API-key path: 429 rate_limit_error without unified headers, CLAUDE_CODE_MAX_RETRIES=2",
        [{"error": {"status": 429, "type": "rate_limit_error", "message": "Rate limited"}}],
        (Step("rate_limited", "Hello."),),
        max_retries=2,
    ),
    Scenario(
        "server_error",
        "500 api_error to every request, CLAUDE_CODE_MAX_RETRIES=2",
        [{"error": {"status": 500, "type": "api_error", "message": "Internal server error"}}],
        (Step("server_error", "Hello."),),
        max_retries=2,
    ),
    Scenario(
        "api_error_400",
        "400 invalid_request_error to every request",
        [
            {
                "error": {
                    "status": 400,
                    "type": "invalid_request_error",
                    "message": "messages.0.content.0: unexpected block type",
                }
            }
        ],
        (Step("api_error_400", "Summarize this repository."),),
    ),
    Scenario(
        "max_turns",
        "--max-turns 1 with a script of two tool turns",
        [
            {
                "tool_use": bash("echo step one", "First step"),
                "usage": {"input_tokens": 2400, "output_tokens": 50},
            },
            {"tool_use": bash("echo step two", "Second step")},
            {"text": "unreachable"},
        ],
        (Step("max_turns", "Run the two steps.", ("--max-turns", "1")),),
    ),
    Scenario(
        "denied_tool",
        "a WebFetch call (not in --allowedTools, --permission-mode dontAsk), then text",
        [
            {
                "text": "Fetching the page.",
                "tool_use": {
                    "name": "WebFetch",
                    "input": {"url": "https://example.com/", "prompt": "Summarise the page"},
                },
            },
            {"text": "I could not fetch the page: the tool is not allowed."},
        ],
        (Step("denied_tool", "Summarise https://example.com/."),),
    ),
    Scenario(
        "budget_exceeded",
        "--max-budget-usd 0.1 with a first turn that costs more",
        [
            {
                "text": "Step one.",
                "tool_use": bash("echo one > one.txt", "Step one"),
                "usage": {"input_tokens": 50000, "output_tokens": 1000},
            },
            {
                "tool_use": bash("echo two > two.txt", "Step two"),
                "usage": {"input_tokens": 50000, "output_tokens": 1000},
            },
            {"text": "unreachable"},
        ],
        (Step("budget_exceeded", "Run both steps.", ("--max-budget-usd", "0.1")),),
    ),
    Scenario(
        "resume",
        "a run, then --resume of its session in a second process (cost fields)",
        [
            {
                "tool_use": bash("echo first > first.txt", "First run"),
                "usage": {"input_tokens": 1000, "output_tokens": 100},
            },
            {"text": "First run done.", "usage": {"input_tokens": 1100, "output_tokens": 20}},
            {
                "tool_use": bash("cat first.txt", "Second run"),
                "usage": {"input_tokens": 5000, "output_tokens": 300},
            },
            {"text": "Second run done.", "usage": {"input_tokens": 5200, "output_tokens": 30}},
        ],
        (
            Step("resume_first", "Start the work."),
            Step("resume_second", "Continue the work.", resume=True),
        ),
    ),
    Scenario(
        "sigterm_mid_tool",
        "SIGTERM to the CLI while the first of two Bash calls of a text + 2 tool turn runs",
        [
            {
                "text": "Running the slow step, then the quick one.",
                "tool_use": [
                    bash("echo started > started.txt; sleep 60; echo late", "Slow step"),
                    bash("echo quick", "Quick step"),
                ],
                "usage": {
                    "input_tokens": 1000,
                    "cache_read_input_tokens": 200,
                    "cache_creation_input_tokens": 30,
                    "output_tokens": 50,
                },
            },
            {"text": "unreachable"},
        ],
        (Step("sigterm_mid_tool", "Run the two steps.", sigterm_when="started.txt"),),
    ),
)


# -- normalisation --------------------------------------------------------------------------

_UUID_RE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_SERVER_ID_RE = re.compile(r"\b(msg|toolu|req)_01[0-9a-f]{22}\b")
_SOCKET_RE = re.compile(r"cc-socks/\d+\.sock")
_TASK_ID_RE = re.compile(r'"(?:task_id|backgroundTaskId)":"([a-z0-9]+)"')
_RUN_ID_RE = re.compile(r'"(?:run_id|runId)":"([a-z0-9]+-[0-9a-f]+)"')


def _slug(path: str) -> str:
    # How the CLI names a project directory after its cwd.
    return re.sub(r"[^A-Za-z0-9]", "-", path)


class Normaliser:
    """Replaces what differs between two recordings of the same behaviour, consistently across
    the processes of one scenario (a resumed session keeps its id)."""

    def __init__(self, root: Path, port: int) -> None:
        self._fixed: list[tuple[str, str]] = []
        for name, stable in (
            ("cwd", "/work/dir"),
            ("config", "/work/config"),
            ("home", "/work/home"),
            ("tmp", "/work/tmp"),
        ):
            real = str(root / name)
            self._fixed += [(real, stable), (_slug(real), _slug(stable))]
        self._fixed.sort(key=lambda pair: -len(pair[0]))
        self._port = str(port)
        self._ids: dict[str, str] = {}

    def _id(self, kind: str, value: str) -> str:
        if value not in self._ids:
            n = sum(1 for v in self._ids.values() if v.startswith(kind)) + 1
            self._ids[value] = {
                "uuid": f"uuid-{n:04d}",
                "msg": f"msg_01{n:022d}",
                "toolu": f"toolu_01{n:022d}",
                "req": f"req_01{n:022d}",
                "task": f"task{n:04d}",
                "run": f"run-{n:04d}",
            }[kind]
        return self._ids[value]

    def line(self, text: str) -> str:
        for real, stable in self._fixed:
            text = text.replace(real, stable)
        text = text.replace(f"127.0.0.1:{self._port}", "127.0.0.1:8765")
        text = _SOCKET_RE.sub("cc-socks/4242.sock", text)
        for match in _TASK_ID_RE.finditer(text):
            self._id("task", match.group(1))
        for match in _RUN_ID_RE.finditer(text):
            self._id("run", match.group(1))
        for value, stable in sorted(self._ids.items(), key=lambda kv: -len(kv[0])):
            if stable.startswith(("task", "run-")):
                text = re.sub(rf"\b{re.escape(value)}\b", stable, text)
        text = _UUID_RE.sub(lambda m: self._uuid(m.group(0)), text)
        return _SERVER_ID_RE.sub(lambda m: self._id(m.group(1), m.group(0)), text)

    def _uuid(self, value: str) -> str:
        stable = self._id("uuid", value)
        # Keep the uuid shape: parsers may validate it.
        return f"00000000-0000-4000-8000-{int(stable[5:]):012d}"


# -- running ----------------------------------------------------------------------------------


@dataclass
class Recorded:
    fixture: str
    exit_code: int | None
    lines: list[str]
    stderr: str
    seconds: float
    requests: list[JSON]


def _drain(pipe: IO[bytes], into: list[bytes]) -> None:
    into.append(pipe.read())


def _run_step(
    binary: str,
    step: Step,
    cwd: Path,
    env: Mapping[str, str],
    session: str | None,
) -> tuple[int | None, str, str, float]:
    args = [
        binary,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--allowedTools",
        ALLOWED_TOOLS,
        "--permission-mode",
        "dontAsk",
        *step.extra,
    ]
    if step.resume:
        if session is None:
            raise RuntimeError(f"{step.fixture}: nothing to resume")
        args += ["--resume", session]
    started = time.monotonic()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    proc.stdin.write(step.prompt.encode())
    proc.stdin.close()
    try:
        if step.sigterm_when is not None:
            marker = cwd / step.sigterm_when
            deadline = time.monotonic() + RUN_TIMEOUT
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=SIGTERM_WAIT)
        else:
            proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        # The CLI's tool processes run in sessions of their own; what is left of this one goes.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    seconds = time.monotonic() - started
    code = proc.returncode
    return (
        code,
        b"".join(out).decode("utf-8", "replace"),
        b"".join(err).decode("utf-8", "replace"),
        seconds,
    )


def record(version: str, binary: str, scenario: Scenario, scratch: Path) -> list[Recorded]:
    root = Path(tempfile.mkdtemp(prefix=f"{scenario.name}-", dir=scratch))
    for name in ("cwd", "config", "home", "tmp"):
        (root / name).mkdir()
    recorded: list[Recorded] = []
    with ScriptedModelServer(scenario.script) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "CLAUDE"))}
        env.update(
            offline_claude_env(
                server.url,
                str(root / "config"),
                str(root / "home"),
                tmp_dir=str(root / "tmp"),
                oauth=scenario.oauth,
                max_retries=scenario.max_retries,
            )
        )
        env.update(scenario.env)
        normalise = Normaliser(root, server.port)
        session: str | None = None
        for step in scenario.steps:
            seen = len(server.log)
            code, stdout, stderr, seconds = _run_step(binary, step, root / "cwd", env, session)
            lines = [line for line in stdout.splitlines() if line.strip()]
            for line in lines:
                event = json.loads(line)
                if isinstance(event, dict) and event.get("session_id"):
                    session = str(event["session_id"])
            requests = [
                {k: entry[k] for k in ("kind", "method", "path", "status", "turn")}
                for entry in server.log[seen:]
            ]
            recorded.append(
                Recorded(
                    step.fixture,
                    code,
                    [normalise.line(line) for line in lines],
                    normalise.line(stderr),
                    seconds,
                    requests,
                )
            )
    shutil.rmtree(root, ignore_errors=True)
    return recorded


# -- summary ---------------------------------------------------------------------------------

_RESULT_KEYS = (
    "subtype",
    "is_error",
    "api_error_status",
    "api_error",
    "terminal_reason",
    "num_turns",
    "total_cost_usd",
    "result_index",
    "errors",
)


def summarise(run: Recorded, scenario: Scenario) -> JSON:
    events = [json.loads(line) for line in run.lines]
    results = [
        {k: event.get(k) for k in _RESULT_KEYS if k in event}
        for event in events
        if event.get("type") == "result"
    ]
    system: dict[str, int] = {}
    for event in events:
        if event.get("type") == "system":
            key = str(event.get("subtype"))
            system[key] = system.get(key, 0) + 1
        elif event.get("type") not in ("assistant", "user", "result"):
            info = event.get("rate_limit_info")
            key = str(event.get("type"))
            if isinstance(info, dict):
                key += f"({info.get('status')})"
            system[key] = system.get(key, 0) + 1
    return {
        "fixture": run.fixture,
        "scenario": scenario.name,
        "what": scenario.what,
        "exit_code": run.exit_code,
        "seconds": round(run.seconds, 1),
        "events": len(events),
        "results": results,
        "other_events": system,
        "requests": run.requests,
        "stderr": run.stderr.strip()[-2000:],
    }


TABLE_BEGIN = "<!-- recorded table: begin (scripts/record_streams.py writes it) -->"
TABLE_END = "<!-- recorded table: end -->"


def _statuses(requests: Sequence[JSON]) -> str:
    """Main-conversation statuses run-length encoded ("529 ×11"), aux requests after."""
    parts: list[list[Any]] = []
    for entry in requests:
        label = entry["status"] if entry["kind"] == "main" else f"aux {entry['method']}"
        if parts and parts[-1][0] == label:
            parts[-1][1] += 1
        else:
            parts.append([label, 1])
    return ", ".join(f"{label} ×{n}" if n > 1 else str(label) for label, n in parts)


def _result_cell(result: JSON) -> str:
    fields = [
        str(result.get("subtype")),
        "error" if result.get("is_error") else "ok",
    ]
    if result.get("api_error_status") is not None:
        fields.append(str(result["api_error_status"]))
    if result.get("api_error"):
        fields.append(str(result["api_error"]))
    fields.append(str(result.get("terminal_reason", "–")))
    cost = result.get("total_cost_usd")
    shown = f"{cost:.6g}" if isinstance(cost, int | float) else str(cost)
    return "/".join(fields) + f" ({result.get('num_turns')} t, ${shown})"


def _one_line(text: str, width: int = 80) -> str:
    line = " ".join(text.split()).replace("|", "\\|")
    return line if len(line) <= width else line[: width - 1] + "…"


def table(out: Path) -> str:
    """The README table: one row per fixture and version."""
    rows = [
        "| fixture | version | exit | `result` events: subtype/is_error/api status/"
        "api_error/terminal_reason (num_turns, total_cost_usd) | other events | requests "
        "answered | stderr |",
        "|---|---|---|---|---|---|---|",
    ]
    summaries = {
        folder.name: json.loads((folder / "summary.json").read_text())
        for folder in sorted(out.iterdir())
        if (folder / "summary.json").exists()
    }
    fixtures = sorted({name for summary in summaries.values() for name in summary})
    for fixture in fixtures:
        for version, summary in summaries.items():
            if fixture not in summary:
                continue
            entry = summary[fixture]
            results = "; ".join(_result_cell(r) for r in entry["results"]) or "none"
            others = ", ".join(
                f"{k} ×{n}" if n > 1 else k
                for k, n in entry["other_events"].items()
                if k != "init" or n > 1
            )
            rows.append(
                f"| `{fixture}` | {version} | {entry['exit_code']} | {results} | "
                f"{others or '–'} | {_statuses(entry['requests'])} | "
                f"{_one_line(entry['stderr']) or '–'} |"
            )
    return "\n".join(rows)


def write_table(out: Path) -> None:
    readme = out / "README.md"
    if not readme.exists():
        return
    text = readme.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    readme.write_text(f"{head}{TABLE_BEGIN}\n{table(out)}\n{TABLE_END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--cc-root", type=Path, default=DEFAULT_CC_ROOT)
    parser.add_argument(
        "--version",
        action="append",
        help="a version under --cc-root (repeatable); default: every one there",
    )
    parser.add_argument(
        "--bin",
        action="append",
        default=[],
        metavar="VERSION=PATH",
        help="record this claude binary as VERSION (repeatable)",
    )
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--jobs", type=int, default=4, help="runs at the same time")
    parser.add_argument(
        "--table-only", action="store_true", help="only rewrite the README table from summaries"
    )
    args = parser.parse_args(argv)
    if args.table_only:
        write_table(args.out)
        return 0

    binaries: dict[str, str] = {}
    for spec in args.bin:
        version, _, path = spec.partition("=")
        binaries[version] = path
    if not args.bin:
        versions = args.version or sorted(
            p.name for p in args.cc_root.iterdir() if (p / "node_modules/.bin/claude").exists()
        )
        for version in versions:
            binaries[version] = str(args.cc_root / version / "node_modules" / ".bin" / "claude")
    scenarios = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    if not binaries or not scenarios:
        parser.error("nothing to record")

    scratch = Path(tempfile.mkdtemp(prefix="cc-rec-"))
    jobs = [(v, b, s) for v, b in binaries.items() for s in scenarios]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [(job, pool.submit(record, *job, scratch)) for job in jobs]
        for (version, _binary, scenario), future in futures:
            runs = future.result()
            folder = args.out / version
            folder.mkdir(parents=True, exist_ok=True)
            summary_file = folder / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
            for run in runs:
                (folder / f"{run.fixture}.jsonl").write_text("".join(f"{x}\n" for x in run.lines))
                summary[run.fixture] = summarise(run, scenario)
                print(f"{version} {run.fixture}: exit {run.exit_code}, {run.seconds:.1f} s")
            ordered = dict(sorted(summary.items()))
            summary_file.write_text(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    write_table(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
