"""Helpers for the fault-injection suite: database snapshots, a tracker of the processes and
mounts a test made, and the test's world of runs.

Polling, process identities (pid + start time), random high execution ids and the reaper are
shared with the other suites: tests/support/testkit.py.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testkit
from testkit import (
    Identity,
    RunWaits,
    assert_run_gone,
    kill_test_processes,
    start_witness,
)

from emdx import paths, runlog, system
from emdx.models import ExecOptions, Execution, ExecutionStatus
from emdx.service import Service

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


# -- database snapshots (assertion (c): nothing else changed) -------------------------------


def snapshot_db(db: Path, exclude_execution_ids: Collection[int] = ()) -> dict[str, list[str]]:
    """Every row of every table (FTS shadow tables, schema_version, sqlite_sequence included),
    except the execution rows under test; rows as sorted reprs so that order does not matter."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        snap: dict[str, list[str]] = {}
        for name in names:
            cur = conn.execute(f'SELECT * FROM "{name}"')
            columns = [d[0] for d in cur.description]
            rows = []
            for row in cur.fetchall():
                record = dict(zip(columns, row, strict=True))
                if name == "executions" and record["id"] in exclude_execution_ids:
                    continue
                rows.append(repr(sorted(record.items())))
            snap[name] = sorted(rows)
        return snap
    finally:
        conn.close()


def assert_same_snapshot(before: dict[str, list[str]], after: dict[str, list[str]]) -> None:
    assert sorted(before) == sorted(after), "the set of tables changed"
    for name in before:
        if before[name] != after[name]:
            gone = [r for r in before[name] if r not in after[name]]
            new = [r for r in after[name] if r not in before[name]]
            raise AssertionError(
                f"table {name} changed: removed {gone[:3]} added {new[:3]}"
                f" ({len(gone)} removed, {len(new)} added)"
            )


# -- processes -------------------------------------------------------------------------------


@dataclass
class Tracker:
    """What a test started: processes to kill and mounts to undo, whatever happens."""

    root: str
    identities: list[Identity] = field(default_factory=list)
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)

    def add(self, *idents: Identity) -> None:
        self.identities.extend(idents)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv), **kwargs)
        self.popens.append(proc)
        started = system.process_start_time(proc.pid)
        if started is not None:
            self.identities.append((proc.pid, started))
        return proc

    def witness(self, tmp: Path, name: str) -> tuple[Identity, Path]:
        """Start a signal-recording sleeper unrelated to emdx (no run marker in its env)."""
        witness = start_witness(tmp / f"witness-{name}.log", popen=self.popen)
        return witness.identity, witness.log

    def mount_tmpfs(self, path: Path, size: str = "256k") -> None:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
        self.mounts.append(path)

    def teardown(self) -> None:
        try:
            kill_test_processes(self.root, self.identities)
        finally:
            for proc in self.popens:
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(timeout=5)
            for mount in reversed(self.mounts):
                done = subprocess.run(["umount", str(mount)], capture_output=True, check=False)
                if done.returncode != 0:
                    subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


# -- runs --------------------------------------------------------------------------------------


def log_entries(row: Execution) -> list[dict[str, Any]]:
    assert row.log_file
    return runlog.read_entries(Path(row.log_file))


def log_messages(row: Execution) -> list[str]:
    return [str(e.get("message")) for e in log_entries(row)]


def result_payload(row: Execution) -> dict[str, Any]:
    """The fake agent's result text (prompt size, sha256, argv) from the run's log."""
    return testkit.result_payload(log_entries(row))


class World(RunWaits):
    """One test's database with unrelated content, and helpers to run and check executions."""

    def __init__(self, service: Service, tmp: Path, tracker: Tracker) -> None:
        super().__init__(tmp)
        self.service = service
        self.tmp = tmp
        self.tracker = tracker
        self.unrelated_docs: list[int] = []
        self.unrelated_execution: int | None = None

    @property
    def db(self) -> Path:
        return paths.db_path()

    def populate(self) -> None:
        """A few unrelated documents (tagged, with a project, one in the trash) and one finished
        unrelated execution, which no fault may touch."""
        svc = self.service
        ids = [
            svc.save_document("# Note one\nsome words\n", tags=["note"], detect=False).id,
            svc.save_document("# Plan\n- a\n- b\n", tags="gameplan,active", project="proj").id,
            svc.save_document("# Plain\nplain text ✓\n", detect=False).id,
            svc.save_document("# Trash\nto delete\n", detect=False).id,
        ]
        svc.delete_document(ids[-1])
        self.unrelated_docs = ids
        # A finished run whose recorded supervisor is long gone (a pid that has exited).
        dead = subprocess.Popen(["true"])
        dead.wait()
        store = svc.store.executions
        ex_id = store.create(
            run_key=f"{ids[2]}-1-1-deadbeef",
            doc_id=ids[2],
            doc_title="Plain",
            exec_type="generic",
            options=ExecOptions(),
        )
        assert store.claim_slot(ex_id, 10**6, ExecutionStatus.PREPARING) == "claimed"
        store.update(
            ex_id,
            log_file=str(paths.run_log_path(f"{ids[2]}-1-1-deadbeef")),
            pid=dead.pid,
            pid_started_at=1.0,
            agent_pid=dead.pid,
            agent_started_at=2.0,
            session_id="old-session",
            model="old-model",
            cost_usd=0.5,
            num_turns=3,
            heartbeat_at="2026-01-01T00:00:00.000000+00:00",
        )
        assert store.finish(
            ex_id,
            ExecutionStatus.COMPLETED,
            0,
            "success",
            started_at="2026-01-01T00:00:00.000000+00:00",
        )
        self.unrelated_execution = ex_id

    def snapshot(self, *exclude: int) -> dict[str, list[str]]:
        return snapshot_db(self.db, exclude)

    def doc(self, content: str, title: str = "fault doc") -> int:
        return self.service.save_document(content, title=title, detect=False).id

    def start(self, content: str, **options: Any) -> Execution:
        return self.service.start_execution(self.doc(content), ExecOptions(**options))

    def get(self, execution_id: int) -> Execution:
        return self.service.store.executions.get(execution_id)

    def assert_gone(
        self, row: Execution, extra: Sequence[Identity] = (), timeout: float = 15
    ) -> None:
        """(b): supervisor, agent, the given processes and every marked process are gone."""
        assert row.pid and row.pid_started_at is not None, "supervisor identity not recorded"
        assert_run_gone(row, extra, timeout)


def final_triple(row: Execution) -> tuple[str, int | None, str | None]:
    return (row.status.value, row.exit_code, row.reason)


def one_error_line(stderr: str) -> str:
    """The CLI error contract: exactly one line, `emdx: error: …`, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("emdx: error: "), lines
    return lines[0]


def sleep_shim(tmp: Path) -> Path:
    """A `sitecustomize` that makes `time.sleep` a `select()` timeout, for every Python process
    of the run (CLI, supervisor, fake agent).

    libfaketime 0.9.10 (this machine's) with FAKETIME_DONT_FAKE_MONOTONIC=1 breaks Python 3.11's
    `time.sleep`: its clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) wrapper hands the kernel a
    negative time and the call fails with EINVAL (wolfcw/libfaketime#426), which would crash
    the fake agent at its first FAKE:interval pause and any supervisor code path that sleeps.
    A relative select() timeout has the same meaning and is untouched by libfaketime.
    """
    shim = tmp / "faketime-shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import select, time\n"
        "def _sleep(seconds):\n"
        "    if seconds > 0:\n"
        "        select.select([], [], [], seconds)\n"
        "time.sleep = _sleep\n"
    )
    return shim


def faketime_env(tmp: Path) -> tuple[dict[str, str], Path]:
    """Environment that runs a process under libfaketime with the real monotonic clock and a
    wall-clock offset read from the returned file on every call (write "+2d" to jump)."""
    rc = tmp / "faketime.rc"
    rc.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_TIMESTAMP_FILE": str(rc),
        "FAKETIME_NO_CACHE": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(sleep_shim(tmp)), os.environ.get("PYTHONPATH")) if p
        ),
    }
    return env, rc
