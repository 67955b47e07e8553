"""Processes: identity (pid + start time), signals, the run markers, reaping, sampling.

Everything that asks the operating system about processes goes through here, so that there is one
identity check and one way to signal (all of a run's processes at once), and tests can reason
about a single place.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from emdx import paths

# Start times are compared with this slack: /proc counts clock ticks (10 ms).
START_TIME_TOLERANCE_S = 0.05


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_start_time(pid: int) -> float | None:
    """Seconds from boot to the process's start, from /proc/<pid>/stat; None for a missing or
    zombie process. Boot-relative on purpose: a wall-clock value (btime + ticks, what psutil
    reports) shifts when the system clock is stepped, and would make live runs look dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19]) / _TICKS


def process_start_time(pid: int) -> float | None:
    """The process's start time, or None if there is no such live process. On Linux it is
    seconds since boot (immune to clock steps); elsewhere psutil's epoch value. Only ever
    compared with values from this same function.

    A zombie counts as dead: it can do no more work, and its pid may be reused once reaped.
    """
    if pid <= 0:
        return None
    if os.path.isdir("/proc/self"):
        try:
            return _proc_start_time(pid)
        except (OSError, ValueError, IndexError):
            pass
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def same_process(pid: int | None, started_at: float | None) -> bool:
    """True when `pid` is alive and is the very process that started at `started_at`."""
    if not pid:
        return False
    actual = process_start_time(pid)
    if actual is None:
        return False
    if started_at is None:
        # No recorded start time (old rows): we cannot prove identity, so never claim it.
        return False
    return abs(actual - started_at) <= START_TIME_TOLERANCE_S


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    started_at: float
    name: str
    cmdline: tuple[str, ...]
    cpu_percent: float | None
    rss_bytes: int | None
    num_children: int


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the process group `pgid`; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def signal_pid(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def send_signal(pid: int, started: float, sig: signal.Signals) -> str:
    """`sig` to the process (pid, start time): "sent", "gone" (not that process any more), or
    "denied" (EPERM: it lives on, and is not reported as killed)."""
    if not same_process(pid, started):
        return "gone"
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "denied"
    return "sent"


def reap_children() -> None:
    """Collect every exited child so none lingers as a zombie (we are a subreaper)."""
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return


def reap(pid: int) -> bool:
    """True when our child `pid` has exited (and is collected now, or was by someone else)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if os.uname().sysname != "Linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants (tools that setsid away) get reparented to us, so we can kill them."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> None:
    """preexec_fn for the agent: SIGKILL it if the supervisor dies (Linux parent-death signal)."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def descendants(pid: int, spare: Collection[tuple[int, float]] = ()) -> list[int]:
    """Live (non-zombie) descendants of `pid`, deepest first, leaving out every process in
    `spare` (pid + start time) and everything below it."""
    import psutil

    spared = {p for p, started in spare if same_process(p, started)}
    found: list[int] = []
    try:
        level = psutil.Process(pid).children()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    while level:
        below = []
        for child in level:
            if child.pid in spared:
                continue
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child.pid)
                below.extend(child.children())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        level = below
    return found[::-1]


MARKER = "EMDX_EXECUTION_ID"
MARKER_KEY = "EMDX_RUN_KEY"
MARKER_DB = "EMDX_DB"


def run_markers(execution_id: int, run_key: str, db: Path) -> dict[str, str]:
    """Environment variables every process of a run carries: which run (its id, for people;
    its unique key, the identity: ids repeat across databases and restored backups), of which
    database."""
    return {MARKER: str(execution_id), MARKER_KEY: run_key, MARKER_DB: str(db)}


def scan_marked_processes(db: Path | None = None) -> dict[str, list[tuple[int, float]]]:
    """Run key → (pid, start time) of every live process marked as belonging to a run of
    database `db` (default: this EMDX_HOME's). The markers survive setsid and reparenting, so
    this finds a run's processes even after its supervisor died; runs of another EMDX_HOME are
    not ours. Processes whose environment we may not read are skipped."""
    import psutil

    wanted_db = str(db or paths.db_path())
    found: dict[str, list[tuple[int, float]]] = {}
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
            key = env.get(MARKER_KEY, "")
            if not key or env.get(MARKER_DB) != wanted_db:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            started = process_start_time(proc.pid)
            if started is not None:
                found.setdefault(key, []).append((proc.pid, started))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def marked_processes(
    run_key: str | None, exclude: set[int] | None = None, db: Path | None = None
) -> list[tuple[int, float]]:
    """(pid, start time) of the live processes of one run (see scan_marked_processes)."""
    if not run_key:
        return []
    skip = exclude or set()
    return [p for p in scan_marked_processes(db).get(run_key, []) if p[0] not in skip]


def wait_gone(identities: list[tuple[int, float]], timeout: float, poll_s: float = 0.05) -> bool:
    """Wait until none of the (pid, start time) processes is alive; True if they all went."""
    deadline = time.monotonic() + timeout
    while True:
        if not any(same_process(pid, started) for pid, started in identities):
            return True
        if time.monotonic() >= deadline:
            return False
        reap_children()
        time.sleep(poll_s)


def identify(pids: list[int]) -> list[tuple[int, float]]:
    """(pid, start time) for each live pid, so later signals can never hit a reused pid."""
    result = []
    for pid in pids:
        started = process_start_time(pid)
        if started is not None:
            result.append((pid, started))
    return result


def kill_identified(
    identities: list[tuple[int, float]], grace_s: float, force: bool = False
) -> bool:
    """SIGTERM every process at once (each checked by pid and start time), wait `grace_s` for
    all of them, SIGKILL the rest. Returns True when SIGKILL was needed. A pid whose start time
    no longer matches is never signalled: it is not our process any more."""
    targets = [(pid, st) for pid, st in identities if same_process(pid, st)]
    if not targets:
        return False
    if not force:
        for pid, started in targets:
            send_signal(pid, started, signal.SIGTERM)
        if wait_gone(targets, grace_s):
            return False
    needed = False
    for pid, started in targets:
        if send_signal(pid, started, signal.SIGKILL) == "sent":
            needed = True
    wait_gone(targets, 5.0)
    return needed


def sample_processes(
    identities: list[tuple[int, float]], interval_s: float = 0.2
) -> dict[int, ProcessInfo]:
    """ProcessInfo for each live process of `identities` (pid + start time checked), with CPU %
    measured over `interval_s` for all of them at once."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    for pid, started in identities:
        if not same_process(pid, started):
            continue
        try:
            proc = psutil.Process(pid)
            proc.cpu_percent(interval=None)
            procs[pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if procs and interval_s > 0:
        time.sleep(interval_s)
    result = {}
    for pid, proc in procs.items():
        try:
            with proc.oneshot():
                result[pid] = ProcessInfo(
                    pid=pid,
                    started_at=process_start_time(pid) or 0.0,
                    name=proc.name(),
                    cmdline=tuple(proc.cmdline()),
                    cpu_percent=proc.cpu_percent(interval=None),
                    rss_bytes=int(proc.memory_info().rss),
                    num_children=len(proc.children(recursive=True)),
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return result
