"""The supervisor's watchdogs (emdx.runner.watchdog): pure functions of monotonic readings, so
every deadline is checked at chosen moments of a fake clock, with no real waiting."""

from __future__ import annotations

from emdx.runner.watchdog import (
    Alarm,
    Limits,
    Readings,
    alarm_text,
    background_ceiling,
    due,
)


def test_watchdog_deadlines() -> None:
    limits = Limits(timeout_s=60, stall_s=10, result_grace_s=5, background_ceiling_s=600)
    assert due(limits, Readings(began=0, last_event=0), 9.9) is None
    assert due(limits, Readings(began=0, last_event=0), 10) is Alarm.STALLED
    assert due(limits, Readings(began=0, last_event=55), 60) is Alarm.TIMEOUT


def test_each_event_pushes_the_stall_deadline_back() -> None:
    limits = Limits(timeout_s=None, stall_s=10, result_grace_s=5, background_ceiling_s=600)
    readings = Readings(began=0, last_event=0)
    for now in (8.0, 16.0, 24.0, 32.0):  # an event every 8 s: never 10 s of silence
        assert due(limits, readings, now) is None
        readings.last_event = now
    assert due(limits, readings, 41.9) is None
    assert due(limits, readings, 42.0) is Alarm.STALLED


def test_the_timeout_fires_first_and_events_do_not_delay_it() -> None:
    limits = Limits(timeout_s=30, stall_s=10, result_grace_s=5, background_ceiling_s=600)
    lively = Readings(began=100, last_event=129.9)
    assert due(limits, lively, 129.9) is None
    assert due(limits, lively, 130) is Alarm.TIMEOUT
    # Both due at once: the wall-clock timeout is the one reported.
    silent = Readings(began=100, last_event=100, result_at=100)
    assert due(limits, silent, 130) is Alarm.TIMEOUT


def test_no_limits_means_no_alarm_before_a_result() -> None:
    limits = Limits(timeout_s=None, stall_s=None, result_grace_s=30, background_ceiling_s=660)
    assert due(limits, Readings(began=0, last_event=0), 10**9) is None


def test_after_result_grace_waits_for_open_background_tasks() -> None:
    limits = Limits(timeout_s=None, stall_s=None, result_grace_s=30, background_ceiling_s=660)
    readings = Readings(began=0, last_event=0, result_at=100, background_open=1)
    assert due(limits, readings, 200) is None  # a task is open: the CLI is waiting for it
    assert due(limits, readings, 761) is Alarm.HUNG_AFTER_RESULT  # past its own ceiling
    readings.background_open = 0
    assert due(limits, readings, 131) is Alarm.HUNG_AFTER_RESULT
    assert due(limits, readings, 129) is None


def test_background_ceiling_never_under_a_background_shell_limit() -> None:
    """A background Bash shell runs to its own 10-minute limit whatever
    CLAUDE_CODE_PRINT_BG_WAIT_CEILING_MS says (recorded on 2.1.330+): a short ceiling must not
    make emdx stop the CLI as hung while it waits for that shell."""
    assert background_ceiling({}) == 660
    assert background_ceiling({"CLAUDE_CODE_PRINT_BG_WAIT_CEILING_MS": "4000"}) == 660
    assert background_ceiling({"CLAUDE_CODE_PRINT_BG_WAIT_CEILING_MS": "1200000"}) == 1260
    assert background_ceiling({"CLAUDE_CODE_PRINT_BG_WAIT_CEILING_MS": "soon"}) == 660
    assert background_ceiling({"CLAUDE_CODE_PRINT_BG_WAIT_CEILING_MS": "-5"}) == 660


def test_each_alarm_says_which_limit_it_was() -> None:
    limits = Limits(timeout_s=90, stall_s=1800, result_grace_s=30, background_ceiling_s=660)
    assert alarm_text(Alarm.TIMEOUT, limits) == "wall-clock timeout of 90s reached"
    assert alarm_text(Alarm.STALLED, limits) == "no agent event for 1800s: stalled"
    assert alarm_text(Alarm.HUNG_AFTER_RESULT, limits) == (
        "agent did not exit 30s after its result"
    )


def test_a_team_run_cut_off_from_its_database_past_the_tolerance_stops() -> None:
    limits = Limits(
        timeout_s=None, stall_s=None, result_grace_s=5, background_ceiling_s=600, database_s=900
    )
    readings = Readings(began=0, last_event=0)
    readings.last_event = 2000.0  # the agent is lively throughout
    assert due(limits, readings, 2000) is None  # the database is reached
    readings.unreached_since = 1000.0  # its last heartbeat the database took
    assert due(limits, readings, 1899.9) is None
    assert due(limits, readings, 1900) is Alarm.DATABASE_LOST
    assert "EMDX_OUTAGE_TOLERANCE_SECONDS" in alarm_text(Alarm.DATABASE_LOST, limits)
    local = Limits(timeout_s=None, stall_s=None, result_grace_s=5, background_ceiling_s=600)
    assert due(local, readings, 99999) is None  # SQLite: no such bound
