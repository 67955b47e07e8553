"""Helpers for the fault-injection suite: polling, process identities, database snapshots.

Small copies of ideas from tests/runner and tests/control (no imports across test dirs):
random high execution ids so parallel sessions never collide, identities (pid + start time)
for every process we look at, and `wait_until` polling with deadlines instead of bare sleeps.
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
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from emdx import paths, runlog, system
from emdx.models import ExecOptions, Execution, ExecutionStatus
from emdx.service import Service

REPO = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

T = TypeVar("T")
Identity = tuple[int, float]
FINAL = frozenset({"completed", "failed", "killed"})

# A process that writes down every catchable signal it receives and otherwise sleeps: proof that
# emdx never signalled it (SIGKILL cannot be caught, but then it would not be alive any more).
WITNESS = r"""
import signal, sys, time
log = sys.argv[1]
def note(signum, frame):
    with open(log, "a") as handle:
        handle.write(f"{signum}\n")
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
            signal.SIGQUIT, signal.SIGALRM):
    signal.signal(sig, note)
open(log + ".ready", "w").close()
deadline = time.monotonic() + 300
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


def identity(pid: int) -> Identity:
    started = system.process_start_time(pid)
    assert started is not None, f"process {pid} is not alive"
    return (pid, started)


def alive(ident: Identity) -> bool:
    return system.same_process(*ident)


def seed_execution_ids(db: Path) -> int:
    """Make this database hand out execution ids from a random high base, so that runs of
    concurrent test sessions (found again by their EMDX_EXECUTION_ID marker) never share ids."""
    base = random.randrange(10**6, 2**31 - 10**6)
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'executions'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('executions', ?)", (base,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return base


def read_pidfile(path: Path, count: int = 1, timeout: float = 20) -> list[Identity]:
    """Wait until the fake agent wrote `count` pids to `path`; their identities (all alive)."""

    def ready() -> list[int] | None:
        try:
            pids = [int(p) for p in path.read_text().split()]
        except (OSError, ValueError):
            return None
        return pids if len(pids) >= count else None

    pids = wait_until(ready, timeout, message=f"pidfile {path}")
    found = system.identify(pids)
    assert len(found) == len(pids), f"processes {pids} already gone when read"
    return found


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
        log = tmp / f"witness-{name}.log"
        env = {k: v for k, v in os.environ.items() if k not in (system.MARKER, system.MARKER_DB)}
        proc = self.popen(
            [sys.executable, "-c", WITNESS, str(log)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: Path(str(log) + ".ready").exists(), 20, message="witness ready")
        return identity(proc.pid), log

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


def kill_test_processes(root: str, extra: Iterable[Identity]) -> None:
    """SIGKILL every process of this test: the given identities and every process whose
    EMDX_HOME lies under the test's tmp dir (supervisors, agents, grandchildren, CLIs)."""
    victims = [(p, s) for p, s in extra if system.same_process(p, s)]
    prefix = root.rstrip("/") + "/"
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        if env_of(proc.pid).get("EMDX_HOME", "").startswith(prefix):
            with contextlib.suppress(psutil.Error):
                victims.append((proc.pid, system.process_start_time(proc.pid) or 0.0))
    for pid, started in victims:
        if system.same_process(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)  # a SIGSTOPped supervisor must not linger
                os.kill(pid, signal.SIGKILL)
    system.wait_gone(victims, 5.0)


# -- runs --------------------------------------------------------------------------------------


def log_entries(row: Execution) -> list[dict[str, Any]]:
    assert row.log_file
    return runlog.read_entries(Path(row.log_file))


def log_messages(row: Execution) -> list[str]:
    return [str(e.get("message")) for e in log_entries(row)]


def result_payload(row: Execution) -> dict[str, Any]:
    """The fake agent's result text (prompt size, sha256, argv) from the run's log."""
    results = [e for e in log_entries(row) if e.get("type") == "result"]
    assert results, "no result entry in the log"
    return dict(json.loads(results[-1]["raw"]["result"]))


class World:
    """One test's database with unrelated content, and helpers to run and check executions."""

    def __init__(self, service: Service, tmp: Path, tracker: Tracker) -> None:
        self.service = service
        self.tmp = tmp
        self.tracker = tracker
        self._n = 0
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
        store.update(
            ex_id,
            started_at="2026-01-01T00:00:00.000000+00:00",
            log_file=str(paths.run_log_path(ex_id)),
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
        assert store.finish(ex_id, ExecutionStatus.COMPLETED, 0, "success")
        self.unrelated_execution = ex_id

    def snapshot(self, *exclude: int) -> dict[str, list[str]]:
        return snapshot_db(self.db, exclude)

    def pidfile(self) -> Path:
        self._n += 1
        return self.tmp / f"pids-{self._n}"

    def doc(self, content: str, title: str = "fault doc") -> int:
        return self.service.save_document(content, title=title, detect=False).id

    def start(self, content: str, **options: Any) -> Execution:
        return self.service.start_execution(self.doc(content), ExecOptions(**options))

    def get(self, execution_id: int) -> Execution:
        return self.service.store.executions.get(execution_id)

    def wait_final(self, execution_id: int, timeout: float = 30) -> Execution:
        def check() -> Execution | None:
            row = self.get(execution_id)
            return row if row.status.value in FINAL else None

        return wait_until(check, timeout, message=f"execution {execution_id} to finish")

    def wait_agent(self, execution_id: int, timeout: float = 20) -> Execution:
        """The row once the supervisor has recorded itself and the agent."""

        def check() -> Execution | None:
            row = self.get(execution_id)
            if row.status.value in FINAL:
                raise AssertionError(f"execution {execution_id} ended early: {row}")
            ok = row.pid_started_at and row.agent_pid and row.agent_started_at
            return row if ok else None

        return wait_until(check, timeout, message=f"agent of execution {execution_id}")

    def assert_gone(
        self, row: Execution, extra: Sequence[Identity] = (), timeout: float = 15
    ) -> None:
        """(b): supervisor, agent, the given processes and every marked process are gone."""
        targets = list(extra)
        assert row.pid and row.pid_started_at is not None, "supervisor identity not recorded"
        targets.append((row.pid, row.pid_started_at))
        if row.agent_pid:
            assert row.agent_started_at is not None, "agent start time not recorded"
            targets.append((row.agent_pid, row.agent_started_at))
        wait_until(
            lambda: not any(alive(t) for t in targets),
            timeout,
            message=f"processes {targets} of execution {row.id} to exit",
        )
        wait_until(
            lambda: not system.marked_processes(row.id),
            timeout,
            message=f"marked processes of execution {row.id} to exit",
        )


def final_triple(row: Execution) -> tuple[str, int | None, str | None]:
    return (row.status.value, row.exit_code, row.reason)


EXECUTION_ID = re.compile(r"execution #(\d+)")


def started_id(stdout: str) -> int:
    match = EXECUTION_ID.search(stdout)
    assert match, f"no execution id in {stdout!r}"
    return int(match.group(1))


def one_error_line(stderr: str) -> str:
    """The CLI error contract: exactly one line, `emdx: error: …`, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("emdx: error: "), lines
    return lines[0]
