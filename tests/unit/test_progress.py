"""Reading Claude Code's events right (DESIGN §7, issue 12): counts once per message id,
several results per process, per-process cost, background tasks, retries, usage limits,
denials, precise reasons — and what the supervisor does next (wait, retry, finish)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from emdx.agent.outcome import Outcome, decide
from emdx.agent.progress import Progress, UsageLimit
from emdx.agent.stream import StreamEvent, parse_line
from emdx.agent.totals import Banked
from emdx.models import ExecOptions, ExecutionStatus
from emdx.reasons import Reason, reason_help
from emdx.runner import policy


def event(obj: dict[str, Any]) -> StreamEvent:
    parsed = parse_line(json.dumps(obj).encode())
    assert parsed is not None
    return parsed


def feed(*events: dict[str, Any]) -> Progress:
    progress = Progress()
    for obj in events:
        progress.update(event(obj))
    return progress


def assistant(message_id: str | None, *blocks: dict[str, Any], **usage: int) -> dict[str, Any]:
    message: dict[str, Any] = {"model": "claude-opus-5-5", "content": list(blocks)}
    if message_id is not None:
        message["id"] = message_id
    message["usage"] = usage or {"input_tokens": 1000, "output_tokens": 1}
    return {"type": "assistant", "session_id": "s", "message": message}


TEXT = {"type": "text", "text": "thinking about it"}
BASH = {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}
READ = {"type": "tool_use", "id": "t2", "name": "Read", "input": {"file_path": "x"}}


def result(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "result", "subtype": "success", "is_error": False}
    return base | fields


def test_one_turn_of_three_blocks_counts_once() -> None:
    """One API turn with text + 2 tools is 3 assistant events with one message id and the same
    provisional usage: 1 turn, not 3 (and a killed run keeps those numbers)."""
    usage = {
        "input_tokens": 30,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
        "output_tokens": 1,
    }
    progress = feed(*(assistant("msg_1", block, **usage) for block in (TEXT, BASH, READ)))
    assert progress.num_turns == 1
    assert progress.tokens is not None
    assert (progress.tokens.input, progress.tokens.output) == (1230, 1)
    assert (progress.tokens.cache_read, progress.tokens.cache_creation) == (1000, 200)
    assert progress.tool_uses == {"Bash": 1, "Read": 1}
    # The result's numbers are final (here the truth of the example).
    final = result(num_turns=1, usage={**usage, "output_tokens": 50})
    progress.update(event(final))
    assert progress.num_turns == 1 and progress.tokens is not None
    assert (progress.tokens.input, progress.tokens.output) == (1230, 50)


def test_several_results_of_one_process_are_summed() -> None:
    """2.1.330+ waits for background tasks after its first result, may take another turn and
    print a second result: turns and tokens summed, cost from the last cumulative figure
    (here without per-result usage), result text from the last."""
    progress = feed(
        assistant("m1", BASH),
        result(num_turns=2, total_cost_usd=0.02, result="first",
               usage={"input_tokens": 100, "output_tokens": 10}),
        assistant("m2", TEXT),
        result(num_turns=1, total_cost_usd=0.03, result="second", result_index=1,
               usage={"input_tokens": 40, "output_tokens": 5}),
    )  # fmt: skip
    assert progress.num_turns == 3
    assert progress.tokens is not None
    assert (progress.tokens.input, progress.tokens.output) == (140, 15)
    assert progress.cost_usd == pytest.approx(0.03)
    assert progress.result_text == "second"


def test_cost_is_this_process_own() -> None:
    """A resumed session on 2.1.330+: total_cost_usd is cumulative, model_usage_since_last_result
    is this process's; on 2.1.197 total_cost_usd is per process (never subtract)."""
    resumed = feed(
        result(total_cost_usd=0.50, model_usage_since_last_result={
            "claude-opus-5-5": {"costUSD": 0.04}, "claude-haiku-4-5": {"costUSD": 0.01}}),
    )  # fmt: skip
    assert resumed.cost_usd == pytest.approx(0.05)
    old_cli = feed(result(total_cost_usd=0.07))
    assert old_cli.cost_usd == pytest.approx(0.07)
    two = feed(
        result(total_cost_usd=0.6, model_usage_since_last_result={"m": {"costUSD": 0.1}}),
        result(total_cost_usd=0.7, model_usage_since_last_result={"m": {"costUSD": 0.1}}),
    )
    assert two.cost_usd == pytest.approx(0.2)


def test_background_tasks_are_tracked() -> None:
    progress = feed(
        {"type": "system", "subtype": "task_started", "task_id": "b1", "is_backgrounded": True},
        {"type": "system", "subtype": "task_started", "task_id": "f1", "is_backgrounded": False},
        {"type": "system", "subtype": "task_started", "task_id": "b2", "is_backgrounded": True},
    )
    assert progress.background_open == 2
    progress.update(event(
        {"type": "system", "subtype": "task_notification", "task_id": "b1", "status": "completed"}
    ))  # fmt: skip
    assert progress.background_open == 1
    progress.update(event({"type": "system", "subtype": "background_tasks_changed", "tasks": []}))
    assert progress.background_open == 0


def test_retries_are_visible_and_cleared() -> None:
    retry = {"type": "system", "subtype": "api_retry", "attempt": 3, "max_retries": 10,
             "retry_delay_ms": 4000, "error_status": 529, "error": "overloaded"}  # fmt: skip
    progress = feed(retry)
    assert progress.retrying is not None and progress.retrying["attempt"] == 3
    assert progress.details()["retrying"]["error_status"] == 529
    progress.update(event(assistant("m1", TEXT)))
    assert progress.retrying is None


def test_usage_limit_from_its_event_or_the_assistant_error_never_the_text() -> None:
    by_event = feed({"type": "rate_limit_event", "rate_limit_info": {
        "status": "rejected", "resetsAt": 1796200000, "rateLimitType": "five_hour"}})  # fmt: skip
    assert by_event.usage_limit == UsageLimit(1796200000.0, "five_hour")
    by_error = feed({
        "type": "assistant", "error": "rate_limit", "api_error": "usage_limit_reached",
        "api_error_params": {"rate_limit_info": {"status": "rejected", "resetsAt": 1796200100}},
        "message": {"model": "<synthetic>", "content": [TEXT]},
    })  # fmt: skip
    assert by_error.usage_limit is not None and by_error.usage_limit.resets_at == 1796200100
    assert by_error.model is None  # the synthetic model is not the API model
    allowed = feed({"type": "rate_limit_event", "rate_limit_info": {"status": "allowed_warning"}})
    assert allowed.usage_limit is None
    text_only = feed(
        result(
            is_error=True,
            api_error_status=429,
            result="You've hit your 5-hour limit · resets 11:54pm (UTC)",
        )
    )
    assert text_only.usage_limit is None


def test_api_model_not_the_init_alias() -> None:
    progress = feed({"type": "system", "subtype": "init", "model": "claude-opus-4-8[1m]",
                     "claude_code_version": "2.1.332"}, assistant("m", TEXT))  # fmt: skip
    assert progress.model == "claude-opus-5-5"
    assert progress.claude_code_version == "2.1.332"


def test_denials_errors_and_details_are_kept() -> None:
    progress = feed(
        {"type": "system", "subtype": "permission_denied", "tool_name": "Bash",
         "tool_input": {"command": "rm -rf /"}},
        result(is_error=False, permission_denials=[
            {"tool_name": "Bash", "tool_input": {"command": "rm -rf /"}}],
            errors=["x"], duration_api_ms=1200, terminal_reason="completed",
            usage={"input_tokens": 1, "output_tokens": 1,
                   "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1}},
            modelUsage={"claude-opus-5-5": {"costUSD": 0.01}}),
    )  # fmt: skip
    details = progress.details()
    assert details["permission_denials"] == [
        {"tool_name": "Bash", "tool_input": {"command": "rm -rf /"}}
    ]
    assert details["errors"] == ["x"] and details["duration_api_ms"] == 1200
    assert (details["web_search_requests"], details["web_fetch_requests"]) == (2, 1)
    assert details["model_usage"] == {"claude-opus-5-5": {"costUSD": 0.01}}


@pytest.mark.parametrize(
    ("result_fields", "reason"),
    [
        ({"api_error_status": 400}, Reason.INVALID_REQUEST),
        ({"api_error_status": 401}, Reason.AUTH_ERROR),
        ({"api_error_status": 429}, Reason.RATE_LIMITED),
        ({"api_error_status": 500}, Reason.SERVER_ERROR),
        ({"api_error_status": 529}, Reason.OVERLOADED),
        ({"api_error_type": "overloaded_error"}, Reason.OVERLOADED),
        ({"api_error": "usage_limit_reached"}, Reason.USAGE_LIMIT),
        ({}, Reason.AGENT_ERROR),
        ({"subtype": "error_max_turns"}, Reason.MAX_TURNS),
        ({"subtype": "error_max_budget_usd"}, Reason.MAX_BUDGET),
        ({"subtype": "error_during_execution"}, Reason.ERROR_DURING_EXECUTION),
    ],
)
def test_precise_reasons(result_fields: dict[str, Any], reason: Reason) -> None:
    outcome = decide(1, result(is_error=True, **result_fields))
    assert (outcome.status, outcome.reason) == (ExecutionStatus.FAILED, reason)
    assert reason_help(outcome.reason) is not None


def test_every_reason_is_documented_once() -> None:
    for reason in Reason:
        meaning, _ = reason_help(reason) or ("", "")
        assert meaning, reason


def test_usage_limit_waits_then_gives_up_past_the_most_a_run_may_wait() -> None:
    failed = Outcome(ExecutionStatus.FAILED, 1, Reason.USAGE_LIMIT)
    limit = UsageLimit(1000.0, "five_hour")

    def wait(options: ExecOptions, found: UsageLimit, waited: float) -> policy.Wait | None:
        return policy.next_wait(
            failed, options, found, now=400.0, waited_s=waited, retries_done=0,
            max_wait_s=3600.0, jitter_s=10.0, backoff_s=30.0, rng=random.Random(1),
        )  # fmt: skip

    first = wait(ExecOptions(), limit, 0.0)
    assert first is not None and first.reason == "usage_limit" and 1000 <= first.until <= 1010
    assert wait(ExecOptions(wait_limit=False), limit, 0.0) is None
    assert wait(ExecOptions(), UsageLimit(None), 0.0) is None
    assert wait(ExecOptions(), limit, 3100.0) is None


def test_transient_failures_are_retried_with_a_doubling_backoff() -> None:
    overloaded = Outcome(ExecutionStatus.FAILED, 1, Reason.OVERLOADED)
    options = ExecOptions(retries=2)
    kw: dict[str, Any] = {"now": 0.0, "waited_s": 0.0, "max_wait_s": 86400.0, "jitter_s": 0.0,
                          "backoff_s": 30.0}  # fmt: skip
    first = policy.next_wait(overloaded, options, None, retries_done=0, **kw)
    second = policy.next_wait(overloaded, options, None, retries_done=1, **kw)
    assert first is not None and first.until == 30 and first.reason == "retry_backoff"
    assert second is not None and second.until == 60
    assert policy.next_wait(overloaded, options, None, retries_done=2, **kw) is None
    bad = Outcome(ExecutionStatus.FAILED, 1, Reason.INVALID_REQUEST)
    assert policy.next_wait(bad, options, None, retries_done=0, **kw) is None
    done = Outcome(ExecutionStatus.COMPLETED, 0, Reason.SUCCESS)
    assert policy.next_wait(done, options, None, retries_done=0, **kw) is None


def test_attempts_add_up_in_the_row() -> None:
    first = feed(assistant("m1", TEXT), result(num_turns=2, total_cost_usd=0.1,
                 usage={"input_tokens": 100, "output_tokens": 10}))  # fmt: skip
    banked = Banked().plus(first)
    second = feed(assistant("m2", TEXT), result(num_turns=1, total_cost_usd=0.05,
                  usage={"input_tokens": 50, "output_tokens": 5}))  # fmt: skip
    row = banked.row_fields(second, attempt=2)
    assert row["num_turns"] == 3 and row["cost_usd"] == pytest.approx(0.15)
    assert (row["input_tokens"], row["output_tokens"]) == (150, 15)
    assert row["details"]["attempt"] == 2
