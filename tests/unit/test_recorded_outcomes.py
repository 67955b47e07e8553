"""What emdx makes of each recorded Claude Code stream (tests/fixtures/stream/<version>/): the
final state and reason, turns, tokens, results, denials and usage limits, version by version.
The streams are the real CLI's output (scripts/record_streams.py); the expected values below are
read off the scripts that drove the scripted server, not off emdx's own output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from emdx.agent.outcome import decide
from emdx.agent.progress import Progress, Tokens
from emdx.agent.stream import parse_line

STREAMS = Path(__file__).resolve().parent.parent / "fixtures" / "stream"
VERSIONS = ("2.1.197", "2.1.330", "2.1.332")


@dataclass(frozen=True)
class Expected:
    status: str
    reason: str
    tokens: Tokens | None = None
    results: int = 1
    denials: int = 0
    limit_kind: str | None = None
    turns: int | None = None


NO_TOKENS = Tokens(0, 0, 0, 0)
EXPECTED = {
    "api_error_400": Expected("failed", "invalid_request", NO_TOKENS),
    "budget_exceeded": Expected("failed", "max_budget", Tokens(50000, 1000, 0, 0)),
    "denied_tool": Expected("completed", "success", Tokens(200, 40, 0, 0), denials=1),
    "max_turns": Expected("failed", "max_turns"),
    # One API turn of 3 content blocks (one message id) + a closing turn: cache counted in input.
    "multi_block_turn": Expected("completed", "success", Tokens(2500, 60, 1430, 30), turns=3),
    "overloaded_gives_up": Expected("failed", "overloaded", NO_TOKENS),
    "overloaded_then_success": Expected("completed", "success", Tokens(100, 20, 0, 0)),
    "rate_limited": Expected("failed", "rate_limited", NO_TOKENS),
    "resume_first": Expected("completed", "success", Tokens(2100, 120, 0, 0)),
    # The resumed process's own counts (5000 + 5200 in, 300 + 30 out), not the session's.
    "resume_second": Expected("completed", "success", Tokens(10200, 330, 0, 0)),
    "server_error": Expected("failed", "server_error", NO_TOKENS),
    # Ended by a signal from outside emdx before any result: exit 143 and no result.
    "sigterm_mid_tool": Expected("failed", "no_result", results=0),
    "success_multitool": Expected("completed", "success", turns=4),
    "usage_limit_oauth": Expected("failed", "usage_limit", limit_kind="five_hour"),
    "usage_limit_resumed": Expected("completed", "success"),
}
# 2.1.330+ wait for the background task and print a second result after its notification.
BACKGROUND = {"2.1.197": (1, Tokens(200, 40, 0, 0)), "2.1.330": (2, Tokens(400, 80, 0, 0)),
              "2.1.332": (2, Tokens(400, 80, 0, 0))}  # fmt: skip


def _read(version: str, fixture: str) -> tuple[Progress, int]:
    summary = json.loads((STREAMS / version / "summary.json").read_text())[fixture]
    progress = Progress()
    for line in (STREAMS / version / f"{fixture}.jsonl").read_bytes().splitlines():
        event = parse_line(line)
        if event is not None:
            progress.update(event)
    return progress, int(summary["exit_code"])


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
@pytest.mark.parametrize("version", VERSIONS)
def test_each_recorded_stream_ends_as_expected(version: str, fixture: str) -> None:
    expected = EXPECTED[fixture]
    progress, exit_code = _read(version, fixture)
    outcome = decide(exit_code, progress.result, usage_limit=progress.usage_limit is not None)
    assert (outcome.status.value, str(outcome.reason)) == (expected.status, expected.reason)
    assert outcome.exit_code == exit_code if exit_code else outcome.exit_code == 0
    assert len(progress.results) == expected.results
    if expected.tokens is not None:
        assert progress.tokens == expected.tokens
    if expected.turns is not None:
        assert progress.num_turns == expected.turns
    assert len(progress.denials) == expected.denials, progress.denials
    assert progress.unknown_count == 0 and progress.malformed_count == 0
    assert progress.session_id is not None
    if expected.limit_kind is not None:
        assert progress.usage_limit is not None
        assert progress.usage_limit.kind == expected.limit_kind
        assert progress.usage_limit.resets_at is not None and progress.usage_limit.resets_at > 1e9
    else:
        assert progress.usage_limit is None
    assert progress.background_open == 0
    if progress.results:
        assert progress.cost_usd is not None and progress.cost_usd >= 0


@pytest.mark.parametrize("version", VERSIONS)
def test_a_background_task_is_counted_across_results(version: str) -> None:
    progress, exit_code = _read(version, "background_task")
    results, tokens = BACKGROUND[version]
    assert decide(exit_code, progress.result).reason == "success"
    assert len(progress.results) == results and progress.tokens == tokens
    assert progress.background_open == 0  # the task ended before the process did
    assert progress.result_text


@pytest.mark.parametrize("version", VERSIONS)
def test_retries_are_seen_while_they_happen(version: str) -> None:
    """`system/api_retry` events mark the run as retrying until the next result."""
    lines = (STREAMS / version / "overloaded_gives_up.jsonl").read_bytes().splitlines()
    progress = Progress()
    seen = []
    for line in lines:
        event = parse_line(line)
        if event is None:
            continue
        progress.update(event)
        if progress.retrying is not None:
            seen.append(progress.retrying)
    assert seen and seen[-1]["error_status"] == 529 and seen[-1]["attempt"] >= 1
    assert progress.retrying is None  # the final result ended the retrying


def test_cost_is_the_process_own_on_a_resume() -> None:
    """2.1.330+ report `total_cost_usd` cumulative for the session on a resume; the process's
    own cost is `model_usage_since_last_result`."""
    first, _ = _read("2.1.332", "resume_first")
    second, _ = _read("2.1.332", "resume_second")
    reported = second.result["total_cost_usd"] if second.result else None
    assert first.cost_usd is not None and second.cost_usd is not None
    assert reported == pytest.approx(first.cost_usd + second.cost_usd)
