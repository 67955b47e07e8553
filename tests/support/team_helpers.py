"""Team mode as it runs on many hosts: a PostgreSQL database made for the test, `emdx worker`
processes each with its own EMDX_HOME and EMDX_HOST (one "host" each), and `emdx` commands run
from yet another host. Everything a test starts is killed by pid at the end, and the database
dropped whatever happened."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from testkit import FAKE_CLAUDE, FAULT_HOOKS, CliResult, kill_test_processes, run_emdx, wait_until

from emdx import system
from emdx.models import Execution
from emdx.store import open_store

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Short beats, so that a lost host is found in seconds (3 missed beats).
WORKER_HEARTBEAT_S = "0.5"


def server_url() -> str:
    return os.environ.get("EMDX_TEST_PG_URL") or DEFAULT_PG_URL


def _admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(server_url(), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {server_url()}: {exc}", pytrace=False)


def with_password(url: str, password: str) -> str:
    """`url` with a password in it (the test server's trust auth ignores it): what a team's
    real URL holds, and what no process but emdx's own memory may show."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, ""))


@contextlib.contextmanager
def team_database() -> Iterator[str]:
    """A database of its own, dropped at the end (its connections too)."""
    name = f"emdx_team_{secrets.token_hex(6)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url())
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_connections(url: str) -> int:
    """What a restart of the server does to its clients: every connection to the database is
    cut (pg_terminate_backend). Returns how many were."""
    name = urlsplit(url).path.lstrip("/")
    with _admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


@dataclass
class Worker:
    name: str
    host: str
    home: Path
    proc: subprocess.Popen[bytes]
    output: Path
    identity: tuple[int, float] = (0, 0.0)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        system.send_signal(self.identity[0], self.identity[1], sig)


@dataclass
class Team:
    url: str
    root: Path
    base_env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    # Every emdx process is told the database with `--db URL`, not EMDX_DATABASE_URL.
    url_by_flag: bool = False

    def db_args(self) -> list[str]:
        return ["--db", self.url] if self.url_by_flag else []

    def env(self, host: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(EMDX_HOME=str(self.root / host / "emdx-home"), EMDX_HOST=host)
        if not self.url_by_flag:
            env["EMDX_DATABASE_URL"] = self.url
        env.update(extra or {})
        return env

    def start_worker(
        self,
        host: str,
        concurrency: int = 1,
        queues: tuple[str, ...] = (),
        repos: tuple[Path, ...] = (),
        extra: Mapping[str, str] | None = None,
    ) -> Worker:
        """`emdx worker` as host `host`; returns once it is registered (it says so)."""
        name = f"w-{host}"
        out = self.root / f"{name}-{len(self.workers)}.out"
        args = [sys.executable, "-m", "emdx", *self.db_args(), "worker", "--name", name]
        args += ["--concurrency", str(concurrency)]
        for queue in queues:
            args += ["--queue", queue]
        for repo in repos:
            args += ["--repo", str(repo)]
        with open(out, "wb") as handle:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=self.env(host, extra),
                cwd=str(self.root),
            )
        started = system.process_start_time(proc.pid) or 0.0
        worker = Worker(name, host, self.root / host / "emdx-home", proc, out, (proc.pid, started))
        self.workers.append(worker)
        wait_until(
            lambda: f"worker {name} (#" in worker.text() or proc.poll() is not None,
            60,
            message=lambda: f"worker {name} did not register:\n{worker.text()}",
        )
        assert proc.poll() is None, worker.text()
        return worker

    def start_held_worker(
        self,
        host: str,
        target: str,
        repos: tuple[Path, ...] = (),
        extra: Mapping[str, str] | None = None,
    ) -> tuple[Worker, Path, Path]:
        """A worker that stops after `target` (module:Qualified.name) returns, the first time,
        until the returned release file exists (`hold` fault); the mark file says it got there."""
        mark, release = self.root / f"held-{host}", self.root / f"release-{host}"
        fault = {"proc": "cli", "target": target, "when": "after", "action": "hold"}
        fault.update(mark=str(mark), release=str(release))
        hooks = f"{FAULT_HOOKS}{os.pathsep}{self.base_env['PYTHONPATH']}"
        faults = {"PYTHONPATH": hooks, "EMDX_FAULTS": json.dumps([fault])}
        worker = self.start_worker(host, repos=repos, extra={**(extra or {}), **faults})
        return worker, mark, release

    def cli(
        self,
        host: str,
        *args: str,
        input: str | None = None,
        timeout: float = 90,
        cwd: Path | None = None,
    ) -> CliResult:
        """`emdx ARGS` as host `host` (its own home), from `cwd` (default: the test's dir)."""
        return run_emdx(
            *self.db_args(),
            *args,
            input=input,
            env=self.env(host),
            cwd=cwd or self.root,
            timeout=timeout,
        )

    def save(self, host: str, content: str, title: str = "work") -> int:
        saved = self.cli(host, "save", "--title", title, input=content)
        assert saved.code == 0, saved.stderr
        return int(saved.stdout.split("#", 1)[1].split(":", 1)[0])

    def submit(self, host: str, doc_id: int, *extra: str, cwd: Path | None = None) -> int:
        args = ("claude", "execute", str(doc_id), "--background", *extra)
        started = self.cli(host, *args, cwd=cwd)
        assert started.code == 0, started.stderr
        return int(started.stdout.split("#", 1)[1].split(" ", 1)[0])

    def rows(self) -> list[Execution]:
        with contextlib.closing(open_store(self.url)) as store:
            return store.executions.list_executions(None, None)

    def row(self, execution_id: int) -> Execution:
        with contextlib.closing(open_store(self.url)) as store:
            return store.executions.get(execution_id)

    def events(self, execution_id: int) -> list[dict[str, Any]]:
        with contextlib.closing(open_store(self.url)) as store:
            assert store.queue is not None
            return [e.entry for e in store.queue.events_since(execution_id, 0, 10_000)]

    def wait_final(self, execution_id: int, timeout: float = 60) -> Execution:
        def final() -> Execution | None:
            row = self.row(execution_id)
            return row if row.status.is_final else None

        return wait_until(
            final,
            timeout,
            message=lambda: (
                f"#{execution_id} not final: {self.row(execution_id)}\n"
                + "\n".join(w.text() for w in self.workers)
            ),
        )

    def wait_agent(self, execution_id: int, worker: Worker, events: int = 0) -> Execution:
        """The run's row once its agent runs (and has sent `events` events)."""

        def going() -> Execution | None:
            row = self.row(execution_id)
            return row if row.agent_pid and row.event_count >= events else None

        return wait_until(going, 60, message=lambda: f"{self.row(execution_id)}\n{worker.text()}")

    def start_cli(self, host: str, *args: str) -> subprocess.Popen[bytes]:
        """`emdx ARGS` as host `host`, in the background (output piped)."""
        return subprocess.Popen(
            [sys.executable, "-m", "emdx", *self.db_args(), *args],
            env={**os.environ, **self.env(host)},
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        """SIGKILL every worker (SIGCONT first: a stopped one too), then every run process
        under the test's homes."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(OSError):
                    worker.proc.send_signal(signal.SIGCONT)
                    worker.proc.kill()
            worker.proc.wait(10)
        kill_test_processes(self.root)


def fake_agent_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMDX_")}
    env.update(
        HOME=str(tmp_path / "home"),
        CLAUDE_CONFIG_DIR=str(tmp_path / "claude-config"),
        EMDX_CLAUDE_BIN=str(FAKE_CLAUDE),
        EMDX_HEARTBEAT_SECONDS="0.5",
        EMDX_WORKER_HEARTBEAT_SECONDS=WORKER_HEARTBEAT_S,
        EMDX_KILL_GRACE_SECONDS="3",
        PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"),
    )
    return env


def new_repo(path: Path) -> Path:
    """A git repository at `path` on `main` with one (empty) commit."""
    path.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=path, check=True
        )
    return path
