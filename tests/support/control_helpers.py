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
import os
import random
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from testkit import (
    CliResult,
    Identity,
    RunWaits,
    Witness,
    assert_gone,
    assert_run_gone,
    env_of,
    fake_agent_env,
    kill_test_processes,
    read_pidfile,
    recorded_identities,
    run_emdx,
    run_processes,
    seed_execution_ids,
    start_witness,
    started_id,
)

from emdx import system
from emdx.models import Execution
from emdx.store import open_store


def iso_utc(value: str) -> datetime:
    """Parse an ISO-8601 time and insist that it is UTC."""
    assert isinstance(value, str), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0), f"{value!r} is not UTC"
    return moment


class Ctl(RunWaits):
    """One test's EMDX_HOME, its `emdx` commands and its processes."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.home = home
        self.db = home / "knowledge.db"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.identities: list[Identity] = []
        # Create the database, then move the id sequence to a random 7-digit offset.
        open_store().close()
        self.id_base = seed_execution_ids(self.db, random.randrange(1_000_000, 9_000_000, 1000))

    # -- commands -------------------------------------------------------------------------

    def emdx(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        input: bytes = b"",
    ) -> CliResult:
        """The real `python -m emdx ARGS`; stdin is a pipe (not a terminal)."""
        result = run_emdx(*args, input=input, env=env, timeout=timeout)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60, input: bytes = b""
    ) -> CliResult:
        result = self.emdx(*args, env=env, timeout=timeout, input=input)
        assert result.code == 0, f"emdx {' '.join(args)} → {result.code}\n{result.stderr}"
        return result

    def doc(self, content: str, title: str = "control test") -> int:
        with contextlib.closing(open_store()) as store:
            return store.documents.save(title, content)

    def start(self, doc_id: int, *options: str) -> int:
        """`emdx claude execute DOC --background OPTIONS`; returns the execution id."""
        return started_id(
            self.ok("claude", "execute", str(doc_id), "--background", *options).stdout
        )

    def run(self, content: str, *options: str) -> int:
        return self.start(self.doc(content), *options)

    # -- rows -----------------------------------------------------------------------------

    def get(self, execution_id: int) -> Execution:
        with contextlib.closing(open_store()) as store:
            return store.executions.get(execution_id)

    def rows(self) -> list[Execution]:
        with contextlib.closing(open_store()) as store:
            return store.executions.list_executions(None, None)

    def wait_agent(self, execution_id: int, timeout: float = 20) -> Execution:
        """Wait until the supervisor recorded itself, its first heartbeat and its agent."""
        row = super().wait_agent(execution_id, timeout)
        self.identities += [(row.pid or 0, row.pid_started_at or 0)]
        self.identities += [(row.agent_pid or 0, row.agent_started_at or 0)]
        return row

    def read_pidfile(self, path: Path, count: int, timeout: float = 20) -> list[Identity]:
        """The (pid, start time) of the processes the fake agent wrote to `path`."""
        found = read_pidfile(path, count, timeout)
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
        return run_processes(execution_id, self.home)

    def assert_gone(self, identities: Sequence[Identity], timeout: float = 15) -> None:
        assert_gone(identities, timeout)

    def assert_run_gone(self, execution_id: int, extra: Sequence[Identity] = ()) -> None:
        """Supervisor, agent, `extra` and every marked process of the run are gone."""
        assert_run_gone(self.get(execution_id), extra)
        assert self.marked(execution_id) == []

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != system.MARKER}
        env.update(kw.pop("env", {}))
        proc = subprocess.Popen(argv, env=env, **kw)
        self.procs.append(proc)
        return proc

    def witness(self, env: dict[str, str] | None = None) -> Witness:
        """A live process unrelated to emdx (unless `env` marks it) that logs signals it gets."""
        self._n += 1
        return start_witness(self.tmp_path / f"witness-{self._n}.log", env, popen=self.popen)

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
        """SIGKILL the test's processes: those it started or identified, and every process of
        this EMDX_HOME's runs (rows may be crafted: only processes of this home are taken)."""
        ours = [
            i
            for i in recorded_identities(self.rows)
            if env_of(i[0]).get("EMDX_HOME") == str(self.home)
        ]
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
        kill_test_processes(self.home, [*self.identities, *ours])
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(5)


@pytest.fixture(autouse=True)
def control_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_agent_env(monkeypatch)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def ctl(isolated_env: Path, tmp_path: Path) -> Iterator[Ctl]:
    control = Ctl(isolated_env, tmp_path)
    try:
        yield control
    finally:
        control.cleanup()
