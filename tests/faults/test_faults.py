"""Fault injection, processes: dead or frozen supervisors and agents, escaped grandchildren,
watchdogs, reused pids.

Every case checks (a) the exact final row, (b) that no process of the run survives (by pid and
start time, and by the EMDX_EXECUTION_ID marker), (c) that nothing else in the database changed.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from faults_helpers import (
    World,
    assert_same_snapshot,
    final_triple,
    log_messages,
)
from testkit import Cli, agent_of, alive, read_pidfile, started_id, supervisor_of, wait_until

from emdx import system
from emdx.models import Execution


def _health(cli: Cli) -> tuple[int, dict[str, Any]]:
    done = cli("exec", "health", "--json")
    assert done.stderr == "", done.stderr
    report: dict[str, Any] = done.json()
    return done.code, report


def _run_report(report: dict[str, Any], execution_id: int) -> dict[str, Any]:
    found = [r for r in report["runs"] if r["id"] == execution_id]
    assert len(found) == 1, report
    run: dict[str, Any] = found[0]
    return run


def test_supervisor_sigkill_is_repaired_and_grandchild_killed(world: World, cli: Cli) -> None:
    """1. SIGKILL the supervisor: the agent dies with it (parent-death signal); the setsid
    grandchild survives until `exec health` repairs the row and kills it by its marker."""
    pidfile = world.pidfile()
    execution = world.start(f"# victim\nFAKE:setsid-child\nFAKE:sleep=60\nFAKE:pidfile={pidfile}\n")
    agent, grandchild = read_pidfile(pidfile, count=2)
    row = world.wait_agent(execution.id)
    assert agent_of(row) == agent
    supervisor = supervisor_of(row)
    assert os.getsid(grandchild[0]) == grandchild[0]  # really escaped into its own session
    before = world.snapshot(execution.id)

    os.kill(supervisor[0], signal.SIGKILL)
    wait_until(lambda: not alive(supervisor), 10, message="supervisor death")
    wait_until(lambda: not alive(agent), 10, message="agent death by parent-death signal")
    assert alive(grandchild), "the setsid grandchild should outlive the supervisor"
    assert world.get(execution.id).status.value == "running"  # nobody repaired it yet

    code, report = _health(cli)
    assert code == 1
    run = _run_report(report, execution.id)
    assert run["verdict"] == "zombie"
    assert run["repaired"]["status"] == "failed"

    final = world.get(execution.id)
    assert final_triple(final) == ("failed", 137, "runner_lost")
    assert final.completed_at is not None
    world.assert_gone(final, [agent, grandchild])
    assert_same_snapshot(before, world.snapshot(execution.id))
    # Repaired once: health is clean now and a cleanup finds nothing more to do.
    assert _health(cli) == (0, {"healthy": True, "runs": [], "repairs": []})
    swept = cli("cleanup", "processes", "--json")
    assert swept.code == 0 and json.loads(swept.stdout)["actions"] == [], swept
    assert world.get(execution.id) == final


def test_agent_sigkill(world: World) -> None:
    """2. SIGKILL the agent mid-run: failed, 137 (128 + 9), no result event."""
    pidfile = world.pidfile()
    execution = world.start(f"# victim\nFAKE:sleep=60\nFAKE:pidfile={pidfile}\n")
    (agent,) = read_pidfile(pidfile)
    world.wait_agent(execution.id)
    before = world.snapshot(execution.id)

    os.kill(agent[0], signal.SIGKILL)
    final = world.wait_final(execution.id, timeout=20)
    assert final_triple(final) == ("failed", 137, "no_result")
    world.assert_gone(final, [agent])
    assert_same_snapshot(before, world.snapshot(execution.id))


def test_timeout_with_agent_ignoring_sigterm(world: World, cli: Cli) -> None:
    """3. `--timeout 2s` and an agent that ignores SIGTERM: SIGKILL after the grace period."""
    pidfile = world.pidfile()
    doc = world.doc(f"# stubborn\nFAKE:ignore-term\nFAKE:sleep=60\nFAKE:pidfile={pidfile}\n")
    done = cli("claude", "execute", str(doc), "--background", "--timeout", "2s")
    assert done.code == 0, done
    execution_id = started_id(done.stdout)
    (agent,) = read_pidfile(pidfile)
    before = world.snapshot(execution_id)

    final = world.wait_final(execution_id, timeout=20)
    assert final_triple(final) == ("failed", 124, "timeout")
    messages = log_messages(final)
    assert any("timeout of 2s reached" in m for m in messages), messages
    assert any("ignored SIGTERM" in m and "SIGKILL" in m for m in messages), messages
    world.assert_gone(final, [agent])
    assert_same_snapshot(before, world.snapshot(execution_id))


def test_setsid_grandchild_after_normal_exit(world: World) -> None:
    """4. The agent leaves a `setsid` grandchild behind and exits 0: success, grandchild killed."""
    pidfile = world.pidfile()
    execution = world.start(f"# escapes\nFAKE:setsid-child\nFAKE:sleep=1\nFAKE:pidfile={pidfile}\n")
    agent, grandchild = read_pidfile(pidfile, count=2)
    assert os.getsid(grandchild[0]) == grandchild[0]
    before = world.snapshot(execution.id)

    final = world.wait_final(execution.id, timeout=20)
    assert final_triple(final) == ("completed", 0, "success")
    world.assert_gone(final, [agent, grandchild])
    messages = log_messages(final)
    assert any("left behind" in m and str(grandchild[0]) in m for m in messages), messages
    assert_same_snapshot(before, world.snapshot(execution.id))


def test_silent_agent_is_stalled(world: World, cli: Cli) -> None:
    """5. No output at all for `--stall-timeout 2s`: failed, 124, stalled."""
    pidfile = world.pidfile()
    doc = world.doc(f"# silent\nFAKE:sleep=60\nFAKE:pidfile={pidfile}\n")
    done = cli("claude", "execute", str(doc), "--background", "--stall-timeout", "2s")
    assert done.code == 0, done
    execution_id = started_id(done.stdout)
    (agent,) = read_pidfile(pidfile)
    before = world.snapshot(execution_id)

    final = world.wait_final(execution_id, timeout=20)
    assert final_triple(final) == ("failed", 124, "stalled")
    messages = log_messages(final)
    assert any("no agent event for 2s" in m for m in messages), messages
    assert not any("SIGKILL" in m for m in messages), "SIGTERM should have been enough"
    world.assert_gone(final, [agent])
    assert_same_snapshot(before, world.snapshot(execution_id))


def test_hang_after_result(world: World) -> None:
    """6. The agent prints its result and never exits (EMDX_RESULT_EXIT_GRACE_SECONDS=2):
    failed, 124, hung_after_result (docs/decisions.md); the result is still recorded."""
    pidfile = world.pidfile()
    execution = world.start(f"# hangs\nFAKE:hang-after-result\nFAKE:pidfile={pidfile}\n")
    (agent,) = read_pidfile(pidfile)
    before = world.snapshot(execution.id)

    final = world.wait_final(execution.id, timeout=20)
    assert final_triple(final) == ("failed", 124, "hung_after_result")
    assert final.cost_usd == 0.0123 and final.session_id  # the result event was kept
    assert any("did not exit 2s after its result" in m for m in log_messages(final))
    world.assert_gone(final, [agent])
    assert_same_snapshot(before, world.snapshot(execution.id))


def test_frozen_supervisor_is_unresponsive_then_recovers(world: World, cli: Cli) -> None:
    """7. SIGSTOP the supervisor: after > 3 heartbeats `exec health` says unresponsive (exit 1)
    and repairs nothing; after SIGCONT the run completes normally and health is clean."""
    pidfile = world.pidfile()
    execution = world.start(f"# frozen\nFAKE:sleep=2\nFAKE:pidfile={pidfile}\n")
    (agent,) = read_pidfile(pidfile)
    row = world.wait_agent(execution.id)
    supervisor = supervisor_of(row)
    before = world.snapshot(execution.id)

    os.kill(supervisor[0], signal.SIGSTOP)
    try:

        def unresponsive() -> dict[str, Any] | None:
            code, report = _health(cli)
            run = _run_report(report, execution.id)
            if run["verdict"] == "healthy":
                assert code == 0
                return None
            assert code == 1, report
            assert report["healthy"] is False
            return run

        run = wait_until(unresponsive, 20, interval=0.3, message="verdict unresponsive")
        assert run["verdict"] == "unresponsive", run
        assert run["runner_alive"] is True
        assert run["heartbeat_age_s"] > 3
        assert run["repaired"] is None
        assert run["status"] == "running"
        assert world.get(execution.id).status.value == "running"
        assert alive(supervisor)
    finally:
        os.kill(supervisor[0], signal.SIGCONT)

    final = world.wait_final(execution.id, timeout=20)
    assert final_triple(final) == ("completed", 0, "success")
    world.assert_gone(final, [agent])
    assert _health(cli) == (0, {"healthy": True, "runs": [], "repairs": []})
    assert_same_snapshot(before, world.snapshot(execution.id))


def _dead_run(world: World) -> Execution:
    """A run whose supervisor (and so its agent) died without finishing the row."""
    pidfile = world.pidfile()
    execution = world.start(f"# reused\nFAKE:sleep=60\nFAKE:pidfile={pidfile}\n")
    (agent,) = read_pidfile(pidfile)
    row = world.wait_agent(execution.id)
    supervisor = supervisor_of(row)
    os.kill(supervisor[0], signal.SIGKILL)
    wait_until(lambda: not alive(supervisor) and not alive(agent), 10, message="run death")
    wait_until(lambda: not system.marked_processes(row.run_key), 10, message="marked processes")
    return row


def test_reused_pids_are_never_signalled(world: World, cli: Cli) -> None:
    """8. Rows whose recorded supervisor and agent pids now belong to live unrelated processes
    (another start time): health, kill and cleanup repair the rows but never signal them."""
    runner_witness, runner_log = world.tracker.witness(world.tmp, "runner")
    agent_witness, agent_log = world.tracker.witness(world.tmp, "agent")

    def reuse(row: Execution) -> None:
        # What pid reuse looks like: same pids, but the processes started later than recorded.
        world.service.store.executions.update(
            row.id,
            pid=runner_witness[0],
            pid_started_at=runner_witness[1] - 60,
            agent_pid=agent_witness[0],
            agent_started_at=agent_witness[1] - 60,
        )

    def witnesses_untouched() -> None:
        assert alive(runner_witness) and alive(agent_witness)
        for log in (runner_log, agent_log):
            assert not log.exists(), f"witness got signals {log.read_text()!r}"

    steps: list[tuple[tuple[str, ...], int, tuple[str, int, str]]] = [
        (("exec", "health", "--json"), 1, ("failed", 137, "runner_lost")),
        # Its supervisor was gone before the kill: the command's sweep finds it lost, and
        # there is nothing left to kill (an invalid state: exit 1).
        (("exec", "kill", "{id}"), 1, ("failed", 137, "runner_lost")),
        (("cleanup", "processes", "--json"), 0, ("failed", 137, "runner_lost")),
    ]
    for argv, expected_code, expected_row in steps:
        original = _dead_run(world)
        reuse(original)
        assert world.get(original.id).status.value == "running"
        before = world.snapshot(original.id)

        done = cli(*(a.format(id=original.id) for a in argv))
        assert done.code == expected_code, done
        final = world.get(original.id)
        assert final_triple(final) == expected_row, argv
        assert final.pid == runner_witness[0]  # the row was repaired, not rewritten
        witnesses_untouched()
        world.assert_gone(original)
        assert_same_snapshot(before, world.snapshot(original.id))
        if argv[0] == "cleanup":
            actions = json.loads(done.stdout)["actions"]
            for action in actions:
                if action["kind"] == "process":
                    assert action["result"] == "already gone", action

    # Nothing left to do, and going over the repaired rows again signals nothing either.
    before = world.snapshot()
    for argv in (("exec", "health"), ("cleanup", "processes"), ("exec", "killall", "--yes")):
        assert cli(*argv).code == 0, argv
    for row in world.service.list_executions(None, None):
        assert cli("exec", "kill", str(row.id)).code == 1  # already final: nothing to kill
    witnesses_untouched()
    assert_same_snapshot(before, world.snapshot())
