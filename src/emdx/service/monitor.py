"""Watching runs: health (the judge's verdicts with CPU and memory), stats, following a log."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from emdx import runlog, settings, system
from emdx.errors import InvalidStateError, NotFoundError
from emdx.models import Execution, ExecutionStatus, percentile, reference_now
from emdx.service.holds import hold_reason, local_midnight
from emdx.service.kill import is_remote, record_host_lost
from emdx.service.liveness import Judgement, Verdict, default_probe, judge
from emdx.service.repair import repair_zombie
from emdx.service.scheduler import fill_slots
from emdx.store import Store


@dataclass(frozen=True)
class RunHealth:
    execution: Execution
    judgement: Judgement
    agent_alive: bool
    runner: system.ProcessInfo | None
    agent: system.ProcessInfo | None
    repaired: Execution | None = None

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict

    @property
    def runner_alive(self) -> bool:
        return self.judgement.runner_alive

    @property
    def heartbeat_age_s(self) -> float | None:
        return self.judgement.heartbeat_age_s

    @property
    def healthy(self) -> bool:
        return self.verdict.healthy

    @property
    def remote(self) -> bool:
        """Team mode: it runs on another host (its processes are not ours to sample)."""
        return is_remote(self.execution)

    def to_dict(self) -> dict[str, Any]:
        def proc(info: system.ProcessInfo | None) -> dict[str, Any] | None:
            if info is None:
                return None
            return {
                "pid": info.pid,
                "cpu_percent": info.cpu_percent,
                "rss_bytes": info.rss_bytes,
                "children": info.num_children,
            }

        age = self.heartbeat_age_s
        return {
            "id": self.execution.id,
            "doc_title": self.execution.doc_title,
            "status": (self.repaired or self.execution).status.value,
            "verdict": self.verdict.value,
            "detail": self.judgement.detail,
            "healthy": self.healthy,
            "runner_alive": self.runner_alive,
            "agent_alive": self.agent_alive,
            "heartbeat_age_s": None if age is None else round(age, 3),
            "runner": proc(self.runner),
            "agent": proc(self.agent),
            "repaired": self.repaired.to_dict() if self.repaired else None,
        }


def health(store: Store, interval_s: float = 0.2) -> list[RunHealth]:
    """The verdict on every active run, with CPU and memory sampled over `interval_s`; zombies
    are repaired (see `repair_zombie`) and reported as such."""
    probe = default_probe(store)
    rows = store.executions.active()
    identities: list[tuple[int, float]] = []
    for ex in rows:
        if is_remote(ex):
            continue  # another host's pids name nothing here
        for pid, started in ((ex.pid, ex.pid_started_at), (ex.agent_pid, ex.agent_started_at)):
            if pid and started is not None:
                identities.append((pid, started))
    infos = system.sample_processes(identities, interval_s)
    report = []
    repaired_any = False
    for ex in rows:
        judgement = judge(ex, probe)
        repaired = None
        if judgement.verdict is Verdict.ZOMBIE:
            repaired = repair_zombie(store, ex, "`emdx exec health`")
            repaired_any = True
        agent_alive = not is_remote(ex) and system.same_process(ex.agent_pid, ex.agent_started_at)
        report.append(
            RunHealth(
                ex,
                judgement,
                agent_alive,
                infos.get(ex.pid or -1) if judgement.runner_alive else None,
                infos.get(ex.agent_pid or -1) if agent_alive else None,
                repaired,
            )
        )
    if repaired_any:
        fill_slots(store)
    return report


@dataclass(frozen=True)
class ExecStats:
    total: int
    by_status: dict[str, int]
    last_24h: dict[str, int]
    success_rate: float | None
    median_duration_s: float | None
    p95_duration_s: float | None
    total_cost_usd: float
    total_input_tokens: int
    total_output_tokens: int
    per_type: list[dict[str, Any]]
    running: int
    queued: int
    zombies: list[int]
    waiting: int = 0
    spent_today_usd: float = 0.0
    """Spent since local midnight (the day EMDX_DAILY_BUDGET_USD counts)."""
    daily_budget_usd: float | None = None
    held: str | None = None
    """Why queued runs do not start now (a usage limit, the daily budget), if they do not."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stats(store: Store, zombies: list[int] | None = None) -> ExecStats:
    since = reference_now() - timedelta(hours=24)
    rows = store.executions.stats_rows(since.isoformat(timespec="microseconds"))
    by_status: dict[str, int] = rows["by_status"]
    finished_ok = by_status.get("completed", 0)
    finished = finished_ok + by_status.get("failed", 0) + by_status.get("killed", 0)
    durations = sorted(rows["durations"])
    probe = default_probe(store)
    active = store.executions.active()
    if zombies is None:
        zombies = [e.id for e in active if judge(e, probe).verdict is Verdict.ZOMBIE]
    return ExecStats(
        total=sum(by_status.values()),
        by_status=by_status,
        last_24h=rows["recent"],
        success_rate=(finished_ok / finished) if finished else None,
        median_duration_s=_rounded(percentile(durations, 50)),
        p95_duration_s=_rounded(percentile(durations, 95)),
        total_cost_usd=sum(t["cost_usd"] for t in rows["per_type"]),
        total_input_tokens=sum(t["input_tokens"] for t in rows["per_type"]),
        total_output_tokens=sum(t["output_tokens"] for t in rows["per_type"]),
        per_type=rows["per_type"],
        running=sum(1 for e in active if e.status is ExecutionStatus.RUNNING),
        queued=by_status.get("queued", 0),
        zombies=zombies,
        waiting=sum(1 for e in active if e.status is ExecutionStatus.WAITING),
        spent_today_usd=round(store.executions.spent_since(local_midnight()), 6),
        daily_budget_usd=settings.daily_budget_usd(),
        held=hold_reason(store),
    )


def current(store: Store, execution_id: int, who: str) -> Execution:
    """The row, repaired first if its supervisor is gone (a follower never waits forever)."""
    execution = store.executions.get(execution_id)
    if not execution.status.is_active:
        return execution
    judgement = judge(execution, default_probe(store))
    if judgement.verdict is Verdict.ZOMBIE:
        execution = repair_zombie(store, execution, who)
        fill_slots(store)
    elif judgement.verdict is Verdict.HOST_LOST:
        record_host_lost(store, execution, who, judgement.detail)
        execution = store.executions.get(execution_id)
    return execution


def log_path(execution: Execution) -> Path:
    """The run's log file, or an error saying why there is none: the run has not started yet
    (InvalidStateError), or its log is gone or was never recorded (NotFoundError)."""
    label = f"execution #{execution.id}"
    path = Path(execution.log_file) if execution.log_file else None
    if path is not None and path.is_file():
        return path
    if execution.status.is_active:
        raise InvalidStateError(f"{label} is {execution.status.value}: it has no log yet")
    if path is None:
        raise NotFoundError(f"{label} has no log (a row from an earlier emdx release)")
    raise NotFoundError(f"the log of {label} is missing: {path}")


def shared_log(store: Store, execution: Execution) -> bool:
    """Team mode: the run's log is read from the team's copy (`execution_events`), as its
    file is on another host (or not on this one)."""
    if store.queue is None:
        return False
    if is_remote(execution):
        return True
    return not (execution.log_file and Path(execution.log_file).is_file())


# Pages of the team's copy of a log, read at once.
EVENTS_PAGE = 1000


def shared_entries(
    store: Store, execution: Execution, after_seq: int = 0
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(seq, entry) of the team's copy of a run's log past `after_seq`, oldest first."""
    queue = store.queue
    if queue is None:
        return
    while True:
        page = queue.events_since(execution.id, after_seq, EVENTS_PAGE)
        for event in page:
            after_seq = event.seq
            yield event.seq, event.entry
        if len(page) < EVENTS_PAGE:
            return


# A finished run's last entries, shipped after its final write, are waited for this long
# after the last one arrived (and this long at most in all).
LOG_SETTLE_S = 3.0
LOG_SETTLE_MAX_S = 30.0


def _is_last_word(entry: dict[str, Any]) -> bool:
    """The supervisor's final note (`finished: completed, exit 0, …`): nothing of its own
    follows it."""
    message = entry.get("message")
    return (
        entry.get("source") == "runner"
        and isinstance(message, str)
        and message.startswith("finished: ")
    )


def _follow_shared(
    store: Store, execution_id: int, poll_s: float, last: int | None
) -> Iterator[dict[str, Any]]:
    who = "`emdx exec show --follow`"
    execution = store.executions.get(execution_id)
    seen = 0
    if last is not None:
        kept: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max(0, last))
        for seq, entry in shared_entries(store, execution):
            kept.append((seq, entry))
            seen = seq
        yield from (entry for _, entry in kept)
    ended_at: float | None = None
    last_new = time.monotonic()
    ended = False  # the supervisor's last word (`finished: …`) was read
    while True:
        if ended_at is None and current(store, execution_id, who).status.is_final:
            ended_at = time.monotonic()
        for seq, entry in shared_entries(store, execution, seen):
            seen = seq
            last_new = time.monotonic()
            ended = ended or _is_last_word(entry)
            yield entry
        if ended_at is not None:
            # Its host ships the log's last entries after the final write: wait for them
            # (its last word, or a quiet spell), never long.
            now = time.monotonic()
            if ended or now - last_new > LOG_SETTLE_S or now - ended_at > LOG_SETTLE_MAX_S:
                return
        time.sleep(poll_s)


def follow(
    store: Store, execution_id: int, poll_s: float = 0.2, last: int | None = None
) -> Iterator[dict[str, Any]]:
    """Log entries of a run (the `last` ones, then new ones) until it has a final state."""
    execution = store.executions.get(execution_id)
    if shared_log(store, execution):
        yield from _follow_shared(store, execution_id, poll_s, last)
        return
    if execution.status is ExecutionStatus.RUNNING and execution.run_key is None:
        raise InvalidStateError(
            f"execution {execution.old_id or execution_id} is a running row from an earlier "
            "emdx release with no supervisor to follow; `emdx cleanup executions` repairs it"
        )
    if not execution.log_file:
        return
    path = Path(execution.log_file)
    if last is not None:
        yield from runlog.read_entries(path, last)

    def finished() -> bool:
        return current(store, execution_id, "`emdx exec show --follow`").status.is_final

    yield from runlog.follow(path, finished, poll_s, start_at_end=last is not None)


def wait_for_final(store: Store, execution_id: int, timeout_s: float) -> Execution:
    deadline = time.monotonic() + timeout_s
    while True:
        row = current(store, execution_id, "emdx")
        if row.status.is_final or time.monotonic() >= deadline:
            return row
        time.sleep(0.1)
