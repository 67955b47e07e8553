"""Helpers and fixtures for the worktree and cleanup tests: real git repos, the fake agent, a
reaper (imported by conftest.py; tests import the helpers from here).

Supervisors are detached processes (`python -m emdx.runner ID`) that inherit the environment of
whoever starts them, so the settings go into `os.environ` (monkeypatch): they reach the `cli`
fixture's subprocesses and the in-process service alike. Every process a test starts is killed
when it ends (marked runs of this test's EMDX_HOME, and whatever the test registered).
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from emdx import paths, system
from emdx.models import Execution
from emdx.service import Service

REPO = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"

# legacy_fixtures (builders of databases in the shapes earlier releases wrote) lives in tests/unit.
_UNIT = str(REPO / "tests" / "unit")
if _UNIT not in sys.path:
    sys.path.insert(0, _UNIT)

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = ""
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


def alive(identity: tuple[int, float]) -> bool:
    return system.same_process(identity[0], identity[1])


def git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def commit_file(where: Path, name: str, text: str, message: str) -> str:
    """Write a file in `where` (a repo or worktree), commit it, return the new commit id."""
    (where / name).write_text(text)
    git(where, "add", name)
    git(where, "commit", "-q", "-m", message)
    return git(where, "rev-parse", "HEAD")


def worktrees(repo: Path) -> dict[str, str | None]:
    """path → branch (refs/heads/… stripped; None when detached) from `git worktree list`."""
    result: dict[str, str | None] = {}
    path = None
    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree ") :]
            result[path] = None
        elif line.startswith("branch refs/heads/") and path:
            result[path] = line[len("branch refs/heads/") :]
    return result


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def branch_exists(repo: Path, name: str) -> bool:
    return bool(git(repo, "branch", "--list", name))


def db_dump(
    db: Path | None = None, mask: tuple[str, ...] = ("heartbeat_at", "last_event_at")
) -> list[Any]:
    """The schema and every row of every table, to compare before/after and prove no change.

    `mask` columns of executions are left out: a live supervisor rewrites them every second
    (heartbeat_at by design; last_event_at too, see test_last_event_at_is_not_rewritten…).
    """
    conn = sqlite3.connect(str(db or paths.db_path()), timeout=30)
    try:
        dump: list[Any] = sorted(
            conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=repr
        )
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            for row in cur.fetchall():
                values = dict(zip(names, row, strict=True))
                if table == "executions":
                    for column in mask:
                        values.pop(column, None)
                dump.append((table, sorted(values.items(), key=repr)))
        return sorted(dump, key=repr)
    finally:
        conn.close()


def assert_same(before: Any, after: Any) -> None:
    """Equal, or fail with a readable diff of the parts that changed."""
    if before == after:
        return
    import difflib

    def lines(value: Any) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [x for item in value for x in lines(item)]
        if isinstance(value, dict):
            return [repr(kv) for kv in sorted(value.items(), key=repr)]
        return [repr(value)]

    diff = "\n".join(difflib.unified_diff(lines(before), lines(after), lineterm="", n=0))
    raise AssertionError(f"changed:\n{diff[:6000]}")


def runs_listing() -> list[tuple[str, int]]:
    """Every path under EMDX_HOME/runs (recursive) with its mode."""
    root = paths.runs_dir()
    if not root.exists():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            found.append((str(full.relative_to(root)), full.lstat().st_mode))
    return sorted(found)


def statuses(db: Path | None = None) -> dict[int, tuple[str, int | None, str | None]]:
    conn = sqlite3.connect(str(db or paths.db_path()), timeout=30)
    try:
        rows = conn.execute("SELECT id, status, exit_code, reason FROM executions").fetchall()
    finally:
        conn.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def parse_json(stdout: str) -> Any:
    return json.loads(stdout)


def started_id(stdout: str) -> int:
    match = re.search(r"execution #(\d+)", stdout)
    assert match, stdout
    return int(match.group(1))


def seed_execution_ids(db: Path) -> int:
    """Hand out execution ids from a random high base, so that runs of concurrent test sessions
    (each with its own EMDX_HOME, ids starting at 1) never share an id."""
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


@pytest.fixture(autouse=True)
def cleanup_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(FAKE_CLAUDE))
    monkeypatch.setenv("EMDX_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "1")
    monkeypatch.setenv("EMDX_RESULT_EXIT_GRACE_SECONDS", "2")
    # Wide tables: one row of a rich table is one line of output.
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("EMDX_MAX_PARALLEL", raising=False)
    monkeypatch.delenv("EMDX_EXECUTION_ID", raising=False)
    monkeypatch.delenv("EMDX_DB", raising=False)
    # A directory under tmp_path that is not a repo must not find one further up.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


class Procs:
    """Processes a test started itself; killed (SIGKILL, by pid + start time) at teardown."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.identities: list[tuple[int, float]] = []

    def popen(self, argv: list[str], env: dict[str, str]) -> tuple[int, float]:
        """Start a process with stdin from a pipe kept open (so the fake agent blocks)."""
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.started.append(proc)
        started = wait_until(
            lambda: system.process_start_time(proc.pid), 10, message=f"start of {proc.pid}"
        )
        identity = (proc.pid, started)
        self.identities.append(identity)
        return identity

    def track(self, identity: tuple[int, float]) -> None:
        self.identities.append(identity)

    def kill_all(self) -> None:
        for pid, started in self.identities:
            if system.same_process(pid, started):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()
            with contextlib.suppress(Exception):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(5)


def _kill_test_processes(root: str, extra: list[tuple[int, float]]) -> None:
    """SIGKILL every marked process whose EMDX_HOME is under this test's tmp dir, and `extra`."""
    victims = [(p, s) for p, s in extra if system.same_process(p, s)]
    prefix = root.rstrip("/") + "/"
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        env = env_of(proc.pid)
        if env.get("EMDX_HOME", "").startswith(prefix) and "EMDX_EXECUTION_ID" in env:
            with contextlib.suppress(psutil.Error):
                victims.append((proc.pid, system.process_start_time(proc.pid) or 0.0))
    for pid, started in victims:
        if system.same_process(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    system.wait_gone(victims, 5.0)


@pytest.fixture
def procs(isolated_env: Path) -> Iterator[Procs]:
    tracked = Procs()
    try:
        yield tracked
    finally:
        tracked.kill_all()


@pytest.fixture(autouse=True)
def reaper(isolated_env: Path) -> Iterator[None]:
    """Whatever a test started (CLI runs included) is killed when it ends."""
    yield
    _kill_test_processes(str(isolated_env.parent), [])


@pytest.fixture
def svc(isolated_env: Path) -> Iterator[Service]:
    """An in-process service on this test's EMDX_HOME (database created, ids seeded high)."""
    service = Service()
    service.store  # noqa: B018 - creates and migrates the database
    seed_execution_ids(paths.db_path())
    try:
        yield service
    finally:
        extra: list[tuple[int, float]] = []
        with contextlib.suppress(Exception):
            for row in service.store.executions.list_executions(None, None):
                if row.pid and row.pid_started_at:
                    extra.append((row.pid, row.pid_started_at))
                if row.agent_pid and row.agent_started_at:
                    extra.append((row.agent_pid, row.agent_started_at))
        _kill_test_processes(str(isolated_env.parent), extra)
        service.close()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real repository on `main` with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Cleanup Tester")
    git(repo, "config", "user.email", "tester@example.invalid")
    git(repo, "config", "commit.gpgsign", "false")
    commit_file(repo, "README.md", "hello\n", "initial commit")
    return repo


class Runs:
    """Helpers bound to one test's service and CLI."""

    def __init__(self, service: Service, cli: Any, tmp_path: Path) -> None:
        self.service = service
        self.cli = cli
        self.tmp_path = tmp_path
        self._n = 0

    def doc(self, content: str, title: str = "test doc", tags: str | None = None) -> int:
        return self.service.save_document(content, title=title, tags=tags, detect=False).id

    def pidfile(self) -> Path:
        self._n += 1
        return self.tmp_path / f"pids-{self._n}"

    def get(self, execution_id: int) -> Execution:
        return self.service.store.executions.get(execution_id)

    def get_by_old_id(self, old_id: str) -> Execution:
        return self.service.store.executions.resolve(old_id)

    def start(self, doc: int, *extra: str, cwd: Path | None = None) -> int:
        """`emdx claude execute DOC --background …` → the new execution id."""
        done = self.cli("claude", "execute", str(doc), "--background", *extra, cwd=cwd)
        assert done.code == 0, done
        return started_id(done.stdout)

    def wait_status(self, execution_id: int, wanted: set[str], timeout: float = 30) -> Execution:
        def check() -> Execution | None:
            row = self.get(execution_id)
            return row if row.status.value in wanted else None

        return wait_until(check, timeout, message=f"execution {execution_id} in {wanted}")

    def wait_final(self, execution_id: int, timeout: float = 30) -> Execution:
        return self.wait_status(execution_id, {"completed", "failed", "killed"}, timeout)

    def wait_running_agent(self, execution_id: int, timeout: float = 20) -> Execution:
        def check() -> Execution | None:
            row = self.get(execution_id)
            if row.status.is_final:
                raise AssertionError(f"execution {execution_id} ended early: {row}")
            ok = row.agent_pid and row.agent_started_at and row.pid and row.pid_started_at
            return row if ok else None

        return wait_until(check, timeout, message=f"agent of execution {execution_id}")

    def wait_settled(self, execution_id: int, events: int = 2, timeout: float = 20) -> Execution:
        """A running run whose agent has said its first `events` events, recorded in the row
        (after that a sleeping fake agent changes nothing but the heartbeat)."""

        def check() -> Execution | None:
            row = self.wait_running_agent(execution_id)
            return row if row.event_count >= events and row.heartbeat_at else None

        return wait_until(check, timeout, message=f"progress of execution {execution_id}")

    def wait_finished_for(self, execution_id: int, seconds: float, timeout: float = 30) -> None:
        """Wait until the run has been final for at least `seconds` (by its completed_at)."""
        from emdx.models import parse_time, utc_now

        def old_enough() -> bool:
            moment = parse_time(self.get(execution_id).completed_at)
            return moment is not None and (utc_now() - moment).total_seconds() > seconds

        wait_until(old_enough, timeout, interval=0.1, message=f"age of {execution_id}")

    def log_entries(self, execution_id: int) -> list[dict[str, Any]]:
        path = paths.run_log_path(execution_id)
        entries = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    def result_payload(self, execution_id: int) -> dict[str, Any]:
        results = [e for e in self.log_entries(execution_id) if e.get("type") == "result"]
        assert results, "no result entry in the log"
        return dict(json.loads(results[-1]["raw"]["result"]))


def read_pidfile(path: Path, count: int = 1, timeout: float = 20) -> list[tuple[int, float]]:
    """Wait until the fake agent wrote `count` pids to `path`; their identities while alive."""

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


@pytest.fixture
def runs(svc: Service, cli: Any, tmp_path: Path) -> Runs:
    return Runs(svc, cli, tmp_path)
