"""Models: time parsing and formatting, statuses, and the JSON contract of executions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from testkit import make_execution

from emdx.models import (
    FINAL_STATUSES,
    Document,
    ExecOptions,
    ExecutionStatus,
    iso_or_none,
    now_iso,
    parse_time,
    to_iso,
)

# DESIGN.md §4: an execution object has at least these fields.
CONTRACT_FIELDS = {
    "id", "old_id", "doc_id", "doc_title", "exec_type", "status", "reason", "exit_code",
    "started_at", "completed_at", "heartbeat_at", "duration_s", "pid", "agent_pid",
    "working_dir", "branch", "log_file", "session_id", "model", "num_turns", "cost_usd",
    "input_tokens", "output_tokens", "output_doc_id",
}  # fmt: skip

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


# -- times ---------------------------------------------------------------------------------------


def test_parse_time_reads_both_formats_as_the_same_instant() -> None:
    expected = datetime(2025, 7, 17, 22, 27, 14, tzinfo=UTC)
    assert parse_time("2025-07-17 22:27:14") == expected
    assert parse_time("2025-07-17T22:27:14+00:00") == expected
    assert parse_time("2025-07-17T22:27:14Z") == expected
    assert parse_time("2025-07-18T00:27:14+02:00") == expected
    assert parse_time("2025-07-17 22:27:14.250000") == expected + timedelta(milliseconds=250)
    moment = parse_time("2025-07-17 22:27:14")
    assert moment is not None and moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [None, "", "yesterday", "2025-13-45 99:99:99"])
def test_parse_time_rejects_nonsense(value: str | None) -> None:
    assert parse_time(value) is None


def test_to_iso_and_now_iso_are_utc_with_microseconds() -> None:
    moment = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert to_iso(moment) == "2025-01-02T03:04:05.000000+00:00"
    assert ISO_UTC.match(now_iso())
    assert parse_time(now_iso()) is not None
    assert iso_or_none("2025-01-02 03:04:05") == "2025-01-02T03:04:05.000000+00:00"
    assert iso_or_none(None) is None
    assert iso_or_none("garbage") is None
    # The written format sorts lexically in time order.
    earlier = to_iso(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    later = to_iso(datetime(2025, 1, 2, 3, 4, 5, 1, tzinfo=UTC))
    assert earlier < later


# -- statuses ------------------------------------------------------------------------------------


def test_status_finality() -> None:
    assert {
        ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.KILLED,
    } == FINAL_STATUSES  # fmt: skip
    for status in ExecutionStatus:
        assert status.is_final != status.is_active
    assert ExecutionStatus.QUEUED.is_active and ExecutionStatus.RUNNING.is_active
    assert ExecutionStatus("killed") is ExecutionStatus.KILLED
    assert str(ExecutionStatus.RUNNING) == "running"


# -- executions ----------------------------------------------------------------------------------


def test_execution_to_dict_has_every_contract_field() -> None:
    data = make_execution().to_dict()
    assert set(data) >= CONTRACT_FIELDS
    assert data["status"] == "completed"
    assert isinstance(data["options"], dict)


def test_execution_to_dict_normalises_times_and_duration() -> None:
    run = make_execution(
        old_id="claude-42-1752791234",
        started_at="2025-07-17 22:27:14",
        completed_at="2025-07-17T22:28:44.500000+00:00",
        heartbeat_at="2025-07-17 22:28:40",
        exit_code=0,
        cost_usd=0.0123,
    )
    data = run.to_dict()
    assert data["started_at"] == "2025-07-17T22:27:14.000000+00:00"
    assert data["completed_at"] == "2025-07-17T22:28:44.500000+00:00"
    assert data["heartbeat_at"] == "2025-07-17T22:28:40.000000+00:00"
    assert data["duration_s"] == 90.5
    assert data["old_id"] == "claude-42-1752791234"
    assert data["cost_usd"] == 0.0123
    import json

    assert json.loads(json.dumps(data)) == data


def test_duration_of_active_and_unfinished_runs() -> None:
    started = to_iso(datetime.now(UTC) - timedelta(seconds=30))
    running = make_execution(status=ExecutionStatus.RUNNING, started_at=started)
    assert running.duration_s is not None and 29 <= running.duration_s <= 300
    # A final row without completed_at has no duration (not "until now").
    broken = make_execution(status=ExecutionStatus.FAILED, started_at=started)
    assert broken.duration_s is None
    assert make_execution(started_at=None).duration_s is None
    assert make_execution(started_at=None).to_dict()["duration_s"] is None
    # Clock skew never gives a negative duration.
    skewed = make_execution(
        started_at="2025-01-01T00:01:00+00:00", completed_at="2025-01-01T00:00:00+00:00"
    )
    assert skewed.duration_s == 0.0


def test_heartbeat_age() -> None:
    assert make_execution().heartbeat_age_s is None
    beat = to_iso(datetime.now(UTC) - timedelta(seconds=20))
    age = make_execution(heartbeat_at=beat).heartbeat_age_s
    assert age is not None and 19 <= age <= 300


def test_exec_options_round_trip() -> None:
    options = ExecOptions(
        tools=("Read", "Bash(git:*)"),
        smart=False,
        worktree=True,
        timeout_s=90.0,
        model="opus",
        max_turns=5,
        after_id=3,
    )
    data = options.to_dict()
    assert data["tools"] == ["Read", "Bash(git:*)"]
    assert ExecOptions.from_dict(data) == options
    assert ExecOptions.from_dict(None) == ExecOptions()
    assert ExecOptions.from_dict({}) == ExecOptions()
    assert ExecOptions.from_dict({"model": "x", "from_the_future": 1}) == ExecOptions(model="x")


# -- documents -----------------------------------------------------------------------------------


def test_document_to_dict() -> None:
    doc = Document(
        id=1, title="t", content="body", project=None, created_at="2025-01-02 03:04:05",
        updated_at="2025-01-02T03:04:05+00:00", accessed_at=None, access_count=2,
        parent_id=None, is_deleted=False, deleted_at=None, tags=("📝", "🎯"),
    )  # fmt: skip
    data = doc.to_dict()
    assert data["content"] == "body"
    assert data["tags"] == ["📝", "🎯"]
    assert data["created_at"] == data["updated_at"] == "2025-01-02T03:04:05.000000+00:00"
    assert data["accessed_at"] is None
    short = doc.to_dict(with_content=False)
    assert "content" not in short
    assert short["id"] == 1 and short["title"] == "t"
