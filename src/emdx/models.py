"""Dataclasses and enums shared by every layer: documents, executions, their states, times."""

from __future__ import annotations

import contextlib
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from emdx import jsonio


def utc_now() -> datetime:
    return datetime.now(UTC)


# The clock stored times are on, for what compares them with now (a running run's duration, a
# heartbeat's age): this host's, or in team mode the database server's (`open_store` sets the
# reader of its offset; read when first needed, again after REFERENCE_EVERY_S).
REFERENCE_EVERY_S = 30.0
_reference: dict[str, Any] = {"read": None, "offset": 0.0, "at": None}


def set_reference_clock(read_offset: Callable[[], float] | None) -> None:
    """Whose clock `reference_now` is: this host's (None), or this host's plus the offset
    `read_offset` returns (seconds; when it fails, the last offset read stays)."""
    _reference.update(read=read_offset, offset=0.0, at=None)


def reference_now() -> datetime:
    """Now on the clock the stored times are on (see `set_reference_clock`)."""
    read = _reference["read"]
    if read is None:
        return utc_now()
    at = _reference["at"]
    if at is None or time.monotonic() - at >= REFERENCE_EVERY_S:
        # Whatever stops the read (a server away, a store closed): a view's clock never ends
        # the view; the last offset read stays.
        with contextlib.suppress(Exception):
            _reference["offset"] = float(read())
        _reference["at"] = time.monotonic()
    return utc_now() + timedelta(seconds=_reference["offset"])


def to_iso(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds, the one format emdx writes (sorts lexically)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_iso() -> str:
    return to_iso(utc_now())


def parse_time(value: str | None) -> datetime | None:
    """Read a stored time: ISO-8601, or SQLite's `YYYY-MM-DD HH:MM:SS` (UTC) from old releases."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso_or_none(value: str | None) -> str | None:
    moment = parse_time(value)
    return to_iso(moment) if moment else None


# SQLite integers are 64-bit signed: an id beyond this names nothing (a usage error for a limit).
MAX_INT = jsonio.INT_MAX


def storable(value: int) -> bool:
    """Fits an SQLite integer (binding a larger Python int raises OverflowError)."""
    return -MAX_INT - 1 <= value <= MAX_INT


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when it is empty)."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def shallow_dict(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, without `asdict`'s recursive deep copy (which is most of
    the cost of `exec list --json`); callers convert nested values themselves."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


class ExecutionStatus(enum.StrEnum):
    """Lifecycle of an execution: preparing → queued → running ⇄ waiting → completed | failed |
    killed. Every change goes through `ExecutionStore.transition`, checked against `ALLOWED`."""

    PREPARING = "preparing"
    """The start path is making the run's directory or worktree; the row records its creator
    (pid + start time), so that a start that died half way is undone by the next command."""
    QUEUED = "queued"
    """Waiting for a free slot (EMDX_MAX_PARALLEL) or for the run it depends on."""
    RUNNING = "running"
    """A supervisor owns the run and the agent is (or is about to be) working."""
    WAITING = "waiting"
    """The supervisor is alive and heartbeating but no agent runs, until `waiting_until` (a
    usage limit that resets, a retry backoff)."""
    COMPLETED = "completed"
    """The agent exited 0 and its final `result` event said `is_error: false`."""
    FAILED = "failed"
    """Anything else: an error result, no result, a non-zero exit, a timeout, a lost runner."""
    KILLED = "killed"
    """Stopped on purpose by the user."""

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES

    @property
    def holds_slot(self) -> bool:
        """Counts against EMDX_MAX_PARALLEL: a supervisor owns it."""
        return self in (ExecutionStatus.RUNNING, ExecutionStatus.WAITING)


FINAL_STATUSES = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.KILLED}
)
ACTIVE_STATUSES = frozenset(
    {
        ExecutionStatus.PREPARING,
        ExecutionStatus.QUEUED,
        ExecutionStatus.RUNNING,
        ExecutionStatus.WAITING,
    }
)

# The moves `ExecutionStore.transition` allows (Supervisor's `_assertInState`): anything else is
# a programming error. A final state is final.
ALLOWED: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.PREPARING: frozenset(
        {
            ExecutionStatus.QUEUED,
            ExecutionStatus.RUNNING,
            ExecutionStatus.FAILED,
            ExecutionStatus.KILLED,
        }
    ),
    ExecutionStatus.QUEUED: frozenset(
        {ExecutionStatus.RUNNING, ExecutionStatus.FAILED, ExecutionStatus.KILLED}
    ),
    ExecutionStatus.RUNNING: frozenset(
        {
            ExecutionStatus.WAITING,
            ExecutionStatus.COMPLETED,
            ExecutionStatus.FAILED,
            ExecutionStatus.KILLED,
        }
    ),
    ExecutionStatus.WAITING: frozenset(
        {ExecutionStatus.RUNNING, ExecutionStatus.FAILED, ExecutionStatus.KILLED}
    ),
}


class ExecType(enum.StrEnum):
    """What kind of run smart execution picked from the document's tags."""

    @classmethod
    def of(cls, value: str | None) -> ExecType:
        """A stored type (a damaged or unknown one reads as generic: it owes no post-actions)."""
        try:
            return cls(value or "generic")
        except ValueError:
            return cls.GENERIC

    NOTE = "note"
    ANALYSIS = "analysis"
    GAMEPLAN = "gameplan"
    GENERIC = "generic"
    RESUME = "resume"


@dataclass(frozen=True)
class Document:
    id: int
    title: str
    content: str
    project: str | None
    created_at: str | None
    updated_at: str | None
    accessed_at: str | None
    access_count: int
    parent_id: int | None
    is_deleted: bool
    deleted_at: str | None
    tags: tuple[str, ...] = ()

    def to_dict(self, with_content: bool = True) -> dict[str, Any]:
        data = shallow_dict(self)
        data["tags"] = list(self.tags)
        for key in ("created_at", "updated_at", "accessed_at", "deleted_at"):
            data[key] = iso_or_none(data[key])
        if not with_content:
            data.pop("content")
        return data


@dataclass(frozen=True)
class SearchHit:
    document: Document
    rank: float
    snippet: str


@dataclass(frozen=True)
class TagCount:
    name: str
    count: int


@dataclass(frozen=True)
class ExecutionEvent:
    """One entry of a run's log as stored for every host (team mode's `execution_events`)."""

    execution_id: int
    run_key: str
    seq: int
    """1, 2, 3… within the run; never reused, also after the oldest entries were dropped."""
    ts: str
    entry: dict[str, Any]
    """The log entry (`runlog` fields: ts, level, source, type, message, raw…)."""


# An agent silent this long is stuck: Claude Code emits an event per tool call, and its Bash tool
# stops a command after 10 minutes.
DEFAULT_STALL_TIMEOUT_S = 30 * 60.0


@dataclass(frozen=True)
class ExecOptions:
    """What the user asked for when starting a run; stored as JSON so `retry` can repeat it."""

    tools: tuple[str, ...] | None = None
    smart: bool = True
    worktree: bool | None = None
    timeout_s: float | None = None
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S
    model: str | None = None
    max_turns: int | None = None
    after_id: int | None = None
    resume_session: str | None = None
    resume_prompt: str | None = None
    wait_limit: bool = True
    """Wait for a usage limit to reset and resume, rather than fail (--no-wait-limit)."""
    retries: int = 0
    """Retries of an overloaded / server-error / rate-limited ending (--retries)."""
    max_budget_usd: float | None = None
    """Passed to Claude Code's --max-budget-usd."""
    queue: str | None = None
    """Team mode: the worker queue the run goes to (--queue; default `emdx`)."""
    priority: int = 0
    """Team mode: higher runs first among waiting jobs (--priority)."""

    def to_dict(self) -> dict[str, Any]:
        data = shallow_dict(self)
        data["tools"] = list(self.tools) if self.tools is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ExecOptions:
        if not data:
            return cls()
        known = {f for f in cls.__dataclass_fields__}
        clean = {k: v for k, v in data.items() if k in known}
        if clean.get("tools") is not None:
            clean["tools"] = tuple(clean["tools"])
        return cls(**clean)


@dataclass(frozen=True)
class Execution:
    """One run of a document, as stored. Times are ISO-8601 UTC strings."""

    id: int
    old_id: str | None
    run_key: str | None
    doc_id: int | None
    doc_title: str
    exec_type: ExecType
    status: ExecutionStatus
    reason: str | None
    """A `Reason` for every ending emdx records; kept as text, because rows of earlier releases
    carry reasons of their own that must survive the upgrade unchanged."""
    exit_code: int | None
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    heartbeat_at: str | None
    pid: int | None
    pid_started_at: float | None
    agent_pid: int | None
    agent_started_at: float | None
    working_dir: str | None
    branch: str | None
    log_file: str | None
    session_id: str | None
    model: str | None
    num_turns: int | None
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    last_event_at: str | None
    event_count: int
    malformed_count: int
    output_doc_id: int | None
    parent_execution_id: int | None
    options: ExecOptions = field(default_factory=ExecOptions)
    repo: str | None = None
    """The repository (resolved top directory) the run's worktree was made in."""
    branch_created: bool = False
    """True when emdx created `branch` in `repo` for this run (only then may it delete it)."""
    creator_pid: int | None = None
    creator_started_at: float | None = None
    """The process that created the row (pid + start time), judged while it is `preparing`."""
    heartbeat_s: float | None = None
    """The run's own heartbeat interval (EMDX_HEARTBEAT_SECONDS of the run, not the reader's)."""
    uptime_s: float | None = None
    """The supervisor's uptime at its last heartbeat, on the boot clock: heartbeat age without
    the wall clock (which steps)."""
    post_actions: str | None = None
    """`pending` while the smart post-actions of a completed run are owed, then `done`."""
    waiting_until: str | None = None
    """While `waiting`: when the supervisor resumes the agent."""
    waiting_reason: str | None = None
    """Why it waits: `usage_limit` or `retry_backoff`."""
    resets_at: str | None = None
    """When the usage limit that stopped the run resets."""
    attempt: int = 1
    """Agent processes this run has started (a resume after a wait is the next attempt)."""
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    claude_code_version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """What explains the ending: API error status and text, denials, errors, per-model usage,
    retries in progress, background tasks open…"""
    host: str | None = None
    """Team mode: the host (EMDX_HOST) whose worker runs it; None for a run of this machine."""
    worker_id: int | None = None
    """Team mode: the procrastinate worker running it (its heartbeat judges the host)."""
    job_id: int | None = None
    """Team mode: the procrastinate job that dispatches it (a kill aborts it)."""
    kill_asked: str | None = None
    """Who asked to kill the run, written before anything is signalled or aborted: a run whose
    supervisor dies meanwhile (of the kill, before recording it) is still a kill."""

    @property
    def duration_s(self) -> float | None:
        start = parse_time(self.started_at)
        if start is None:
            return None
        end = parse_time(self.completed_at) or (reference_now() if self.status.is_active else None)
        if end is None:
            return None
        return max(0.0, (end - start).total_seconds())

    @property
    def heartbeat_age_s(self) -> float | None:
        beat = parse_time(self.heartbeat_at)
        return None if beat is None else max(0.0, (reference_now() - beat).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of DESIGN.md §4 (plus a few extra fields)."""
        data = shallow_dict(self)
        data["status"] = self.status.value
        data["options"] = self.options.to_dict()
        for key in (
            "created_at",
            "started_at",
            "completed_at",
            "heartbeat_at",
            "last_event_at",
            "waiting_until",
            "resets_at",
        ):
            data[key] = iso_or_none(data[key])
        duration = self.duration_s
        data["duration_s"] = round(duration, 3) if duration is not None else None
        return data


@dataclass(frozen=True)
class WorkerInfo:
    """A team-mode worker as `emdx workers` shows it."""

    worker_id: int
    name: str
    host: str
    pid: int
    queues: tuple[str, ...]
    repos: tuple[str, ...]
    concurrency: int
    heartbeat_s: float
    heartbeat_age_s: float | None
    alive: bool
    stopped: bool
    running: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "repos": list(self.repos),
            "concurrency": self.concurrency,
            "heartbeat_s": self.heartbeat_s,
            "heartbeat_age_s": self.heartbeat_age_s,
            "alive": self.alive,
            "stopped": self.stopped,
            "running": self.running,
        }
