"""Helpers and fixtures for the execution control tests: fake agent, fast timings, polling, reaper.

Every test gets its own EMDX_HOME (tests/conftest.py). Supervisors are real detached processes
that inherit `os.environ`, so settings go there (monkeypatch) and reach the `emdx` subprocesses,
the supervisors they start and the agents.

Execution ids of a fresh database start at 1 in every EMDX_HOME, and emdx finds a run's processes
by their EMDX_EXECUTION_ID + EMDX_DB markers. Each test starts its ids at a random 7-digit offset
anyway, so that even a marker-scoping regression (or another test session's bug) cannot make two
sessions on this machine kill each other's runs; test_control_kill.py checks the scoping itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from emdx import system
from emdx.models import Execution
from emdx.store import open_store

REPO = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"

T = TypeVar("T")
Identity = tuple[int, float]

# A process that records every catchable signal it gets (one number a line) and otherwise sleeps:
# proof that emdx never signalled it, beyond merely being alive.
WITNESS = r"""
import signal, sys, time
log = sys.argv[1]
def note(signum, frame):
    with open(log, "a") as handle:
        handle.write(f"{signum}\n")
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
            signal.SIGCONT, signal.SIGQUIT, signal.SIGALRM):
    signal.signal(sig, note)
open(log + ".ready", "w").close()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.2)
"""


def wait_until(
    predicate: Callable[[], T | None], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def env_of(pid: int) -> dict[str, str]:
    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return {}


def alive(identity: Identity) -> bool:
    return system.same_process(*identity)


def iso_utc(value: str) -> datetime:
    """Parse an ISO-8601 time and insist that it is UTC."""
    assert isinstance(value, str), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0), f"{value!r} is not UTC"
    return moment


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Witness:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def identity(self) -> Identity:
        started = system.process_start_time(self.proc.pid)
        assert started is not None, "witness died"
        return (self.proc.pid, started)

    def signals(self) -> list[int]:
        try:
            return [int(x) for x in self.log.read_text().split()]
        except FileNotFoundError:
            return []


class Ctl:
    """One test's EMDX_HOME, its `emdx` commands and its processes."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home = home
        self.tmp_path = tmp_path
        self.db = home / "knowledge.db"
        self._n = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self.identities: list[Identity] = []
        # Create the database, then move the id sequence to a random 7-digit offset.
        open_store().close()
        self.id_base = random.randrange(1_000_000, 9_000_000, 1000)
        with contextlib.closing(sqlite3.connect(self.db)) as conn, conn:
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'executions'")
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('executions', ?)", (self.id_base,)
            )

    # -- commands -------------------------------------------------------------------------

    def emdx(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        input: bytes = b"",
    ) -> Result:
        """The real `python -m emdx ARGS`; stdin is a pipe (not a terminal)."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        done = subprocess.run(
            [sys.executable, "-m", "emdx", *args],
            input=input,
            capture_output=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )
        result = Result(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(self, *args: str, **kw: Any) -> Result:
        result = self.emdx(*args, **kw)
        assert result.code == 0, f"emdx {' '.join(args)} → {result.code}\n{result.stderr}"
        return result

    def doc(self, content: str, title: str = "control test") -> int:
        with contextlib.closing(open_store()) as store:
            return store.documents.save(title, content)

    def start(self, doc_id: int, *options: str) -> int:
        """`emdx claude execute DOC --background OPTIONS`; returns the execution id."""
        result = self.ok("claude", "execute", str(doc_id), "--background", *options)
        match = re.search(r"execution #(\d+)", result.stdout)
        assert match, result.stdout
        return int(match.group(1))

    def run(self, content: str, *options: str) -> int:
        return self.start(self.doc(content), *options)

    def pidfile(self) -> Path:
        self._n += 1
        return self.tmp_path / f"pids-{self._n}"

    # -- rows -----------------------------------------------------------------------------

    def get(self, execution_id: int) -> Execution:
        with contextlib.closing(open_store()) as store:
            return store.executions.get(execution_id)

    def rows(self) -> list[Execution]:
        with contextlib.closing(open_store()) as store:
            return store.executions.list_executions(None, None)

    def wait_status(self, execution_id: int, statuses: set[str], timeout: float = 30) -> Execution:
        def check() -> Execution | None:
            row = self.get(execution_id)
            return row if row.status.value in statuses else None

        return wait_until(check, timeout, message=f"execution {execution_id} in {statuses}")

    def wait_final(self, execution_id: int, timeout: float = 30) -> Execution:
        return self.wait_status(execution_id, {"completed", "failed", "killed"}, timeout)

    def wait_agent(self, execution_id: int, timeout: float = 20) -> Execution:
        """Wait until the supervisor recorded itself, its first heartbeat and its agent."""

        def check() -> Execution | None:
            row = self.get(execution_id)
            if row.status.is_final:
                raise AssertionError(f"execution {execution_id} ended early: {row}")
            ready = row.pid_started_at and row.agent_started_at and row.heartbeat_at
            return row if ready else None

        row = wait_until(check, timeout, message=f"agent of execution {execution_id}")
        self.identities += [(row.pid or 0, row.pid_started_at or 0)]
        self.identities += [(row.agent_pid or 0, row.agent_started_at or 0)]
        return row

    def read_pidfile(self, path: Path, count: int, timeout: float = 20) -> list[Identity]:
        """The (pid, start time) of the processes the fake agent wrote to `path`."""

        def ready() -> list[int] | None:
            try:
                pids = [int(p) for p in path.read_text().split()]
            except (OSError, ValueError):
                return None
            return pids if len(pids) >= count else None

        pids = wait_until(ready, timeout, message=f"pidfile {path}")
        found = system.identify(pids)
        assert len(found) == len(pids), f"processes {pids} already gone"
        self.identities += found
        return found

    def insert_row(self, **fields: Any) -> int:
        """An execution row written straight into the database (legacy or crafted rows)."""
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        values: dict[str, Any] = {
            # Rows of this release have a run key; pass run_key=None for an old release's row.
            "run_key": f"crafted-{uuid.uuid4().hex}",
            "doc_title": "crafted row",
            "status": "running",
            "created_at": now,
            "started_at": now,
        }
        values.update(fields)
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn, conn:
            cur = conn.execute(
                f"INSERT INTO executions ({columns}) VALUES ({marks})", tuple(values.values())
            )
            return int(cur.lastrowid or 0)

    # -- processes ------------------------------------------------------------------------

    def marked(self, execution_id: int) -> list[Identity]:
        """`system.marked_processes(id)` limited to this test's EMDX_HOME."""
        return [
            (pid, started)
            for pid, started in system.marked_processes(execution_id)
            if env_of(pid).get("EMDX_HOME") == str(self.home)
        ]

    def assert_gone(self, identities: Sequence[Identity], timeout: float = 15) -> None:
        wait_until(
            lambda: not any(alive(i) for i in identities),
            timeout,
            message=f"processes {[p for p, _ in identities if alive((p, _))]} to exit",
        )

    def assert_run_gone(self, execution_id: int, extra: Sequence[Identity] = ()) -> None:
        """Supervisor, agent, `extra` and every marked process of the run are gone."""
        row = self.get(execution_id)
        targets = list(extra)
        for pid, started in ((row.pid, row.pid_started_at), (row.agent_pid, row.agent_started_at)):
            if pid:
                assert started is not None, f"start time of {pid} not recorded"
                targets.append((pid, started))
        self.assert_gone(targets)
        wait_until(lambda: not self.marked(execution_id), 10, message="marked processes")
        assert system.marked_processes(execution_id) == []

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "EMDX_EXECUTION_ID"}
        env.update(kw.pop("env", {}))
        proc = subprocess.Popen(argv, env=env, **kw)
        self.procs.append(proc)
        return proc

    def witness(self, env: dict[str, str] | None = None) -> Witness:
        """A live process unrelated to emdx (unless `env` marks it) that logs signals it gets."""
        self._n += 1
        log = self.tmp_path / f"witness-{self._n}.log"
        proc = self.popen(
            [sys.executable, "-c", WITNESS, str(log)],
            env=env or {},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        ready = Path(str(log) + ".ready")
        wait_until(ready.exists, 10, message="witness ready")
        return Witness(proc, log)

    def dead_identity(self) -> Identity:
        """(pid, start time) of a process that has exited: a supervisor that is gone."""
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        started = system.process_start_time(proc.pid)
        assert started is not None
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        return (proc.pid, started)

    def cleanup(self) -> None:
        victims = [i for i in self.identities if alive(i)]
        with contextlib.suppress(Exception):
            for row in self.rows():
                for pid, st in (
                    (row.pid, row.pid_started_at),
                    (row.agent_pid, row.agent_started_at),
                ):
                    if pid and st and env_of(pid).get("EMDX_HOME") == str(self.home):
                        victims.append((pid, st))
        for found in psutil.process_iter(["pid"]):
            if found.pid == os.getpid():
                continue
            env = env_of(found.pid)
            if env.get("EMDX_HOME") == str(self.home) and "EMDX_EXECUTION_ID" in env:
                with contextlib.suppress(psutil.Error):
                    victims.append((found.pid, system.process_start_time(found.pid) or 0.0))
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
        for pid, started in victims:
            if system.same_process(pid, started):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(5)
        system.wait_gone(victims, 5.0)


@pytest.fixture(autouse=True)
def control_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(FAKE_CLAUDE))
    monkeypatch.setenv("EMDX_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "1")
    monkeypatch.setenv("EMDX_RESULT_EXIT_GRACE_SECONDS", "2")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("EMDX_MAX_PARALLEL", raising=False)
    monkeypatch.delenv("EMDX_EXECUTION_ID", raising=False)


@pytest.fixture
def ctl(isolated_env: Path, tmp_path: Path) -> Iterator[Ctl]:
    control = Ctl(isolated_env, tmp_path)
    try:
        yield control
    finally:
        control.cleanup()
