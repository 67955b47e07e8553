"""What a run has done so far, read from Claude Code's events (DESIGN §7), and what decides how
it ended.

- An API turn arrives as one `assistant` event per content block, all with the same
  `message.id` and the same *provisional* usage: turns and live tokens are counted once per
  message id; the final numbers come from `result` events.
- One process may print several `result`s (2.1.330+ waits for background tasks after the first
  and may take another turn): turns and tokens are summed over them, the result text is the
  last one's, the cost is this process's own (`model_usage_since_last_result` summed when
  present; else `total_cost_usd`, which 2.1.197 reports per process).
- Input tokens include cache reads and writes everywhere; the cache parts are also kept apart.
- Background tasks (`system/task_started` with `is_backgrounded`, `task_notification`,
  `background_tasks_changed`), API retries (`system/api_retry`), usage limits
  (`rate_limit_event` rejected, or an assistant error `usage_limit_reached`) and permission
  denials are tracked; unknown events are counted and kept, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emdx.agent import is_session_id
from emdx.agent.stream import StreamEvent

SYNTHETIC_MODEL = "<synthetic>"
_DONE_TASK_STATES = frozenset({"completed", "failed", "killed", "stopped", "cancelled", "error"})


MAX_NUMBER = 2**53
"""The largest count, cost or time an event may carry (JavaScript's exact integers): a larger or
negative one is hostile or broken and read as absent, so sums stay storable."""


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_NUMBER:
        return value
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if 0.0 <= number <= MAX_NUMBER else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Tokens:
    input: int = 0
    """All input, cache reads and writes included."""
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_creation + other.cache_creation,
        )


def _model_usage_tokens(model_usage: Any) -> Tokens | None:
    """Counts summed over a per-model usage map (`modelUsage`: camelCase keys)."""
    if not isinstance(model_usage, dict) or not model_usage:
        return None
    total = Tokens()
    for entry in model_usage.values():
        if isinstance(entry, dict):
            plain = _int(entry.get("inputTokens")) or 0
            read = _int(entry.get("cacheReadInputTokens")) or 0
            made = _int(entry.get("cacheCreationInputTokens")) or 0
            total = total + Tokens(
                plain + read + made, _int(entry.get("outputTokens")) or 0, read, made
            )
    return total


def result_tokens(result: dict[str, Any]) -> Tokens:
    """A result's counts: its `usage`, unless that is all zeros while the per-model usage has
    counts (2.1.330+ on a budget stop): then the model usage since the last result, else the
    process's `modelUsage`."""
    tokens = tokens_of(result.get("usage")) or Tokens()
    if tokens != Tokens():
        return tokens
    for key in ("model_usage_since_last_result", "modelUsage"):
        found = _model_usage_tokens(result.get(key))
        if found is not None and found != Tokens():
            return found
    return tokens


def tokens_of(usage: Any) -> Tokens | None:
    """A `usage` object (assistant message or result) as counts, cache included in input."""
    if not isinstance(usage, dict):
        return None
    plain = _int(usage.get("input_tokens")) or 0
    read = _int(usage.get("cache_read_input_tokens")) or 0
    made = _int(usage.get("cache_creation_input_tokens")) or 0
    return Tokens(plain + read + made, _int(usage.get("output_tokens")) or 0, read, made)


def _model_usage_cost(model_usage: Any) -> float | None:
    """The summed `costUSD` of a per-model usage map (`modelUsage` and friends)."""
    if not isinstance(model_usage, dict) or not model_usage:
        return None
    costs = [
        _float(entry.get("costUSD")) for entry in model_usage.values() if isinstance(entry, dict)
    ]
    known = [c for c in costs if c is not None]
    return sum(known) if known else None


@dataclass(frozen=True)
class UsageLimit:
    resets_at: float | None
    """Epoch seconds when the limit resets (from `resetsAt`, never from the text)."""
    kind: str | None = None
    """`five_hour`, `seven_day`, … as the CLI reports it."""


@dataclass
class Progress:
    """Updated from every event of one agent process."""

    session_id: str | None = None
    init_model: str | None = None
    api_model: str | None = None
    claude_code_version: str | None = None
    event_count: int = 0
    malformed_count: int = 0
    unknown_count: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    tool_uses: dict[str, int] = field(default_factory=dict)
    background: set[str] = field(default_factory=set)
    retrying: dict[str, Any] | None = None
    usage_limit: UsageLimit | None = None
    denials: list[dict[str, Any]] = field(default_factory=list)
    _messages: dict[str, Tokens] = field(default_factory=dict)
    _anonymous_turns: int = 0
    _anonymous_tokens: Tokens = field(default_factory=Tokens)

    # -- reading ---------------------------------------------------------------------------

    @property
    def result(self) -> dict[str, Any] | None:
        """The last result (the outcome is decided from it)."""
        return self.results[-1] if self.results else None

    @property
    def model(self) -> str | None:
        """The API model (`message.model`), not the init alias with its "[1m]" context tag."""
        return self.api_model or self.init_model

    @property
    def background_open(self) -> int:
        return len(self.background)

    @property
    def num_turns(self) -> int | None:
        if self.results:
            return sum(_int(r.get("num_turns")) or 0 for r in self.results)
        turns = len(self._messages) + self._anonymous_turns
        return turns or None

    @property
    def tokens(self) -> Tokens | None:
        """Final numbers once there is a result (summed over this process's results); until
        then the provisional usage, counted once per message id."""
        if self.results:
            total = Tokens()
            for result in self.results:
                total = total + result_tokens(result)
            return total
        if not self._messages and not self._anonymous_turns:
            return None
        total = self._anonymous_tokens
        for tokens in self._messages.values():
            total = total + tokens
        return total

    @property
    def cost_usd(self) -> float | None:
        """This process's cost: `model_usage_since_last_result` summed over its results when
        the CLI gives it (2.1.330+, whose `total_cost_usd` is cumulative for a resumed
        session), else the last `total_cost_usd` (2.1.197 reports per process)."""
        if not self.results:
            return None
        since = [_model_usage_cost(r.get("model_usage_since_last_result")) for r in self.results]
        if all(cost is not None for cost in since):
            return sum(c for c in since if c is not None)
        for result in reversed(self.results):
            cost = _float(result.get("total_cost_usd"))
            if cost is None:
                cost = _float(result.get("cost_usd"))
            if cost is not None:
                return cost
        return None

    @property
    def result_text(self) -> str | None:
        return _str((self.result or {}).get("result"))

    # -- updating --------------------------------------------------------------------------

    def update(self, event: StreamEvent) -> None:
        self.event_count += 1
        if event.kind == "malformed":
            self.malformed_count += 1
            return
        data = event.data or {}
        session = data.get("session_id")
        if is_session_id(session):
            self.session_id = session
        if event.kind == "system":
            self._on_system(event.subtype, data)
        elif event.kind == "assistant":
            self._on_assistant(data)
        elif event.kind == "user":
            pass
        elif event.is_result:
            self.results.append(data)
            self.retrying = None
            self._denials(data.get("permission_denials"))
        elif event.kind == "rate_limit_event":
            self._on_rate_limit(data.get("rate_limit_info"))
        else:
            self.unknown_count += 1

    def _on_system(self, subtype: str | None, data: dict[str, Any]) -> None:
        if subtype == "init":
            self.init_model = _str(data.get("model")) or self.init_model
            self.claude_code_version = (
                _str(data.get("claude_code_version")) or self.claude_code_version
            )
        elif subtype == "api_retry":
            self.retrying = {
                "attempt": _int(data.get("attempt")),
                "max_retries": _int(data.get("max_retries")),
                "retry_delay_ms": _float(data.get("retry_delay_ms")),
                "error_status": _int(data.get("error_status")),
                "error": _str(data.get("error")),
            }
        elif subtype == "task_started":
            task = _str(data.get("task_id")) or _str(data.get("id"))
            if task and data.get("is_backgrounded") is True:
                self.background.add(task)
        elif subtype == "task_notification":
            task = _str(data.get("task_id")) or _str(data.get("id"))
            status = _str(data.get("status"))
            if task and (status is None or status in _DONE_TASK_STATES):
                self.background.discard(task)
        elif subtype == "background_tasks_changed":
            current = _background_ids(data)
            if current is not None:
                self.background = current
        elif subtype == "permission_denied":
            self._denials([data])

    def _on_assistant(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if not isinstance(message, dict):
            return
        self.retrying = None
        model = _str(message.get("model"))
        if model and model != SYNTHETIC_MODEL:
            self.api_model = model
        usage = tokens_of(message.get("usage")) or Tokens()
        message_id = _str(message.get("id"))
        if message_id is not None:
            # One API turn, several events (one per content block): count it once.
            self._messages.setdefault(message_id, usage)
        else:
            self._anonymous_turns += 1
            self._anonymous_tokens = self._anonymous_tokens + usage
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                name = str(block.get("name") or "?")
                self.tool_uses[name] = self.tool_uses.get(name, 0) + 1
        params = data.get("api_error_params")
        info = params.get("rate_limit_info") if isinstance(params, dict) else None
        if data.get("api_error") == "usage_limit_reached":
            self._on_rate_limit({**(info if isinstance(info, dict) else {}), "status": "rejected"})
        elif data.get("error") == "rate_limit" and isinstance(info, dict):
            self._on_rate_limit(info)

    def _on_rate_limit(self, info: Any) -> None:
        if not isinstance(info, dict) or info.get("status") != "rejected":
            return
        old = self.usage_limit or UsageLimit(None)
        resets = _float(info.get("resetsAt"))
        self.usage_limit = UsageLimit(
            resets if resets is not None else old.resets_at,
            _str(info.get("rateLimitType")) or old.kind,
        )

    def _denials(self, found: Any) -> None:
        if not isinstance(found, list):
            return
        for denial in found:
            if not isinstance(denial, dict):
                continue
            entry = {
                "tool_name": _str(denial.get("tool_name")) or _str(denial.get("tool")) or "?",
                "tool_input": denial.get("tool_input"),
            }
            # 2.1.330+ report a denial twice: as it happens (`system/permission_denied`, no
            # input) and in the result's list; one tool call is one denial.
            use_id = _str(denial.get("tool_use_id"))
            same = next(
                (d for d in self.denials if use_id and d.get("tool_use_id") == use_id), None
            )
            if same is not None:
                if same.get("tool_input") is None:
                    same["tool_input"] = entry["tool_input"]
                continue
            if use_id:
                entry["tool_use_id"] = use_id
            elif entry in self.denials:
                continue
            self.denials.append(entry)

    # -- what the row keeps ----------------------------------------------------------------

    def details(self) -> dict[str, Any]:
        """What `exec show` explains an ending with (kept as JSON in the row)."""
        result = self.result or {}
        usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        server_tools = usage.get("server_tool_use") if isinstance(usage, dict) else None
        server_tools = server_tools if isinstance(server_tools, dict) else {}
        errors = result.get("errors")
        text = _str(result.get("result"))
        found: dict[str, Any] = {
            "results": len(self.results),
            "subtype": _str(result.get("subtype")),
            "is_error": result.get("is_error")
            if isinstance(result.get("is_error"), bool)
            else None,
            "api_error_status": _int(result.get("api_error_status")),
            "api_error_type": _str(result.get("api_error_type")),
            "api_error": _str(result.get("api_error")),
            "terminal_reason": _str(result.get("terminal_reason")),
            "errors": [str(e) for e in errors] if isinstance(errors, list) else [],
            "error_text": text[:2000] if text and result.get("is_error") is not False else None,
            "permission_denials": self.denials,
            "model_usage": result.get("modelUsage")
            if isinstance(result.get("modelUsage"), dict)
            else None,
            "duration_ms": _int(result.get("duration_ms")),
            "duration_api_ms": _int(result.get("duration_api_ms")),
            "web_search_requests": _int(server_tools.get("web_search_requests")),
            "web_fetch_requests": _int(server_tools.get("web_fetch_requests")),
            "background_open": self.background_open,
            "retrying": self.retrying,
            "tool_uses": dict(self.tool_uses),
        }
        if self.usage_limit is not None:
            found["usage_limit"] = {
                "resets_at": self.usage_limit.resets_at,
                "kind": self.usage_limit.kind,
            }
        return {k: v for k, v in found.items() if v not in (None, [], {})}


def _background_ids(data: dict[str, Any]) -> set[str] | None:
    """The open background tasks a `background_tasks_changed` event lists, when it lists them."""
    for key in ("tasks", "background_tasks", "task_ids"):
        value = data.get(key)
        if isinstance(value, list):
            ids = set()
            for item in value:
                if isinstance(item, str):
                    ids.add(item)
                elif isinstance(item, dict):
                    task = _str(item.get("task_id")) or _str(item.get("id"))
                    status = _str(item.get("status"))
                    if task and (status is None or status not in _DONE_TASK_STATES):
                        ids.add(task)
            return ids
    count = _int(data.get("count"))
    if count == 0:
        return set()
    return None
