"""What the run log says of a result event (emdx.agent.summary), on recorded real CLI output and
on results of resumed sessions (issue 11 item 19)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emdx.agent.stream import parse_line
from emdx.agent.summary import summarize

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stream"


def recorded_result(name: str) -> dict[str, Any]:
    lines = (FIXTURES / name).read_bytes().splitlines()
    results = [json.loads(line) for line in lines if b'"type":"result"' in line]
    assert results, name
    result: dict[str, Any] = results[-1]
    return result


def summary(data: dict[str, Any]) -> tuple[str, str]:
    event = parse_line(json.dumps(data).encode())
    assert event is not None and event.is_result
    return summarize(event)


def test_an_api_error_says_so_with_its_status() -> None:
    """It was logged as "❌ success after 1 turns": the subtype of an API error is "success"."""
    icon, text = summary(recorded_result("api_error_400.jsonl"))
    assert icon == "❌"
    assert (
        text == "API error 400 after 1 turn · $0.0000: messages.0.content.0: unexpected block type"
    )


def test_a_turn_limit_says_so() -> None:
    icon, text = summary(recorded_result("max_turns.jsonl"))
    assert (icon, text) == (
        "❌",
        "turn limit reached after 2 turns · $0.0106: Reached maximum number of turns (1)",
    )


def test_one_turn_is_one_turn() -> None:
    data = {**recorded_result("success_multitool.jsonl"), "num_turns": 1}
    assert summary(data)[1].startswith("done in 1 turn · $0.0472: ")
    data = {**data, "num_turns": 4}
    assert summary(data)[1].startswith("done in 4 turns · $0.0472: ")


def _usage(cost: float) -> dict[str, Any]:
    return {"claude-opus-5-5": {"inputTokens": 10, "outputTokens": 5, "costUSD": cost}}


def test_a_resumed_run_says_its_own_cost_and_the_sessions() -> None:
    """The log showed the session's cumulative cost while the row showed the run's own: the
    line says which is which."""
    base = recorded_result("success_multitool.jsonl")
    resumed = {**base, "total_cost_usd": 0.05, "model_usage_since_last_result": _usage(0.02)}
    assert summary(resumed)[1].startswith("done in 4 turns · $0.0200 (session $0.0500): ")
    # A second result of the same process: what came since the first is not the run's cost.
    later = {**resumed, "result_index": 1}
    assert summary(later)[1].startswith("done in 4 turns · session $0.0500: ")
    # 2.1.197 reports this process's cost only, and no per-process usage: shown as it is.
    old = {k: v for k, v in resumed.items() if k != "model_usage_since_last_result"}
    assert summary(old)[1].startswith("done in 4 turns · $0.0500: ")


def test_hostile_result_fields_never_raise() -> None:
    for data in (
        {"type": "result", "num_turns": True, "total_cost_usd": "lots", "is_error": True},
        {"type": "result", "api_error_status": True, "model_usage_since_last_result": [1]},
        {"type": "result", "errors": [1, None], "model_usage_since_last_result": {"m": "x"}},
    ):
        icon, text = summary(data)
        assert icon == "❌" and isinstance(text, str)
