"""The sweep every command that looks at runs does first, so that no row stays non-final without
a live owner: undo abandoned starts, finish runs whose supervisor died (as it decided, from its
outcome file, else failed/137/runner_lost), apply owed post-actions, fill free slots."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emdx import jsonio, paths, runlog, smart
from emdx import tags as T
from emdx.agent.outcome import EXIT_SIGKILL, EXIT_SIGTERM
from emdx.errors import EmdxError
from emdx.models import ExecType, Execution, ExecutionStatus
from emdx.reasons import Reason
from emdx.service.kill import finish_from_outside, record_host_lost, stop_processes
from emdx.service.liveness import Probe, Verdict, default_probe, judge, lost_worker
from emdx.service.scheduler import fill_slots, queue_name
from emdx.service.undo import discard
from emdx.store import Store


@dataclass
class SweepReport:
    """What a sweep fixed: each one a failure that nothing else would have repaired."""

    undone: list[int] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    post_actions: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"execution #{i}: abandoned start undone" for i in self.undone]
        lines += [f"execution #{i}: supervisor gone, row finished" for i in self.repaired]
        lines += [f"execution #{i}: owed post-actions applied" for i in self.post_actions]
        lines += [f"execution #{i}: queued with a free slot, started" for i in self.started]
        lines += [f"execution #{i}: its worker's host is lost, row failed" for i in self.lost]
        lines += [
            f"execution #{i}: its job was lost before it started, queued again"
            for i in self.requeued
        ]
        return lines


OUTCOME_MAX = 64 * 1024 * 1024
# What an outcome file may set besides the final state: the supervisor's progress columns.
_OUTCOME_FIELDS: dict[str, type | tuple[type, ...]] = {
    "session_id": str,
    "model": str,
    "claude_code_version": str,
    "num_turns": int,
    "cost_usd": (int, float),
    "input_tokens": int,
    "output_tokens": int,
    "cache_read_tokens": int,
    "cache_creation_tokens": int,
    "event_count": int,
    "malformed_count": int,
    "last_event_at": str,
    "resets_at": str,
    "agent_pid": int,
    "agent_started_at": (int, float),
    "post_actions": str,
    "details": dict,
}


def read_outcome(execution: Execution) -> dict[str, Any] | None:
    """The outcome a supervisor wrote before its final write, checked field by field (the file
    lies in EMDX_HOME, where an agent can write too): None if there is none, it is another run's,
    or it is not what a supervisor writes."""
    if not execution.run_key:
        return None
    try:
        data = jsonio.loads(paths.read_bounded(paths.final_path(execution.run_key), OUTCOME_MAX))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("run_key") != execution.run_key:
        return None
    try:
        status = ExecutionStatus(str(data.get("status")))
    except ValueError:
        return None
    code, reason = data.get("exit_code"), data.get("reason")
    if not status.is_final or not isinstance(code, int) or not isinstance(reason, str):
        return None
    fields = data.get("fields")
    fields = fields if isinstance(fields, dict) else {}
    kept = {
        name: value
        for name, value in fields.items()
        if name in _OUTCOME_FIELDS
        and (value is None or isinstance(value, _OUTCOME_FIELDS[name]))
        and not isinstance(value, bool)
    }
    if kept.get("post_actions") not in (None, "pending"):
        kept.pop("post_actions")
    result = data.get("result")
    completed = data.get("completed_at")
    return {
        "status": status.value,
        "exit_code": code,
        "reason": reason[:100],
        "completed_at": completed if isinstance(completed, str) else None,
        "fields": kept,
        "result": result if isinstance(result, str) else None,
    }


def repair_zombie(store: Store, execution: Execution, who: str) -> Execution:
    """A running row whose supervisor is gone: kill what it left, then finish the row as the
    supervisor decided (its outcome file) or failed/137/runner_lost."""
    stop_processes(execution, grace_s=2.0)
    with contextlib.suppress(EmdxError):
        current = store.executions.get(execution.id)  # a kill asked since it was read
        if current.run_key == execution.run_key:
            execution = current
    outcome = read_outcome(execution)
    if outcome is not None:
        fields = {k: v for k, v in dict(outcome.get("fields") or {}).items() if k != "status"}
        won = store.executions.finish(
            execution.id,
            ExecutionStatus(str(outcome["status"])),
            int(outcome["exit_code"]),
            str(outcome["reason"]),
            key=execution.run_key,
            completed_at=outcome.get("completed_at"),
            **fields,
        )
        if won:
            paths.forget_environment(execution.run_key)
            runlog.append_note(
                execution.log_file,
                f"the supervisor died before recording its outcome; {who} recorded it from "
                f"its outcome file: {outcome['status']} (exit {outcome['exit_code']}, "
                f"{outcome['reason']})",
                "🩹",
            )
    elif (asked := execution.kill_asked) is not None:
        # It died of a kill (before it could record it): the kill's own record, whoever
        # gets here first.
        finish_from_outside(
            store,
            execution,
            ExecutionStatus.KILLED,
            EXIT_SIGTERM,
            Reason.KILLED,
            f"{asked} (its supervisor died of it; {who} recorded it)",
        )
    elif (lost := _worker_lost(store, execution)) is not None:
        # Team mode: its supervisor died with the worker that ran it (or that worker died
        # before starting it) — the host's loss, whichever host records it.
        record_host_lost(store, execution, who, lost)
    else:
        finish_from_outside(
            store,
            execution,
            ExecutionStatus.FAILED,
            EXIT_SIGKILL,
            Reason.RUNNER_LOST,
            f"the supervisor is gone; {who} repaired the row",
        )
    return store.executions.get(execution.id)


def _worker_lost(store: Store, execution: Execution) -> str | None:
    if store.queue is None or execution.worker_id is None:
        return None
    try:
        return lost_worker(execution, default_probe(store))
    except EmdxError:
        return None  # the team's database does not answer: a lost runner is all that is known


def apply_post_actions(store: Store, execution: Execution) -> bool:
    """The smart post-actions a completed run owes (save the result as a document, tag the
    source), once: recorded in the same transaction as `post_actions = done`, so that the
    supervisor and any command's sweep can both try. True when this call applied them."""
    if execution.post_actions != "pending":
        return False
    outcome = read_outcome(execution) or {}
    result = outcome.get("result")
    if not isinstance(result, str):
        result = _result_from_log(execution)
    plan = None
    if execution.doc_id is not None:
        with contextlib.suppress(EmdxError):
            doc = store.documents.get(execution.doc_id, include_deleted=True)
            plan = smart.plan_for_type(doc, ExecType(execution.exec_type))
    # The text was masked by the supervisor as it read the event.
    text = (result or "").strip()
    output = None
    if plan is not None and plan.output_title and text:
        output = (plan.output_title, text, doc.project, list(plan.output_tags), doc.id)
    source_tags = list(plan.source_tags_on_success) if plan is not None else []
    applied, output_id = store.complete_post_actions(
        execution.id, output, add_tags=source_tags, remove_tags=[T.ACTIVE] if source_tags else []
    )
    if applied and plan is not None:
        what = []
        if output_id is not None:
            what.append(f"saved the result as document #{output_id}: {plan.output_title}")
        if source_tags:
            what.append(f"tagged document #{execution.doc_id} {' '.join(source_tags)}")
        if what:
            runlog.append_note(execution.log_file, "; ".join(what), "💾")
    return applied


def _result_from_log(execution: Execution) -> str | None:
    if not execution.log_file:
        return None
    for entry in reversed(runlog.read_entries(Path(execution.log_file), 200)):
        raw = entry.get("raw")
        if entry.get("type") == "result" and isinstance(raw, dict):
            text = raw.get("result")
            return text if isinstance(text, str) else None
    return None


def sweep(store: Store, who: str = "emdx", probe: Probe | None = None) -> SweepReport:
    """One pass over every active row and every owed post-action, then the queue pass."""
    probe = probe or default_probe(store)
    report = SweepReport()
    for execution in store.executions.active():
        judgement = judge(execution, probe)
        verdict = judgement.verdict
        with contextlib.suppress(EmdxError):
            if verdict is Verdict.ABANDONED and execution.run_key:
                discard(store, execution.id, execution.run_key)
                report.undone.append(execution.id)
            elif verdict is Verdict.ZOMBIE:
                repair_zombie(store, execution, who)
                report.repaired.append(execution.id)
            elif verdict is Verdict.HOST_LOST and record_host_lost(
                store, execution, who, judgement.detail
            ):
                report.lost.append(execution.id)
    for execution in store.executions.owing_post_actions():
        with contextlib.suppress(EmdxError):
            if apply_post_actions(store, execution):
                report.post_actions.append(execution.id)
    with contextlib.suppress(EmdxError):
        report.started = fill_slots(store)
    with contextlib.suppress(EmdxError):
        report.requeued = requeue_orphans(store)
    return report


def requeue_orphans(store: Store) -> list[int]:
    """Team mode: a queued run whose job will never start it (see `orphaned_queued`) gets a
    new one — it never started, so this is no retry of an agent run."""
    queue = store.queue
    if queue is None:
        return []
    done = []
    for execution_id in queue.orphaned_queued():
        with contextlib.suppress(EmdxError):
            execution = store.executions.get(execution_id)
            queue.defer(
                execution.id,
                execution.run_key or "",
                queue=queue_name(execution.options),
                priority=execution.options.priority,
            )
            done.append(execution_id)
    return done
