"""Logs that are huge or missing, and commands with nothing to do (issue 11 items 13, 15, 16):
what `exec logs`, `exec show` and `claude execute --after` say, and their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from control_helpers import Ctl

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "stream" / "success_multitool.jsonl"
LOG_CAP = 64 * 1024 * 1024


def capped_log(path: Path) -> int:
    """A run log as the supervisor writes it (one JSON entry a line, each agent event kept as
    `raw`), from real stream-json events, up to the 64 MiB cap; the number of entries."""
    events = [json.loads(line) for line in FIXTURE.read_bytes().splitlines() if line.strip()]
    count = 0
    with path.open("w", encoding="utf-8") as out:
        while out.tell() < LOG_CAP - 64 * 1024:
            for event in events:
                entry = {
                    "ts": "2026-01-01T00:00:00.000000+00:00",
                    "level": "info",
                    "source": "agent",
                    "pid": 4242,
                    "type": event["type"],
                    "icon": "💬",
                    "message": f"event {count}",
                    "raw": event,
                }
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
                count += 1
    return count


def finished_row(ctl: Ctl, log: Path | None) -> int:
    return ctl.insert_row(
        status="completed",
        exit_code=0,
        reason="success",
        completed_at="2026-01-01T00:00:00.000000+00:00",
        started_at="2026-01-01T00:00:00.000000+00:00",
        log_file=str(log) if log else None,
        pid=None,
    )


# Forked from a small process: a child's peak RSS (ru_maxrss) counts the memory of the process
# it was forked from (Linux records the old image's high-water mark at exec), and pytest's own
# is hundreds of MB by the time this runs.
MEASURED = r"""
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"{usage.ru_maxrss}\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_of(argv: list[str], stdout: Path) -> tuple[int, int]:
    """(exit code, peak RSS in KiB) of a command whose stdout goes to a file."""
    with stdout.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", MEASURED, *argv],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    return done.returncode, int(done.stderr.split()[-1])


def test_logs_of_a_capped_64_mib_log_are_streamed(ctl: Ctl, tmp_path: Path) -> None:
    """Item 13: `exec logs` of a 64 MiB log read it whole (23 s and 650 MB on the report; here
    ~460 MB): it streams entry by entry now, `--raw` too, in bounded memory."""
    log = ctl.home / "logs" / "big.jsonl"
    count = capped_log(log)
    assert log.stat().st_size > LOG_CAP - 1024 * 1024
    execution_id = finished_row(ctl, log)
    ctl.ok("exec", "list")  # the database is migrated and swept before measuring

    for raw in (False, True):
        out = tmp_path / f"logs-{raw}.txt"
        argv = [sys.executable, "-m", "emdx", "exec", "logs", str(execution_id)]
        code, peak_kib = peak_rss_of(argv + (["--raw"] if raw else []), out)
        assert code == 0
        # Python, typer and emdx take ~25 MB; reading the log whole took ~460 MB.
        assert peak_kib < 120 * 1024, f"--raw={raw}: peak RSS {peak_kib / 1024:.0f} MB"
        with out.open("rb") as printed:
            first = printed.readline()
            lines = 1 + sum(1 for _ in printed)
        assert lines == count
        if raw:
            with log.open("rb") as source:
                assert json.loads(first) == json.loads(source.readline())


def test_logs_of_a_run_whose_log_is_missing(ctl: Ctl) -> None:
    """Item 15: `exec logs` of a missing log printed nothing and exited 0; it says the log is
    missing (exit 1, one line), and `exec show` says so too (exit 0: the run was shown)."""
    gone = ctl.home / "logs" / "deleted.jsonl"
    execution_id = finished_row(ctl, gone)

    for extra in ((), ("--raw",), ("--follow",)):
        result = ctl.emdx("exec", "logs", str(execution_id), *extra)
        assert (result.code, result.stdout) == (1, ""), (extra, result)
        assert result.stderr == (
            f"emdx: error: the log of execution #{execution_id} is missing: {gone}\n"
        )

    shown = ctl.ok("exec", "show", str(execution_id))
    assert f"{gone} (missing)" in shown.stdout
    assert shown.stdout.rstrip().endswith(
        f"(the log of execution #{execution_id} is missing: {gone})"
    )

    legacy = finished_row(ctl, None)
    result = ctl.emdx("exec", "logs", str(legacy))
    assert result.code == 1 and "has no log" in result.stderr, result


def test_logs_of_a_run_that_has_not_started(ctl: Ctl) -> None:
    blocker = ctl.run("holds\nFAKE:sleep=60\n")
    waiting = ctl.run("later\nFAKE:events=1\n", "--after", str(blocker))
    assert ctl.get(waiting).status.value == "queued"

    result = ctl.emdx("exec", "logs", str(waiting))

    assert (result.code, result.stdout) == (1, ""), result
    assert result.stderr == f"emdx: error: execution #{waiting} is queued: it has no log yet\n"
    shown = ctl.ok("exec", "show", str(waiting))
    assert shown.stdout.rstrip().endswith(f"(execution #{waiting} is queued: it has no log yet)")
    assert "(missing)" not in shown.stdout


def test_execute_after_a_run_that_already_failed_is_an_error(ctl: Ctl) -> None:
    """Item 16: `execute --after N` whose dependency had failed printed "failed execution #…"
    and exited 0. The run cannot start: one error line, exit 1; the row records why."""
    failed = ctl.run("fails\nFAKE:error-result\n")
    assert ctl.wait_final(failed).status.value == "failed"
    doc = ctl.doc("would run after it\nFAKE:events=1\n")

    for mode in ("--background", "--no-smart"):
        result = ctl.emdx("claude", "execute", str(doc), mode, "--after", str(failed))

        assert (result.code, result.stdout) == (1, ""), result
        [line] = result.stderr.splitlines()
        assert line.startswith("emdx: error: execution #") and "did not start" in line
        assert f"after execution #{failed}, which failed" in line
        assert "dependency_failed" in line
        newest = max(ctl.rows(), key=lambda row: row.id)
        assert f"execution #{newest.id} did not start" in line
        assert (newest.status.value, newest.exit_code, newest.reason) == (
            "failed",
            1,
            "dependency_failed",
        )
        assert newest.pid is None and newest.agent_pid is None
