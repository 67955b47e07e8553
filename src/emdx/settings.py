"""Every EMDX_* setting, parsed in one place with one rule: a missing, unparsable or
out-of-range value means the default (documented in the README's table)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)

DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_MAX_PARALLEL = 4
DEFAULT_KILL_GRACE_S = 10.0
DEFAULT_RESULT_EXIT_GRACE_S = 30.0
DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_LINE_MAX_BYTES = 16 * 1024 * 1024


def _number(name: str, default: T, parse: Callable[[str], T], minimum: T, inclusive: bool) -> T:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        return default
    if value != value or value in (float("inf"), float("-inf")):  # NaN, infinities
        return default
    ok = value >= minimum if inclusive else value > minimum
    return value if ok else default


def heartbeat_seconds() -> float:
    """EMDX_HEARTBEAT_SECONDS: how often a supervisor beats (recorded in its row)."""
    return _number("EMDX_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_S, float, 0.0, False)


def max_parallel() -> int:
    """EMDX_MAX_PARALLEL: runs holding a slot at once; more wait as `queued`."""
    return _number("EMDX_MAX_PARALLEL", DEFAULT_MAX_PARALLEL, int, 1, True)


def kill_grace() -> float:
    """EMDX_KILL_GRACE_SECONDS: SIGTERM → SIGKILL grace."""
    return _number("EMDX_KILL_GRACE_SECONDS", DEFAULT_KILL_GRACE_S, float, 0.0, True)


def result_exit_grace() -> float:
    """EMDX_RESULT_EXIT_GRACE_SECONDS: how long an agent may stay after its result (with no
    background task open) before it is stopped as hung."""
    return _number("EMDX_RESULT_EXIT_GRACE_SECONDS", DEFAULT_RESULT_EXIT_GRACE_S, float, 0.0, False)


def log_max_bytes() -> int:
    """EMDX_LOG_MAX_BYTES: the size cap of a run's log (positive)."""
    return _number("EMDX_LOG_MAX_BYTES", DEFAULT_LOG_MAX_BYTES, int, 1, True)


def final_write_deadline() -> float:
    """EMDX_FINAL_WRITE_DEADLINE_SECONDS: how long a supervisor retries its final write
    through locks and a full disk before leaving it to the next command (its outcome file)."""
    return _number("EMDX_FINAL_WRITE_DEADLINE_SECONDS", 600.0, float, 0.0, False)


def max_limit_wait() -> float:
    """EMDX_MAX_LIMIT_WAIT_SECONDS: the most a run waits in all for usage limits to reset
    before it fails with `usage_limit` (default 24 h)."""
    return _number("EMDX_MAX_LIMIT_WAIT_SECONDS", 86400.0, float, 0.0, True)


def limit_jitter() -> float:
    """EMDX_LIMIT_JITTER_SECONDS: at most this much is added, at random, to a reset time, so
    that many waiting runs do not all resume in the same second."""
    return _number("EMDX_LIMIT_JITTER_SECONDS", 15.0, float, 0.0, True)


def retry_backoff() -> float:
    """EMDX_RETRY_BACKOFF_SECONDS: the first wait of `--retries` (doubled each time)."""
    return _number("EMDX_RETRY_BACKOFF_SECONDS", 30.0, float, 0.0, True)


def daily_budget_usd() -> float | None:
    """EMDX_DAILY_BUDGET_USD: once today's spend reaches it, new runs wait (none: no budget)."""
    value = _number("EMDX_DAILY_BUDGET_USD", -1.0, float, 0.0, True)
    return None if value < 0 else value


def home() -> str | None:
    """EMDX_HOME: the data directory (None: `~/.config/emdx`, where earlier releases kept it);
    `paths.emdx_home` resolves it."""
    return os.environ.get("EMDX_HOME") or None


def line_max_bytes() -> int:
    """EMDX_LINE_MAX_BYTES: the per-line cap of the agent's stdout (positive; a longer line is
    cut: the agent can print anything, the supervisor's memory is bounded)."""
    return _number("EMDX_LINE_MAX_BYTES", DEFAULT_LINE_MAX_BYTES, int, 1, True)


def claude_bin() -> str | None:
    """EMDX_CLAUDE_BIN: the agent binary (None: `claude` on PATH)."""
    return os.environ.get("EMDX_CLAUDE_BIN") or None


DATABASE_URL = "EMDX_DATABASE_URL"
# The pipe an emdx process hands the URL to the emdx process it starts (or becomes) on: the
# URL is never in a long-lived process's /proc/PID/environ or cmdline (`system.spawn`).
DATABASE_URL_FD = "EMDX_DATABASE_URL_FD"
URL_MAX_BYTES = 16 * 1024
# What was read from that pipe, once per process: the URL, or why it could not be (asked
# again, the answer is the same: never the SQLite file instead of the team's database).
_handed: list[str | Exception] = []


def database_url() -> str | None:
    """EMDX_DATABASE_URL: the PostgreSQL database every host of a team shares (`postgresql://…`,
    DESIGN §9); None (unset or blank) keeps the SQLite file in EMDX_HOME. Unlike the numbers
    above, a value that is no such URL is not read as the default: `open_store` refuses it, so
    a host meant to share the team's database never silently works alone. A process that was
    handed the URL on a pipe (EMDX_DATABASE_URL_FD) reads it from there, once, and forgets the
    variable (its children are not handed it); an unreadable one is an EnvironmentProblem."""
    fd = os.environ.pop(DATABASE_URL_FD, None)
    if fd is not None:
        try:
            _handed[:] = [_read_handed_url(fd)]
        except Exception as exc:
            _handed[:] = [exc]
    if _handed:
        if isinstance(_handed[0], Exception):
            raise _handed[0]
        return _handed[0]
    return os.environ.get(DATABASE_URL, "").strip() or None


def database_url_in_environment() -> bool:
    """Whether EMDX_DATABASE_URL is set here, where /proc/PID/environ shows it to the user's
    other processes (the agents among them) for as long as this process lives."""
    return bool(os.environ.get(DATABASE_URL, "").strip())


def _read_handed_url(fd_text: str) -> str:
    import stat

    from emdx.errors import EnvironmentProblem

    def refuse(why: str) -> EnvironmentProblem:
        return EnvironmentProblem(
            f"cannot read the team's database URL handed over on {DATABASE_URL_FD}={fd_text}: "
            f"{why} (emdx sets that variable for its own processes; use EMDX_DATABASE_URL "
            "or --db)"
        )

    try:
        fd = int(fd_text)
    except ValueError:
        raise refuse("not a file descriptor number") from None
    try:
        if fd < 3 or not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise refuse("not a pipe")
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    data = b""
    try:
        while len(data) <= URL_MAX_BYTES:
            chunk = os.read(fd, URL_MAX_BYTES + 1)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > URL_MAX_BYTES:
        raise refuse(f"more than {URL_MAX_BYTES} bytes")
    url = data.decode("utf-8", "surrogateescape").strip()
    if not url:
        raise refuse("the pipe was closed with nothing in it")
    return url


def host_name() -> str:
    """EMDX_HOST: this host's name in team mode (default: the machine's host name). Runs of
    another host are judged by their worker's heartbeat, never by a local process check."""
    import socket

    value = os.environ.get("EMDX_HOST", "").strip()
    return value or socket.gethostname()


def outage_tolerance() -> float:
    """EMDX_OUTAGE_TOLERANCE_SECONDS: in team mode, how long a run goes on while its supervisor
    cannot reach the team's database (a restart, a failover); past it the run stops,
    failed/database_lost. Its worker and the other hosts ride out the same outage."""
    return _number("EMDX_OUTAGE_TOLERANCE_SECONDS", 900.0, float, 0.0, False)


def worker_heartbeat() -> float:
    """EMDX_WORKER_HEARTBEAT_SECONDS: how often a team worker beats; three missed beats and its
    host is lost (DESIGN §9)."""
    return _number("EMDX_WORKER_HEARTBEAT_SECONDS", 10.0, float, 0.0, False)
