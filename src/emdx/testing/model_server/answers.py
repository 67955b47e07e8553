"""What the server answers a turn with: messages, server-sent events, rate-limit headers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from emdx.testing.model_server.scripts import (
    _CLAIM_WINDOWS,
    _DEFAULT_USAGE,
    FINAL_TURN,
    JSON,
    Turn,
    _chunks,
    _new_id,
)


def unified_rate_limit_headers(
    *,
    status: str = "rejected",
    claim: str = "five_hour",
    resets_at: int,
    now: float | None = None,
    utilization: float | None = None,
    overage_status: str = "rejected",
    overage_disabled_reason: str | None = "org_level_disabled",
    retry_after: bool = True,
) -> dict[str, str]:
    """The ``anthropic-ratelimit-unified-*`` response headers of a subscription (OAuth) account.

    ``claim`` names the window that decides (``five_hour``, ``seven_day``...); it gets
    ``status`` and ``resets_at``, the other window is reported as comfortably allowed. A
    rejection also refuses overage (``overage_status``), otherwise Claude Code would just carry
    on "using overage". ``retry-after`` (seconds until the reset) accompanies a rejection, as on
    the real API.
    """
    current = time.time() if now is None else now
    used = utilization if utilization is not None else (1.0 if status == "rejected" else 0.5)
    window = _CLAIM_WINDOWS[claim]
    other = "7d" if window == "5h" else "5h"
    other_reset = int(current) + (7 * 86400 if other == "7d" else 5 * 3600)
    headers = {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": str(resets_at),
        "anthropic-ratelimit-unified-representative-claim": claim,
        f"anthropic-ratelimit-unified-{window}-status": status,
        f"anthropic-ratelimit-unified-{window}-reset": str(resets_at),
        f"anthropic-ratelimit-unified-{window}-utilization": f"{used:g}",
        f"anthropic-ratelimit-unified-{other}-status": "allowed",
        f"anthropic-ratelimit-unified-{other}-reset": str(other_reset),
        f"anthropic-ratelimit-unified-{other}-utilization": "0.25",
        "anthropic-ratelimit-unified-overage-status": overage_status,
    }
    if overage_status == "rejected" and overage_disabled_reason:
        headers["anthropic-ratelimit-unified-overage-disabled-reason"] = overage_disabled_reason
    if status == "rejected" and retry_after:
        headers["retry-after"] = str(max(0, int(resets_at - current)))
    return headers


def _rate_limit_headers(limit: Any, now: float) -> dict[str, str]:
    if not isinstance(limit, Mapping):
        return {}
    if "resets_at" in limit:
        resets_at = int(limit["resets_at"])
    else:
        resets_at = int(now + float(limit.get("reset_in", 3600)))
    return unified_rate_limit_headers(
        status=str(limit.get("status", "rejected")),
        claim=str(limit.get("claim", "five_hour")),
        resets_at=resets_at,
        now=now,
        utilization=limit.get("utilization"),
        overage_status=str(limit.get("overage_status", "rejected")),
        overage_disabled_reason=limit.get("overage_disabled_reason", "org_level_disabled"),
        retry_after=bool(limit.get("retry_after", True)),
    )


def _answer_headers(turn: Turn, error: Mapping[str, Any] | None, now: float) -> dict[str, str]:
    """The response headers of one answer of a turn: the turn's ``rate_limit`` and ``headers``
    go with every answer, an error's own ``rate_limit`` and ``headers`` only with that error
    (so the answer after ``times`` failures is a clean success). Later ones win: the turn's
    ``rate_limit``, the error's, the error's ``headers``, the turn's ``headers``."""
    headers = _rate_limit_headers(turn.get("rate_limit"), now)
    if error is not None:
        headers.update(_rate_limit_headers(error.get("rate_limit"), now))
        headers.update({str(k): str(v) for k, v in dict(error.get("headers") or {}).items()})
    headers.update({str(k): str(v) for k, v in dict(turn.get("headers") or {}).items()})
    return headers


def _usage(turn: Turn) -> JSON:
    usage: JSON = dict(_DEFAULT_USAGE)
    extra = turn.get("usage")
    if isinstance(extra, Mapping):
        usage.update(extra)
    return usage


def _content_blocks(turn: Turn) -> list[JSON]:
    blocks: list[JSON] = []
    uses = turn.get("tool_use")
    text = turn.get("text")
    # The real API never sends an empty text block in front of a tool call.
    if isinstance(text, str) and (text or uses is None):
        blocks.append({"type": "text", "text": text})
    if uses is not None:
        for use in uses if isinstance(uses, list) else [uses]:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": use.get("id") or _new_id("toolu"),
                    "name": use["name"],
                    "input": dict(use.get("input", {})),
                }
            )
    if not blocks:
        blocks.append({"type": "text", "text": FINAL_TURN["text"]})
    return blocks


def _stop_reason(blocks: Sequence[JSON]) -> str:
    return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"


def _message(model: str, blocks: list[JSON], usage: JSON) -> JSON:
    return {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": _stop_reason(blocks),
        "stop_sequence": None,
        "usage": usage,
    }


def _sse_events(model: str, blocks: list[JSON], usage: JSON) -> Iterator[tuple[str, JSON]]:
    """Yield ``(event, data)`` pairs in the order the real API streams them."""
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"}
    # The real API reports a small provisional output count in message_start and the final
    # count in message_delta; the CLI takes the latter.
    start_usage["output_tokens"] = 1
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": _new_id("msg"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in _chunks(block["text"]):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        else:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": block["id"],
                        "name": block["name"],
                        "input": {},
                    },
                },
            )
            for piece in _chunks(json.dumps(block["input"])):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(blocks), "stop_sequence": None},
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        },
    )
    yield "message_stop", {"type": "message_stop"}
