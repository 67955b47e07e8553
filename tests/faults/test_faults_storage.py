"""Fault injection, clock and storage: wall-clock jumps, a locked database, a full disk, a log
deleted mid-run, a corrupt database file.

Every run case checks (a) the exact final row, (b) that no process of the run survives, (c) that
nothing else in the database changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from faults_helpers import (
    LIBFAKETIME,
    World,
    assert_same_snapshot,
    faketime_env,
    final_triple,
    log_entries,
    log_messages,
    one_error_line,
)
from testkit import Cli, alive, read_pidfile, started_id, wait_until

from emdx import paths, system
from emdx.models import now_iso, parse_time, utc_now

# -- 9. wall-clock jump ----------------------------------------------------------------------


NEEDS_FAKETIME = pytest.mark.skipif(not LIBFAKETIME.exists(), reason="no libfaketime")


@NEEDS_FAKETIME
@pytest.mark.parametrize("jump", ["+2d", "-1d"])
def test_wall_clock_jump_mid_run(world: World, cli: Cli, jump: str) -> None:
    """9. The supervisor's wall clock jumps mid-run while its monotonic clock keeps going: the run
    completes (no timeout, no stall) and every event is processed. duration_s is printed."""
    env, rc = faketime_env(world.tmp)
    doc = world.doc("# clock\nFAKE:events=8\nFAKE:interval=0.5\n")
    done = cli("claude", "execute", str(doc), "--background", "--timeout", "30s", env=env)
    assert done.code == 0, done
    execution_id = started_id(done.stdout)
    row = world.wait_agent(execution_id)
    before = world.snapshot(execution_id)
    wait_until(lambda: world.get(execution_id).event_count >= 2, 10, message="first events")
    for pid in (row.pid, row.agent_pid):  # the agent's exec chain (env, pyenv shim) is done
        with open(f"/proc/{pid}/maps") as maps:
            assert "libfaketime" in maps.read(), f"{pid} does not run under libfaketime"

    rc.write_text(f"{jump}\n")
    sign = 1 if jump.startswith("+") else -1

    def jumped() -> bool:
        current = world.get(execution_id)
        beat = parse_time(current.heartbeat_at)
        assert current.status.value == "running", current
        return beat is not None and sign * (beat - utc_now()).total_seconds() > 20 * 3600

    wait_until(jumped, 10, message="a heartbeat written with the jumped clock")

    final = world.wait_final(execution_id, timeout=30)
    assert final_triple(final) == ("completed", 0, "success")
    assert final.event_count == 10  # init, 8 assistant events, result: nothing was cut short
    world.assert_gone(final)
    assert_same_snapshot(before, world.snapshot(execution_id))
    print(
        f"\n[wall-clock jump {jump}] started_at={final.started_at} "
        f"completed_at={final.completed_at} duration_s={final.duration_s}"
    )
    # Reported, not judged: started_at (CLI, before the jump) and completed_at (supervisor,
    # after it) are wall-clock times, so the duration shows the jump: +2d gives ~172804 s, -1d
    # gives 0.0 (negative, clamped). The watchdogs use the monotonic clock and were not fooled.
    assert final.duration_s is not None


@NEEDS_FAKETIME
def test_cleanup_after_forward_clock_jump_spares_live_run(world: World, cli: Cli) -> None:
    """9b. After a forward wall-clock jump, a `cleanup processes` (say from cron, seeing the same
    jumped clock) must not take a healthy, heartbeating run with `--timeout 30s` for a frozen
    one that is past its timeout: the run is 2 s old by any monotonic measure.

    FAILS today (bug): cleanup.processes judges "overdue" by wall-clock age of started_at only,
    kills the agent and the supervisor, and the row ends failed/143/no_result (the supervisor,
    still alive when its agent died, records its own reading before cleanup's timeout CAS)."""
    env, rc = faketime_env(world.tmp)
    doc = world.doc("# clock\nFAKE:events=12\nFAKE:interval=0.5\n")
    done = cli("claude", "execute", str(doc), "--background", "--timeout", "30s", env=env)
    assert done.code == 0, done
    execution_id = started_id(done.stdout)
    world.wait_agent(execution_id)
    before = world.snapshot(execution_id)
    rc.write_text("+2d\n")

    def jumped() -> bool:
        beat = parse_time(world.get(execution_id).heartbeat_at)
        return beat is not None and (beat - utc_now()).total_seconds() > 20 * 3600

    wait_until(jumped, 10, message="a heartbeat written with the jumped clock")
    health = cli("exec", "health", "--json", env=env)
    assert health.code == 0, health  # fresh heartbeat: healthy by the code's own measure
    swept = cli("cleanup", "processes", "--json", env=env)
    assert swept.code == 0, swept
    actions = json.loads(swept.stdout)["actions"]

    final = world.wait_final(execution_id, timeout=30)
    assert final_triple(final) == ("completed", 0, "success"), actions
    assert not [a for a in actions if a["result"] == "done"], actions
    world.assert_gone(final)
    assert_same_snapshot(before, world.snapshot(execution_id))


def test_clock_step_does_not_turn_live_runs_into_zombies(world: World) -> None:
    """9c. A step of the system clock (NTP/chrony makestep, VM resume, `date -s`) must not make
    live runs look dead. Linux recomputes /proc/stat `btime` as CLOCK_REALTIME - CLOCK_BOOTTIME
    on every read, so a wall-clock start time (btime + start ticks, what psutil reports) moves
    with every step (psutil#1724, #2526). emdx identifies processes by their boot-relative start
    (field 22 of /proc/PID/stat), which no clock step moves: check that the recorded identities
    are exactly that, and that the run stays healthy and completes. (libfaketime cannot fake
    /proc/stat, so the step itself cannot be simulated here; a regression to wall-clock start
    times fails the equality below.)"""
    execution = world.start("# stepped\nFAKE:events=8\nFAKE:interval=0.5\n")
    row = world.wait_agent(execution.id)
    before = world.snapshot(execution.id)
    ticks = os.sysconf("SC_CLK_TCK")
    for pid, recorded in ((row.pid, row.pid_started_at), (row.agent_pid, row.agent_started_at)):
        assert pid is not None and recorded is not None
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        boot_relative = int(stat[stat.rindex(b")") + 2 :].split()[19]) / ticks
        assert recorded == pytest.approx(boot_relative, abs=0.02), (pid, recorded)
    verdicts = {h.execution.id: h.verdict for h in world.service.health(interval_s=0)}
    final = world.wait_final(execution.id, timeout=30)
    assert final_triple(final) == ("completed", 0, "success"), verdicts
    assert verdicts[execution.id] == "healthy", verdicts
    world.assert_gone(final)
    assert_same_snapshot(before, world.snapshot(execution.id))
    assert row.pid == final.pid


# -- 10. database locked during the final write ------------------------------------------------


@pytest.mark.slow
def test_database_locked_during_final_write(world: World) -> None:
    """10. Another connection holds BEGIN IMMEDIATE from just before the agent finishes until
    15 s later: the supervisor waits it out and still records completed/0."""
    pidfile = world.pidfile()
    execution = world.start(f"# locked\nFAKE:sleep=1.5\nFAKE:pidfile={pidfile}\n")
    (agent,) = read_pidfile(pidfile)
    world.wait_agent(execution.id)
    before = world.snapshot(execution.id)

    blocker = sqlite3.connect(str(world.db), timeout=30, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        locked_at = time.monotonic()
        wait_until(lambda: not alive(agent), 10, message="the agent to finish")
        # Hold the lock for 15 s in all; meanwhile nobody can finish the row.
        while time.monotonic() - locked_at < 15:
            assert world.get(execution.id).status.value == "running"
            time.sleep(0.5)
        released_at = now_iso()
        blocker.execute("COMMIT")
    finally:
        with contextlib.suppress(sqlite3.Error):
            blocker.execute("ROLLBACK")
        blocker.close()

    final = world.wait_final(execution.id, timeout=30)
    assert final_triple(final) == ("completed", 0, "success")
    # completed_at is when the run ended (the supervisor's decision), not when the database
    # took the write.
    assert final.completed_at is not None and final.completed_at < released_at
    messages = log_messages(final)
    assert not any("could not record" in m for m in messages), messages
    world.assert_gone(final, [agent])
    assert_same_snapshot(before, world.snapshot(execution.id))


# -- 11. disk full in the logs directory -------------------------------------------------------


def _fill_logs_dir(world: World, cli: Cli) -> str:
    """A 256 KiB tmpfs over EMDX_HOME/logs; if mounting is impossible, ENOSPC from /dev/full."""
    assert cli("save", "--title", "home exists", input="# created through the CLI\n").code == 0
    try:
        world.tracker.mount_tmpfs(paths.logs_dir(), "256k")
    except (subprocess.CalledProcessError, OSError) as exc:
        # Run files are named by unpredictable run keys (and never opened through a link), so
        # the old fallback of a link to /dev/full at the next run's log path is gone.
        pytest.fail(f"mounting a tmpfs for the full-disk test failed (needs root): {exc}")
    return "tmpfs"


def test_disk_full_in_logs_dir(world: World, cli: Cli) -> None:
    """11. The logs directory is full: the log is best effort, the row is not. The run reaches
    completed/0 with its progress recorded and the supervisor exits cleanly."""
    how = _fill_logs_dir(world, cli)
    pidfile = world.pidfile()
    execution = world.start(f"# chatty\nFAKE:events=5000\nFAKE:pidfile={pidfile}\n")
    before = world.snapshot(execution.id)

    final = world.wait_final(execution.id, timeout=60)
    assert final_triple(final) == ("completed", 0, "success"), how
    assert final.event_count == 5002  # init, 5000 events, result: all counted in the row
    assert final.cost_usd == 0.0123 and final.session_id
    world.assert_gone(final)
    err = paths.runner_err_path(str(final.run_key))
    assert "Traceback" not in (err.read_text() if err.exists() else "")
    if how == "tmpfs":
        usage = os.statvfs(paths.logs_dir())
        # Full but for what the run's end freed (its captured environment, deleted).
        assert usage.f_bavail <= 2, "the logs directory was never full"
    assert_same_snapshot(before, world.snapshot(execution.id))


# -- 12. log deleted mid-run -------------------------------------------------------------------


def test_log_file_deleted_during_run(world: World) -> None:
    """12. Someone deletes the run's log mid-run: the run completes and the log is recreated,
    starting with a warning that says so."""
    execution = world.start("# logged\nFAKE:events=20\nFAKE:interval=0.2\n")
    row = world.wait_agent(execution.id)
    log = Path(row.log_file or "")
    before = world.snapshot(execution.id)

    def has_agent_events() -> bool:
        return any(e.get("source") == "agent" for e in log_entries(world.get(execution.id)))

    wait_until(has_agent_events, 10, message="agent events in the log")
    log.unlink()
    assert world.get(execution.id).status.value == "running"

    final = world.wait_final(execution.id, timeout=30)
    assert final_triple(final) == ("completed", 0, "success")
    assert log.exists()
    entries = log_entries(final)
    warnings = [e for e in entries if "log file was deleted during the run" in e["message"]]
    assert len(warnings) == 1, entries[:3]
    assert warnings[0]["level"] == "warning" and "recreated" in warnings[0]["message"]
    assert entries[0] == warnings[0]  # the first entry of the new file
    assert any(e["type"] == "result" for e in entries)
    assert any("finished: completed" in str(e["message"]) for e in entries)
    world.assert_gone(final)
    assert_same_snapshot(before, world.snapshot(execution.id))


# -- 13. corrupt database file -----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_database_file(world: World, cli: Cli, damage: str) -> None:
    """13. knowledge.db overwritten with garbage / truncated to half: every command exits 1 with
    one `emdx: error:` line, no traceback, and never writes to the file."""
    for i in range(40):  # enough pages that half a file misses some
        world.service.save_document(f"# bulk {i}\n" + "lorem ipsum " * 500, detect=False)
    world.service.close()
    db = world.db
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    original = db.read_bytes()
    if damage == "garbage":
        rng = random.Random(13)
        db.write_bytes(bytes(rng.randrange(256) for _ in range(len(original))))
    else:
        db.write_bytes(original[: len(original) // 2])
    damaged = db.read_bytes()
    mode = db.stat().st_mode

    for argv in (("list",), ("exec", "list"), ("claude", "execute", "1")):
        done = cli(*argv)
        assert done.code == 1, (argv, done)
        line = one_error_line(done.stderr)
        assert str(db) in line, line
        assert done.stdout == "", done.stdout
        assert db.read_bytes() == damaged, f"{argv} changed the database file"
        assert db.stat().st_mode == mode

    # Nothing was started: no run directory, no prompt, no process of this EMDX_HOME.
    assert list(paths.runs_dir().iterdir()) == []
    assert not list(paths.logs_dir().glob("*.prompt.md"))
    assert not system.scan_marked_processes(db)
