"""The recorded stream fixtures of each Claude Code version are complete, parse, and are normalised.

The recordings come from scripts/record_streams.py (see tests/fixtures/stream/README.md); this
guards what parser tests rely on: every scenario there for every recorded version, one JSON
object per line, and no trace of the recording machine (temp paths, the server's port).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parent.parent / "fixtures" / "stream"
VERSIONS = ("2.1.197", "2.1.330", "2.1.332")
FIXTURES = (
    "api_error_400",
    "background_task",
    "budget_exceeded",
    "denied_tool",
    "max_turns",
    "multi_block_turn",
    "overloaded_gives_up",
    "overloaded_then_success",
    "rate_limited",
    "resume_first",
    "resume_second",
    "server_error",
    "sigterm_mid_tool",
    "success_multitool",
    "usage_limit_oauth",
    "usage_limit_resumed",
)
UNNORMALISED = re.compile(r"(?<!/work)/tmp/|127\.0\.0\.1:(?!8765\b)\d+|cc-socks/(?!4242\.sock)")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_scenario_is_recorded_and_summarised(version: str) -> None:
    summary = json.loads((STREAMS / version / "summary.json").read_text())
    recorded = sorted(path.stem for path in (STREAMS / version).glob("*.jsonl"))
    assert recorded == sorted(FIXTURES)
    assert sorted(summary) == sorted(FIXTURES)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fixture", FIXTURES)
def test_recording_parses_and_is_normalised(version: str, fixture: str) -> None:
    text = (STREAMS / version / f"{fixture}.jsonl").read_text()
    events = [json.loads(line) for line in text.splitlines()]
    assert events and all(isinstance(event, dict) for event in events)
    assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
    assert events[0]["claude_code_version"] == version
    assert not UNNORMALISED.search(text)
    summary = json.loads((STREAMS / version / "summary.json").read_text())[fixture]
    assert len([e for e in events if e["type"] == "result"]) == len(summary["results"])
