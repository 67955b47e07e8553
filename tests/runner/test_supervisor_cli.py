"""The CLI side of executions: pre-flight, background and foreground runs, Ctrl-C, check-env."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runner_helpers import Runs
from testkit import Cli, read_pidfile, wait_until

from emdx import paths

RENDERED = re.compile(r"^\d\d:\d\d:\d\d \S+ ")


def test_execute_without_claude_creates_nothing(runs: Runs, cli: Cli, tmp_path: Path) -> None:
    doc = runs.doc("# doc\n")
    missing = tmp_path / "nowhere" / "claude"
    for background in (False, True):
        args = ["claude", "execute", str(doc)] + (["--background"] if background else [])
        done = cli(*args, env={"EMDX_CLAUDE_BIN": str(missing)})
        assert done.code == 127, done
        lines = done.stderr.splitlines()
        assert lines and lines[0].startswith("emdx: error: ")
        assert str(missing) in lines[0]
        assert all(line.startswith("  fix: ") for line in lines[1:]), lines
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
    assert runs.service.list_executions(None, None) == []
    assert list(paths.runs_dir().iterdir()) == []
    assert not list(paths.logs_dir().glob("*.prompt.md"))


def test_background_run_outlives_the_cli(runs: Runs, cli: Cli, tmp_path: Path) -> None:
    """The command returns while its agent is still at work (blocked until a file exists):
    the run goes on without it. How fast it returns is bench/run.py's `bench_start`."""
    go = tmp_path / "go"
    doc = runs.doc(f"# background\nFAKE:wait-file={go}\n")
    done = cli("claude", "execute", str(doc), "--background")
    assert done.code == 0, done
    match = re.search(r"execution #(\d+)", done.stdout)
    assert match, done.stdout
    execution_id = int(match.group(1))
    assert f"emdx exec show {execution_id} --follow" in done.stdout
    row = runs.get(execution_id)
    assert row.status.value == "running"  # the CLI is gone, the run is not
    assert row.pid and os.getsid(row.pid) == row.pid  # its own session
    go.touch()
    row = runs.wait_final(execution_id)
    assert (row.status.value, row.exit_code, row.reason) == ("completed", 0, "success")
    runs.assert_all_gone(row)


def test_foreground_exit_codes(runs: Runs, cli: Cli) -> None:
    cases = {
        "success": (["# ok\nFAKE:events=2\n"], 0, "completed"),
        "error": (["# error\nFAKE:error-result\n"], 1, "failed"),
        "timeout": (["# slow\nFAKE:sleep=30\n", "--timeout", "2s"], 124, "failed"),
    }
    docs = {name: runs.doc(spec[0][0]) for name, spec in cases.items()}

    def run(name: str) -> Any:
        extra = cases[name][0][1:]
        return cli("claude", "execute", str(docs[name]), *extra, timeout=60)

    with ThreadPoolExecutor(len(cases)) as pool:
        outputs = dict(zip(cases, pool.map(run, cases), strict=True))
    for name, (_, code, status) in cases.items():
        done = outputs[name]
        assert done.code == code, (name, done)
        lines = done.stdout.splitlines()
        assert lines and all(RENDERED.match(line) for line in lines), (name, lines)
        assert "Traceback" not in done.stderr
        assert f"{status} in" in done.stderr.splitlines()[-1]
    assert any("done in 2 turns" in line for line in outputs["success"].stdout.splitlines())
    assert any("timeout" in line for line in outputs["timeout"].stdout.splitlines())
    rows = {r.doc_id: r for r in runs.service.list_executions(None, None)}
    assert (rows[docs["timeout"]].status.value, rows[docs["timeout"]].reason) == (
        "failed",
        "timeout",
    )
    for row in rows.values():
        runs.assert_all_gone(row)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_foreground_ctrl_c_kills_the_run(runs: Runs) -> None:
    pidfile = runs.pidfile()
    doc = runs.doc(f"# interrupt me\nFAKE:sleep=30\nFAKE:pidfile={pidfile}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emdx", "claude", "execute", str(doc)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell's background job inherits SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: give the CLI the default disposition a terminal user has.
        preexec_fn=_default_sigint,
    )
    out: list[str] = []
    err: list[str] = []

    def read(stream: Any, into: list[str]) -> None:
        for raw in stream:
            into.append(raw.decode("utf-8", "replace"))

    readers = [
        threading.Thread(target=read, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=read, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    code: int | None = None
    try:
        agent = read_pidfile(pidfile)
        wait_until(lambda: len(out) >= 2, 20, message="the CLI following the log")
        executions = runs.service.list_executions(None, None)
        assert len(executions) == 1
        execution_id = executions[0].id
        runs.wait_running_agent(execution_id)
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = proc.wait(40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(5)
    row = runs.get(execution_id)
    stderr = "".join(err)
    assert code == 143, f"exit {code}, row {row.status} {row.reason}\n{stderr}"
    assert "Traceback" not in stderr
    assert "interrupted: killing execution" in stderr
    assert (row.status.value, row.exit_code, row.reason) == ("killed", 143, "killed_by_user")
    runs.assert_all_gone(row, agent)


def test_check_env_json(cli: Cli, tmp_path: Path) -> None:
    done = cli("claude", "check-env", "--json")
    assert done.code == 0, done
    report = json.loads(done.stdout)
    assert report["ready"] is True
    names = {c["name"]: c for c in report["checks"]}
    assert names["claude"]["ok"] is True
    assert all({"name", "ok", "detail", "fix", "required"} <= set(c) for c in report["checks"])

    done = cli("claude", "check-env", "--json", env={"EMDX_CLAUDE_BIN": str(tmp_path / "nope")})
    assert done.code == 1, done
    report = json.loads(done.stdout)
    assert report["ready"] is False
    claude = next(c for c in report["checks"] if c["name"] == "claude")
    assert claude["ok"] is False and claude["fix"]
    assert "Traceback" not in done.stderr
