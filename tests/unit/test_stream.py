"""The stream-json parser, progress tracking, summaries and outcome on recorded real CLI output.

The fixtures in tests/fixtures/stream are the exact stdout of Claude Code 2.1.330 runs (see their
README); the rest are hand-made hostile inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emdx.agent.outcome import decide
from emdx.agent.progress import Progress
from emdx.agent.stream import LineFramer, StreamEvent, parse_line
from emdx.agent.summary import summarize
from emdx.models import ExecutionStatus
from emdx.reasons import Reason

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stream"


def replay(name: str, chunk: int = 7) -> tuple[Progress, list[StreamEvent]]:
    """Feed a recording through the framer in small chunks, as the supervisor reads a pipe."""
    data = (FIXTURES / name).read_bytes()
    framer = LineFramer()
    progress = Progress()
    events = []
    for start in range(0, len(data), chunk):
        for line in framer.feed(data[start : start + chunk]):
            event = parse_line(line)
            if event is not None:
                progress.update(event)
                events.append(event)
    for line in framer.flush():
        event = parse_line(line)
        if event is not None:
            progress.update(event)
            events.append(event)
    return progress, events


def test_success_multitool_recording() -> None:
    progress, events = replay("success_multitool.jsonl")
    kinds = [e.kind for e in events]
    assert kinds[0] == "system" and events[0].subtype == "init"
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert progress.event_count == len(events) == 10
    assert progress.malformed_count == 0
    assert progress.session_id == "524d4091-a3a1-4ec3-8e23-9e816508c1ab"
    assert progress.model == "claude-opus-5-5"
    assert progress.num_turns == 4  # the result's count wins over assistant events seen
    assert progress.cost_usd == pytest.approx(0.0472)
    assert progress.tokens is not None
    assert (progress.tokens.input, progress.tokens.output) == (10800, 200)
    outcome = decide(0, progress.result)
    assert (outcome.status, outcome.exit_code, outcome.reason) == (
        ExecutionStatus.COMPLETED, 0, Reason.SUCCESS,
    )  # fmt: skip


def test_tool_uses_are_counted_by_name() -> None:
    progress, events = replay("success_multitool.jsonl")
    names = []
    for event in events:
        if event.kind != "assistant":
            continue
        for block in (event.data or {})["message"]["content"]:
            if block.get("type") == "tool_use":
                names.append(block["name"])
    assert names, "the recording has tool uses"
    assert progress.tool_uses == {name: names.count(name) for name in set(names)}


def test_api_error_recording_is_a_failure_despite_subtype_success() -> None:
    progress, _ = replay("api_error_400.jsonl")
    assert progress.result is not None
    assert progress.result["subtype"] == "success" and progress.result["is_error"] is True
    outcome = decide(1, progress.result)
    assert (outcome.status, outcome.exit_code, outcome.reason) == (
        ExecutionStatus.FAILED, 1, Reason.INVALID_REQUEST,
    )  # fmt: skip
    # Even with exit 0, is_error wins.
    assert decide(0, progress.result).status is ExecutionStatus.FAILED


def test_max_turns_recording() -> None:
    progress, _ = replay("max_turns.jsonl")
    assert progress.result is not None and progress.result["subtype"] == "error_max_turns"
    assert progress.num_turns == 2
    assert progress.cost_usd == pytest.approx(0.0106)
    outcome = decide(1, progress.result)
    assert (outcome.status, outcome.exit_code, outcome.reason) == (
        ExecutionStatus.FAILED, 1, Reason.MAX_TURNS,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["success_multitool.jsonl", "api_error_400.jsonl",
                                  "max_turns.jsonl"])  # fmt: skip
def test_every_recorded_event_has_a_summary(name: str) -> None:
    _, events = replay(name, chunk=1)
    for event in events:
        icon, text = summarize(event)
        assert icon and isinstance(text, str)
        assert "\n" not in text and len(text) <= 400


def test_outcome_rules() -> None:
    ok = {"type": "result", "subtype": "success", "is_error": False}
    assert decide(0, ok).status is ExecutionStatus.COMPLETED
    assert decide(0, None).reason == Reason.NO_RESULT and decide(0, None).exit_code == 1
    assert decide(3, ok).reason == Reason.EXIT_CODE and decide(3, ok).exit_code == 3
    assert decide(-9, None).exit_code == 137
    assert decide(0, {"type": "result", "subtype": "success"}).reason == Reason.AGENT_ERROR
    assert decide(None, ok, timed_out=True).exit_code == 124
    assert decide(None, ok, stalled=True).reason == Reason.STALLED
    assert decide(None, ok, killed=True).exit_code == 143
    assert decide(None, ok, killed=True, needed_sigkill=True).exit_code == 137


def test_hostile_lines_never_raise() -> None:
    lines = [
        b"not json",
        b'{"unterminated": ',
        b"\xff\xfe\xc3\x28 invalid utf-8",
        b"[1, 2, 3]",
        b"42",
        b"null",
        b'{"type": 5}',
        b'{"type": "assistant", "message": "not a dict"}',
        b'{"type": "assistant", "message": {"content": "text, not a list"}}',
        b'{"type": "assistant", "message": {"content": [1, null, {"type": "tool_use"}]}}',
        b'{"type": "user", "message": {"content": [{"type": "tool_result", "content": [1]}]}}',
        b'{"type": "result", "num_turns": "many", "total_cost_usd": "free", "usage": []}',
        b'{"type": "brand_new_event", "payload": {"x": 1}}',
        b"[" * 100_000,
    ]
    progress = Progress()
    for line in lines:
        event = parse_line(line)
        assert event is not None
        progress.update(event)
        summarize(event)
    assert parse_line(b"") is None and parse_line(b"   \t") is None
    assert progress.event_count == len(lines)
    # Non-objects and undecodable text are malformed; unknown types are kept as they are.
    assert progress.malformed_count == 7
    unknown = parse_line(b'{"type": "brand_new_event"}')
    assert unknown is not None and unknown.kind == "brand_new_event"
    not_a_name = parse_line(b'{"type": 5}')
    assert not_a_name is not None and not_a_name.kind == "unknown"


def test_framer_splits_across_chunks_and_caps_long_lines() -> None:
    framer = LineFramer(max_line=10)
    out = list(framer.feed(b"abc\nde"))
    out += list(framer.feed(b"f\n" + b"x" * 25))
    out += list(framer.feed(b"yy\nlast"))
    out += list(framer.flush())
    assert out == [b"abc", b"def", b"x" * 10, b"last"]
    assert framer.truncated == 1
    assert list(LineFramer().flush()) == []


def test_result_json_round_trips_through_log_splice(tmp_path: Path) -> None:
    """The log stores an event's own JSON text as `raw`: it must stay valid JSON."""
    from emdx.runlog import LogWriter, read_entries

    line = (FIXTURES / "success_multitool.jsonl").read_bytes().splitlines()[-1]
    writer = LogWriter(tmp_path / "log.jsonl", max_bytes=1 << 20)
    writer.write("result", "done", raw_json=line + b"\r\n")
    writer.close()
    (entry,) = read_entries(tmp_path / "log.jsonl")
    assert entry["raw"] == json.loads(line)
