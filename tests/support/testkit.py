"""Helpers shared by the test suites: polling, process identities, reaping, the fake agent.

tests/conftest.py puts this directory on `sys.path`, so every suite does `from testkit import …`.
What is here is what several suites need in the same form; a suite's own helpers are its
`<suite>_helpers.py` next to this module (one directory of importable helpers, so that mypy
and pytest see each under one name).

Processes are named by identity, (pid, start time), never by pid alone (`emdx.system`), so a
test can never signal a process that merely reuses a pid. A run's processes all carry the
EMDX_EXECUTION_ID, EMDX_RUN_KEY and EMDX_DB markers (see `emdx.system.run_markers`); each test
has its own EMDX_HOME under its tmp dir, which is what scopes the reaper to this test's
processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import random
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

import psutil
import pytest

from emdx import paths, system
from emdx.models import ExecOptions, Execution, ExecutionStatus, parse_time
from emdx.service import Service
from emdx.store import SqliteStore, open_store
from emdx.testing.model_server import offline_claude_env

REPO = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"
FINAL_STATUSES = frozenset({"completed", "failed", "killed"})

T = TypeVar("T")
P = ParamSpec("P")
Identity = tuple[int, float]
Message = str | Callable[[], str]


# -- polling ------------------------------------------------------------------------------------


class Deadline:
    """`timeout` seconds from now; `check()` fails the test, saying what was awaited (`what`, or
    what it returns when called), once they have passed."""

    def __init__(self, timeout: float, what: Message) -> None:
        self.timeout = timeout
        self.what = what
        self.at = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() >= self.at:
            what = self.what() if callable(self.what) else self.what
            raise AssertionError(f"timed out after {self.timeout}s waiting for {what}")

    def poll(self, predicate: Callable[[], T | None]) -> T | None:
        """`predicate()`; when that is falsy, fail if the time is up."""
        value = predicate()
        if not value:
            self.check()
        return value


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    message: Message = "",
) -> T:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes.

    `message` says what was awaited; a callable is asked only when the wait fails, so that the
    message can describe the state at the deadline (which processes are still alive, say).
    """
    deadline = Deadline(timeout, message or str(predicate))
    while not (value := deadline.poll(predicate)):
        time.sleep(interval)
    return value


def run_first(hook: Callable[[], object], call: Callable[P, T]) -> Callable[P, T]:
    """`call`, with `hook()` run before each call: a test's way of making a race happen at that
    very point (monkeypatched in place of `call`)."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        hook()
        return call(*args, **kwargs)

    return wrapper


# -- processes ----------------------------------------------------------------------------------


def env_of(pid: int) -> dict[str, str]:
    """The process's environment; {} when it is gone or cannot be read."""
    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return {}


def alive(ident: Identity) -> bool:
    return system.same_process(*ident)


def read_pidfile(path: Path, count: int = 1, timeout: float = 20) -> list[Identity]:
    """Wait until the fake agent wrote `count` pids to `path` (FAKE:pidfile=PATH); their
    identities, all of them alive when read."""

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


def run_processes(execution_id: int, home: str | Path | None = None) -> list[Identity]:
    """Live processes carrying the run marker EMDX_EXECUTION_ID=<id> whose EMDX_HOME is `home`
    (default: this test's): every EMDX_HOME numbers its executions from 1. (emdx itself finds
    a run's processes by its unique run key; tests know runs by id.)"""
    wanted = os.path.realpath(str(home) if home is not None else os.environ["EMDX_HOME"])
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        env = env_of(proc.pid)
        if env.get(system.MARKER) != str(execution_id) or env.get("EMDX_HOME") != wanted:
            continue
        started = system.process_start_time(proc.pid)
        if started is not None:
            found.append((proc.pid, started))
    return found


def run_files(row: Execution) -> dict[str, Path]:
    """The run's files by kind (log, prompt, runner.err, final, env), named by its run key."""
    assert row.run_key, f"execution {row.id} has no run key"
    return {
        "log": Path(row.log_file) if row.log_file else paths.run_log_path(row.run_key),
        "prompt": paths.prompt_path(row.run_key),
        "runner.err": paths.runner_err_path(row.run_key),
        "final": paths.final_path(row.run_key),
        "env": paths.env_path(row.run_key),
    }


def assert_gone(identities: Sequence[Identity], timeout: float = 15, what: str = "") -> None:
    """Wait until none of the processes is alive; fail naming those that are still there."""
    wait_until(
        lambda: not any(alive(i) for i in identities),
        timeout,
        message=lambda: f"processes {[i for i in identities if alive(i)]}{what} to exit",
    )


def supervisor_of(row: Execution) -> Identity:
    """The supervisor the row recorded (pid and start time), which must be recorded."""
    assert row.pid is not None and row.pid_started_at is not None, f"no supervisor in {row}"
    return (row.pid, row.pid_started_at)


def agent_of(row: Execution) -> Identity:
    """The agent the row recorded (pid and start time), which must be recorded."""
    assert row.agent_pid is not None and row.agent_started_at is not None, f"no agent in {row}"
    return (row.agent_pid, row.agent_started_at)


def row_identities(row: Execution) -> list[Identity]:
    """The supervisor and the agent the row recorded; a recorded pid must have its start time."""
    found = []
    for name, pid, started in (
        ("supervisor", row.pid, row.pid_started_at),
        ("agent", row.agent_pid, row.agent_started_at),
    ):
        if pid:
            assert started is not None, f"{name} start time of execution {row.id} not recorded"
            found.append((pid, started))
    return found


def assert_run_gone(row: Execution, extra: Sequence[Identity] = (), timeout: float = 15) -> None:
    """The run's supervisor and agent, the `extra` processes and every process marked as the
    run's (of this test's database) are gone."""
    assert_gone([*extra, *row_identities(row)], timeout, f" of execution {row.id}")
    wait_until(
        lambda: not system.marked_processes(row.run_key),
        timeout,
        message=lambda: f"marked processes {system.marked_processes(row.run_key)} of {row.id}",
    )


def _marked_under(root: str) -> list[Identity]:
    """Live processes carrying a run marker whose EMDX_HOME is `root` or lies under it."""
    prefix = root.rstrip("/") + "/"
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        env = env_of(proc.pid)
        home = env.get("EMDX_HOME", "")
        if (home == root.rstrip("/") or home.startswith(prefix)) and system.MARKER in env:
            started = system.process_start_time(proc.pid)
            if started is not None:
                found.append((proc.pid, started))
    return found


def sigkill(identities: Iterable[Identity]) -> None:
    """SIGKILL each process that is still the one identified (SIGCONT first: a stopped one too)."""
    for pid, started in identities:
        if system.same_process(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)  # a SIGSTOPped process must not linger
                os.kill(pid, signal.SIGKILL)


def kill_test_processes(root: str | Path, extra: Iterable[Identity] = (), rounds: int = 3) -> None:
    """SIGKILL every process of a test's runs and wait (5 s at most) until they are gone.

    First the known identities in `extra` (a supervisor killed before the scan cannot start a
    queued run meanwhile), then every process marked as a run's whose EMDX_HOME is
    `root` (the test's tmp dir, or its EMDX_HOME) or lies under it; scanned again, up to
    `rounds` times, until a scan finds none (a supervisor may have started one just before).
    """
    victims = [i for i in extra if alive(i)]
    sigkill(victims)
    for _ in range(rounds):
        found = _marked_under(str(root))
        if not found:
            break
        sigkill(found)
        victims += found
        time.sleep(0.1)
    system.wait_gone(victims, 5.0)


def recorded_identities(
    source: Service | Callable[[], Iterable[Execution]],
) -> list[Identity]:
    """(pid, start time) of every supervisor and agent recorded in the execution rows of a
    Service (or of `source()`): what the reaper must kill even if it cannot read a process's
    environment. Whatever was read before the database failed (a test may corrupt it on
    purpose) is returned."""
    if isinstance(source, Service):
        service = source

        def rows() -> Iterable[Execution]:
            return service.store.executions.list_executions(None, None)

    else:
        rows = source
    found: list[Identity] = []
    with contextlib.suppress(Exception):
        for row in rows():
            for pid, started in (
                (row.pid, row.pid_started_at),
                (row.agent_pid, row.agent_started_at),
            ):
                if pid and started:
                    found.append((pid, started))
    return found


# -- witnesses ----------------------------------------------------------------------------------

# A process that writes down every catchable signal it receives (one number a line) and otherwise
# sleeps: proof that emdx never signalled it (SIGKILL cannot be caught, but then it would not be
# alive any more).
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
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    time.sleep(0.2)
"""


@dataclass
class Witness:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def identity(self) -> Identity:
        started = system.process_start_time(self.proc.pid)
        assert started is not None, f"witness {self.proc.pid} died"
        return (self.proc.pid, started)

    def signals(self) -> list[int]:
        """The signals it got so far."""
        try:
            return [int(x) for x in self.log.read_text().split()]
        except FileNotFoundError:
            return []


def start_witness(
    log: Path,
    env: Mapping[str, str] | None = None,
    popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
) -> Witness:
    """A live process unrelated to emdx (in a session of its own, no run marker unless `env`
    adds one) that logs the signals it gets to `log`; `popen` starts it (a tracker's, so that
    teardown kills it)."""
    child_env = {k: v for k, v in os.environ.items() if k not in (system.MARKER, system.MARKER_DB)}
    child_env.update(env or {})
    proc = popen(
        [sys.executable, "-c", WITNESS, str(log)],
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    ready = Path(str(log) + ".ready")
    wait_until(ready.exists, 20, message=f"witness {proc.pid} ready")
    return Witness(proc, log)


# -- databases and services ---------------------------------------------------------------------


def seed_execution_ids(db: Path, last_id: int | None = None) -> int:
    """Make this database hand out execution ids after `last_id` (default: a random high base).

    Every test has its own EMDX_HOME whose ids would start at 1; runs are found again by the
    `EMDX_EXECUTION_ID=<id>` marker in their environment. Distinct ids keep concurrent test
    sessions on this machine apart even if a marker check ever ignores the data dir (it did once,
    see test_marker_is_not_shared_across_homes).
    """
    base = last_id if last_id is not None else random.randrange(10**6, 2**31 - 10**6)
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'executions'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('executions', ?)", (base,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return base


def open_sqlite(path: Path) -> SqliteStore:
    """`open_store(path)` for the SQLite-only tests, which also read the connection itself."""
    store = open_store(path)
    assert isinstance(store, SqliteStore), store
    return store


def save_doc(
    service: Service,
    content: str,
    *,
    title: str | None = None,
    tags: str | None = None,
    project: str | None = None,
) -> int:
    """Save a document as given (no type detection from its content); its id."""
    return service.save_document(content, title=title, tags=tags, project=project, detect=False).id


def recorded_time(value: str | None) -> datetime:
    """A time the store recorded (ISO-8601), which must be there."""
    moment = parse_time(value)
    assert moment is not None, f"no time recorded: {value!r}"
    return moment


def new_service() -> Service:
    """A Service on this test's EMDX_HOME: database created and migrated, execution ids seeded
    high (see seed_execution_ids)."""
    service = Service()
    service.store  # noqa: B018 - creates and migrates the database
    seed_execution_ids(paths.db_path())
    return service


@pytest.fixture
def service(isolated_env: Path) -> Iterator[Service]:
    """`new_service()`; at teardown every process of its runs (recorded in its rows, or marked
    with an EMDX_HOME under the test's tmp dir) is SIGKILLed, then it is closed. A suite's
    conftest imports it (under the name the suite uses: `from testkit import service as svc`)."""
    svc = new_service()
    try:
        yield svc
    finally:
        kill_test_processes(isolated_env.parent, recorded_identities(svc))
        svc.close()


@pytest.fixture(autouse=True)
def reap_leftovers(isolated_env: Path) -> Iterator[None]:
    """Whatever a test's runs started (CLI runs included) is SIGKILLed when the test ends."""
    yield
    kill_test_processes(isolated_env.parent)


def fake_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake agent with fast timings in `os.environ` (supervisors inherit it), and no
    inherited run marker or setting that would change what a run does."""
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(FAKE_CLAUDE))
    monkeypatch.setenv("EMDX_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "1")
    monkeypatch.setenv("EMDX_RESULT_EXIT_GRACE_SECONDS", "2")
    for name in (
        "EMDX_MAX_PARALLEL",
        "EMDX_EXECUTION_ID",
        "EMDX_DB",
        "EMDX_LOG_MAX_BYTES",
        "EMDX_LINE_MAX_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)


# -- the CLI ------------------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    # The bytes as written (the texts above are decoded with "replace", which hides raw bytes).
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    def json(self) -> Any:
        """stdout as the one JSON document `--json` prints."""
        return json.loads(self.stdout)


def run_emdx(
    *args: str,
    input: str | bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> CliResult:
    """Run the real `emdx` entry point in a subprocess (exit codes and stderr as a user sees);
    stdin is a pipe (not a terminal), empty unless `input` is given."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    data = input.encode() if isinstance(input, str) else input
    done = subprocess.run(
        [sys.executable, "-m", "emdx", *args],
        input=data if data is not None else b"",
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return CliResult(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
        done.stdout,
        done.stderr,
    )


def one_line_error(result: CliResult, *needles: str, code: int = 1) -> str:
    """Exit `code`, nothing on stdout, exactly one stderr line `emdx: error: …` holding every
    needle, no traceback (DESIGN §4); that line."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("emdx: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


class Cli(Protocol):
    """The `cli` fixture (tests/conftest.py): `run_emdx`."""

    def __call__(
        self,
        *args: str,
        input: str | bytes | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> CliResult: ...


# -- runs ---------------------------------------------------------------------------------------

EXECUTION_ID = re.compile(r"execution #(\d+)")


def started_id(stdout: str) -> int:
    """The id in `emdx claude execute`'s "running execution #N (…)" (or queued, failed)."""
    match = EXECUTION_ID.search(stdout)
    assert match, f"no execution id in {stdout!r}"
    return int(match.group(1))


def result_payload(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The fake agent's result text (prompt size, sha256, argv) from a run's log entries."""
    results = [e for e in entries if e.get("type") == "result"]
    assert results, "no result entry in the log"
    return dict(json.loads(results[-1]["raw"]["result"]))


class RunWaits:
    """Waiting on one test's execution rows; a suite's helper class says how a row is read."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._n = 0

    def get(self, execution_id: int) -> Execution:
        raise NotImplementedError

    def pidfile(self) -> Path:
        """A new path for the fake agent's FAKE:pidfile=PATH."""
        self._n += 1
        return self.tmp_path / f"pids-{self._n}"

    def diagnose(self, execution_id: int) -> str:
        """The row, the supervisor's stderr and the end of the run log, for failure messages."""
        try:
            row = self.get(execution_id)
        except Exception as exc:  # a test may have broken the database on purpose
            return f"row: unreadable ({exc!r})"
        files = run_files(row) if row.run_key else {}
        err = files.get("runner.err")
        stderr = err.read_text(errors="replace")[-2000:] if err and err.exists() else "(none)"
        log = files.get("log")
        tail = log.read_text(errors="replace").splitlines()[-8:] if log and log.exists() else []
        running = system.same_process(row.pid, row.pid_started_at)
        return (
            f"row: status={row.status.value} exit={row.exit_code} reason={row.reason} "
            f"pid={row.pid} (alive={running}) agent_pid={row.agent_pid}\n"
            f"runner stderr: {stderr}\nlog tail:\n" + "\n".join(t[:300] for t in tail)
        )

    def wait_status(self, execution_id: int, statuses: set[str], timeout: float = 30) -> Execution:
        def check() -> Execution | None:
            row = self.get(execution_id)
            return row if row.status.value in statuses else None

        try:
            return wait_until(check, timeout, message=f"execution {execution_id} in {statuses}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose(execution_id)}") from None

    def wait_final(self, execution_id: int, timeout: float = 30) -> Execution:
        return self.wait_status(execution_id, set(FINAL_STATUSES), timeout)

    def wait_agent(self, execution_id: int, timeout: float = 20) -> Execution:
        """The row once the supervisor has recorded itself (pid, start time, first heartbeat)
        and its agent; failing at once if the run ends first."""

        def check() -> Execution | None:
            row = self.get(execution_id)
            if row.status.is_final:
                raise AssertionError(f"execution {execution_id} ended early: {row}")
            ready = (
                row.pid
                and row.pid_started_at
                and row.heartbeat_at
                and row.agent_pid
                and row.agent_started_at
            )
            return row if ready else None

        return wait_until(check, timeout, message=f"agent of execution {execution_id}")

    def wait_running_agent(self, execution_id: int, timeout: float = 20) -> Execution:
        """`wait_agent` under the name the runner and cleanup suites use."""
        return self.wait_agent(execution_id, timeout)


# -- the real Claude Code CLI -------------------------------------------------------------------


def claude_bin() -> str:
    """The real Claude Code CLI: $EMDX_TEST_CLAUDE_BIN, else the repo's node_modules/.bin/claude.

    Missing is a failure, never a skip: a skipped integration test looks green in CI.
    """
    configured = os.environ.get("EMDX_TEST_CLAUDE_BIN")
    if configured:
        if not Path(configured).is_file():
            pytest.fail(f"EMDX_TEST_CLAUDE_BIN={configured} does not exist")
        return configured
    local = REPO / "node_modules" / ".bin" / "claude"
    if not local.exists():
        pytest.fail(
            f"Claude Code CLI not found at {local}. Run `npm ci` in {REPO} "
            "(or set EMDX_TEST_CLAUDE_BIN to a claude binary)."
        )
    return str(local)


INHERITED_CLAUDE_PREFIXES = ("ANTHROPIC", "CLAUDE")


def offline_env(
    base_url: str,
    config_dir: Path,
    home: str | Path,
    tmp_dir: Path,
    *,
    oauth: bool = False,
    max_retries: int | None = None,
) -> dict[str, str]:
    """An environment for a real Claude Code CLI that talks only to the scripted model server at
    `base_url`: `os.environ` without inherited CLAUDE*/ANTHROPIC* variables (a developer's own
    session, a real key, a model override), plus `offline_claude_env`'s settings (`oauth=True`:
    the subscriber path; `max_retries`: CLAUDE_CODE_MAX_RETRIES)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_CLAUDE_PREFIXES)}
    env.update(
        offline_claude_env(
            base_url,
            str(config_dir),
            str(home),
            tmp_dir=str(tmp_dir),
            oauth=oauth,
            max_retries=max_retries,
        )
    )
    return env


def use_offline_claude(
    monkeypatch: pytest.MonkeyPatch,
    base_url: str,
    config_dir: Path,
    home: str | Path,
    tmp_dir: Path,
    *,
    oauth: bool = False,
    max_retries: int | None = None,
) -> None:
    """Make `os.environ` the `offline_env` (emdx's supervisors inherit it) with the real CLI as
    emdx's agent (EMDX_CLAUDE_BIN)."""
    binary = claude_bin()
    for key in list(os.environ):
        if key.startswith(INHERITED_CLAUDE_PREFIXES):
            monkeypatch.delenv(key)
    overrides = offline_claude_env(
        base_url,
        str(config_dir),
        str(home),
        tmp_dir=str(tmp_dir),
        oauth=oauth,
        max_retries=max_retries,
    )
    for key, value in overrides.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EMDX_CLAUDE_BIN", binary)


# -- terminals ----------------------------------------------------------------------------------


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def run_in_pty(
    argv: list[str],
    until: Callable[[bytes], bool] | None = None,
    timeout: float = 60,
    size: tuple[int, int] = (40, 120),
) -> tuple[int, bytes]:
    """Run `emdx ARGV` with a pseudo-terminal (`size`: rows, columns) as stdin, stdout and
    stderr, so that the terminal branches (rich rendering, Live) really run; return its exit
    code and every byte it wrote. With `until`, the command is interrupted (SIGINT, like Ctrl-C)
    once the output so far satisfies it; a command still running at the deadline is killed and
    fails the test."""
    master, slave = pty.openpty()
    rows, columns = size
    _winsize(slave, rows, columns)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emdx", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = Deadline(timeout, lambda: f"`emdx {' '.join(argv)}` in a pty: {b''.join(chunks)!r}")
    interrupted = False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            if until and not interrupted and until(b"".join(chunks)):
                proc.send_signal(signal.SIGINT)
                interrupted = True
            deadline.check()
        # Every writer closed the terminal: the command is exiting.
        code = proc.wait(timeout=30)
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks)


# -- fault injection ----------------------------------------------------------------------------

FAULT_HOOKS = REPO / "tests" / "support" / "faultinject"


def inject_faults(monkeypatch: pytest.MonkeyPatch, *faults: dict[str, Any]) -> None:
    """Make every emdx process started from now on (CLI, supervisors) apply `faults` (see
    tests/support/faultinject/sitecustomize.py): a SIGKILL or a Ctrl-C at a chosen line, a
    database error for a chosen call."""
    paths_now = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{FAULT_HOOKS}{os.pathsep}{paths_now}".rstrip(os.pathsep))
    monkeypatch.setenv("EMDX_FAULTS", json.dumps(list(faults)))


def imported_by(
    args: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Every module a fresh `python -X importtime ARGS` imported (from its import-time log)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "emdx" in modules, f"no import log: {done.stderr[-2000:]}"
    return modules, done


def make_execution(**overrides: object) -> Execution:
    """An execution row as `store.rows.execution_of` builds it (a finished generic run), with
    `overrides`: for tests of pure functions of a row (models, the liveness judge)."""
    values: dict[str, Any] = {f.name: None for f in fields(Execution)}
    values.update(
        id=7,
        doc_title="title",
        exec_type="generic",
        status=ExecutionStatus.COMPLETED,
        event_count=0,
        malformed_count=0,
        options=ExecOptions(),
    )
    values.update(overrides)
    return Execution(**values)
