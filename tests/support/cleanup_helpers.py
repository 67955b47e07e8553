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
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import (
    Cli,
    Identity,
    RunWaits,
    fake_agent_env,
    result_payload,
    sigkill,
    started_id,
    wait_until,
)

from emdx import paths, system
from emdx.models import Execution
from emdx.service import Service


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
    db: Path | None = None,
    mask: tuple[str, ...] = ("heartbeat_at", "uptime_s", "last_event_at"),
) -> list[Any]:
    """The schema and every row of every table, to compare before/after and prove no change.

    `mask` columns of executions are left out: a live supervisor rewrites them every second
    (heartbeat_at and its uptime by design; last_event_at too, see
    test_last_event_at_is_not_rewritten…).
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


@pytest.fixture(autouse=True)
def cleanup_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_agent_env(monkeypatch)
    # Wide tables: one row of a rich table is one line of output.
    monkeypatch.setenv("COLUMNS", "400")
    # A directory under tmp_path that is not a repo must not find one further up.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


class Procs:
    """Processes a test started itself; killed (SIGKILL, by pid + start time) at teardown."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.identities: list[Identity] = []

    def popen(self, argv: list[str], env: dict[str, str]) -> Identity:
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

    def track(self, identity: Identity) -> None:
        self.identities.append(identity)

    def kill_all(self) -> None:
        sigkill(self.identities)
        for proc in self.started:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()
            with contextlib.suppress(Exception):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(5)


@pytest.fixture
def procs(isolated_env: Path) -> Iterator[Procs]:
    tracked = Procs()
    try:
        yield tracked
    finally:
        tracked.kill_all()


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


class Runs(RunWaits):
    """Helpers bound to one test's service and CLI."""

    def __init__(self, service: Service, cli: Cli, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.service = service
        self.cli = cli

    def doc(self, content: str, title: str = "test doc", tags: str | None = None) -> int:
        return self.service.save_document(content, title=title, tags=tags, detect=False).id

    def get(self, execution_id: int) -> Execution:
        return self.service.store.executions.get(execution_id)

    def get_by_old_id(self, old_id: str) -> Execution:
        return self.service.store.executions.resolve(old_id)

    def start(self, doc: int, *extra: str, cwd: Path | None = None) -> int:
        """`emdx claude execute DOC --background …` → the new execution id."""
        done = self.cli("claude", "execute", str(doc), "--background", *extra, cwd=cwd)
        assert done.code == 0, done
        return started_id(done.stdout)

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
        path = Path(str(self.get(execution_id).log_file))
        entries = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    def result_payload(self, execution_id: int) -> dict[str, Any]:
        return result_payload(self.log_entries(execution_id))


@pytest.fixture
def runs(svc: Service, cli: Cli, tmp_path: Path) -> Runs:
    return Runs(svc, cli, tmp_path)
