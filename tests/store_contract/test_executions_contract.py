"""Execution rows: creation, the one guarded status writer, slots, heartbeats, post-actions —
the same contract on SQLite and PostgreSQL, races between connections included."""

from __future__ import annotations

import multiprocessing
import re
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import pytest
from contract_helpers import Sql

from emdx.errors import NotFoundError, RunKeyTaken, StoreError
from emdx.models import ALLOWED, ExecOptions, ExecType, ExecutionStatus, to_iso, utc_now
from emdx.store import Store, open_store

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
S = ExecutionStatus
T = TypeVar("T")
Another = Callable[[], Store]


def new_run(
    store: Store,
    key: str,
    prepared: bool = True,
    *,
    doc_id: int | None = 1,
    exec_type: str = "note",
    options: ExecOptions | None = None,
    parent_execution_id: int | None = None,
    creator: tuple[int, float | None] | None = None,
) -> int:
    """A row as the start path leaves it: `preparing`, then (`prepared`) `queued`."""
    execution_id = store.executions.create(
        run_key=key,
        doc_id=doc_id,
        doc_title=f"doc {key}",
        exec_type=exec_type,
        options=options or ExecOptions(),
        parent_execution_id=parent_execution_id,
        creator=creator,
    )
    if prepared:
        store.executions.update(execution_id, log_file=f"/logs/{key}.jsonl")
        assert store.executions.transition(execution_id, [S.PREPARING], S.QUEUED)
    return execution_id


def at_once(calls: Sequence[Callable[[], T]], timeout: float = 60) -> list[T]:
    """Run every call in its own thread, released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout)
            results[index] = calls[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a racing call never returned"
    if errors:
        raise errors[0]
    return results


# -- create / get / list -------------------------------------------------------------------------


def test_create_is_preparing_with_its_creator(store: Store) -> None:
    run = new_run(store, "fresh", prepared=False, creator=(4242, 123.5), parent_execution_id=7)
    got = store.executions.get(run)
    assert got.status is S.PREPARING
    assert (got.creator_pid, got.creator_started_at) == (4242, 123.5)
    assert got.parent_execution_id == 7 and got.attempt == 1 and got.details == {}
    assert got.event_count == 0 and got.malformed_count == 0 and got.branch_created is False


def test_execution_create_get_resolve(store: Store) -> None:
    options = ExecOptions(tools=("Read", "Edit"), model="sonnet", max_turns=3, timeout_s=60.0)
    run = new_run(store, "k1", options=options, exec_type="analysis")
    got = store.executions.get(run)
    assert got.id == run and got.run_key == "k1" and got.old_id is None
    assert got.status is S.QUEUED
    assert got.exec_type == "analysis"
    assert got.options == options
    assert got.created_at and ISO_UTC.match(got.created_at)
    assert got.started_at is None and got.completed_at is None
    assert store.executions.resolve(run) == got
    assert store.executions.resolve(f" {run} ") == got
    assert store.executions.by_key("k1") == got
    assert store.executions.by_key("nope") is None
    with pytest.raises(NotFoundError):
        store.executions.get(run + 100)
    with pytest.raises(NotFoundError):
        store.executions.resolve("claude-1-123")
    with pytest.raises(StoreError):
        new_run(store, "k1")


def test_execution_resolve_by_old_id(store: Store, sql: Sql) -> None:
    sql(
        """INSERT INTO executions (old_id, doc_id, doc_title, status, started_at, log_file)
           VALUES ('claude-42-1752791234', 42, 'legacy', 'running',
                   '2025-07-17T22:27:14.000000+00:00', '/gone.log')"""
    )
    legacy = store.executions.resolve("claude-42-1752791234")
    assert legacy.old_id == "claude-42-1752791234" and legacy.doc_id == 42
    assert legacy.started_at == "2025-07-17T22:27:14.000000+00:00"
    assert store.executions.resolve(str(legacy.id)) == legacy
    # A legacy row (no run key) holds no slot.
    assert store.executions.slots_in_use() == 0


def test_execution_list_newest_first_with_status_and_limit(store: Store) -> None:
    ids = [new_run(store, f"k{i}") for i in range(5)]
    store.executions.transition(ids[1], [S.QUEUED], S.RUNNING)
    store.executions.finish(ids[2], S.FAILED, 1, "nonzero_exit")
    listed = store.executions.list_executions()
    assert [e.id for e in listed] == ids[::-1]
    assert [e.id for e in store.executions.list_executions(limit=2)] == ids[:2:-1]
    assert [e.id for e in store.executions.list_executions(limit=None)] == ids[::-1]
    assert [e.id for e in store.executions.list_executions(statuses=["failed"])] == [ids[2]]
    assert [e.id for e in store.executions.list_executions(statuses=["queued", "running"])] == [
        ids[4], ids[3], ids[1], ids[0],
    ]  # fmt: skip
    assert store.executions.list_executions(statuses=["killed"]) == []
    assert store.executions.list_executions(doc_id=2) == []
    assert len(store.executions.list_executions(doc_id=1)) == 5
    assert store.executions.slots_in_use() == 1
    assert [e.id for e in store.executions.active()] == [ids[4], ids[3], ids[1], ids[0]]
    assert [e.id for e in store.executions.queued()] == [ids[0], ids[3], ids[4]]


def test_fields_round_trip_with_their_types(store: Store) -> None:
    run = new_run(store, "fields")
    at = "2026-11-24T06:02:03.123456+00:00"
    details = {"api_error_status": 529, "errors": ["a\x00b", "ünïcode"], "nested": {"x": [1.5]}}
    assert store.executions.update(
        run,
        heartbeat_at=at,
        last_event_at=at,
        pid=123,
        pid_started_at=1234.25,
        agent_pid=456,
        agent_started_at=99.5,
        working_dir="/w",
        branch="exec-1",
        session_id="s-1",
        model="claude-opus",
        num_turns=3,
        cost_usd=0.125,
        input_tokens=2**40,
        output_tokens=7,
        event_count=9,
        malformed_count=1,
        output_doc_id=5,
        repo="/repo",
        branch_created=True,
        heartbeat_s=2.5,
        uptime_s=10.75,
        post_actions="pending",
        resets_at=at,
        cache_read_tokens=11,
        cache_creation_tokens=12,
        claude_code_version="2.1.332",
        details=details,
    )
    got = store.executions.get(run)
    assert (got.heartbeat_at, got.last_event_at, got.resets_at) == (at, at, at)
    assert (got.pid, got.pid_started_at, got.agent_pid, got.agent_started_at) == (
        123, 1234.25, 456, 99.5,
    )  # fmt: skip
    assert (got.num_turns, got.cost_usd, got.input_tokens, got.output_tokens) == (
        3, 0.125, 2**40, 7,
    )  # fmt: skip
    assert got.branch_created is True and got.repo == "/repo" and got.post_actions == "pending"
    assert (got.heartbeat_s, got.uptime_s) == (2.5, 10.75)
    assert got.details == details
    assert (got.event_count, got.malformed_count, got.output_doc_id) == (9, 1, 5)
    assert got.claude_code_version == "2.1.332" and got.session_id == "s-1"
    assert store.executions.by_session("s-1") == [got]


# -- the one status writer -----------------------------------------------------------------------


def test_every_allowed_move_is_taken(store: Store) -> None:
    for source, targets in ALLOWED.items():
        for target in targets:
            run = new_run(store, f"{source}-{target}", prepared=False)
            path = {
                S.PREPARING: [],
                S.QUEUED: [(S.PREPARING, S.QUEUED)],
                S.RUNNING: [(S.PREPARING, S.RUNNING)],
                S.WAITING: [(S.PREPARING, S.RUNNING), (S.RUNNING, S.WAITING)],
            }[source]
            for a, b in path:
                assert store.executions.transition(run, [a], b)
            assert store.executions.transition(run, [source], target), (source, target)
            got = store.executions.get(run)
            assert got.status is target
            if target.is_final:
                assert got.completed_at and ISO_UTC.match(got.completed_at)


def test_finish_is_compare_and_set(store: Store) -> None:
    run = new_run(store, "cas")
    assert store.executions.transition(run, [S.QUEUED], S.RUNNING)
    # Not in the expected state: nothing happens.
    assert not store.executions.transition(run, [S.QUEUED], S.RUNNING)
    assert store.executions.finish(run, S.COMPLETED, 0, "success", num_turns=3)
    first = store.executions.get(run)
    assert first.status is S.COMPLETED
    assert (first.exit_code, first.reason, first.num_turns) == (0, "success", 3)
    assert first.completed_at and ISO_UTC.match(first.completed_at)

    assert not store.executions.finish(run, S.KILLED, -9, "killed_by_user")
    assert not store.executions.finish(run, S.FAILED, 1, "runner_lost")
    assert store.executions.get(run) == first


def test_transition_sets_what_goes_with_a_move(store: Store) -> None:
    run = new_run(store, "wait")
    assert store.executions.claim_slot(run, 5, S.QUEUED) == "claimed"
    until = "2030-01-01T00:00:00.000000+00:00"
    assert store.executions.transition(
        run,
        [S.RUNNING],
        S.WAITING,
        waiting_until=until,
        waiting_reason="usage_limit",
        attempt=2,
        details={"why": "limit"},
    )
    got = store.executions.get(run)
    assert (got.status, got.waiting_until, got.waiting_reason, got.attempt) == (
        S.WAITING, until, "usage_limit", 2,
    )  # fmt: skip
    assert got.details == {"why": "limit"}
    done = "2030-01-02T00:00:00.000000+00:00"
    assert store.executions.finish(run, S.FAILED, 137, "runner_lost", completed_at=done)
    assert store.executions.get(run).completed_at == done


def test_transition_and_update_reject_unknown_columns(store: Store) -> None:
    run = new_run(store, "bad")
    with pytest.raises(ValueError):
        store.executions.transition(run, [S.QUEUED], S.RUNNING, doc_title="x")
    with pytest.raises(ValueError):
        store.executions.update(run, run_key="other")
    assert store.executions.update(run) is False
    store.executions.update(run, pid=123, branch="emdx/x", cost_usd=0.25)
    got = store.executions.get(run)
    assert (got.pid, got.branch, got.cost_usd, got.status) == (123, "emdx/x", 0.25, S.QUEUED)


@pytest.mark.parametrize("column", ["status", "reason", "exit_code", "started_at", "completed_at"])
def test_update_cannot_change_a_status_or_what_goes_with_it(store: Store, column: str) -> None:
    """`transition` is the only status writer: `update` refuses its columns."""
    run = new_run(store, f"guard-{column}")
    before = store.executions.get(run)
    with pytest.raises(ValueError):
        # As `update` takes its columns (`**fields: Any`).
        fields: dict[str, Any] = {column: "failed" if column == "status" else 1}
        store.executions.update(run, **fields)
    assert store.executions.get(run) == before


def test_only_the_allowed_moves_are_accepted(store: Store) -> None:
    run = new_run(store, "moves")
    before = store.executions.get(run)
    for source, targets in ALLOWED.items():
        for target in S:
            if target in targets:
                continue
            with pytest.raises(ValueError, match="illegal transition"):
                store.executions.transition(run, [source], target)
    for final in (S.COMPLETED, S.FAILED, S.KILLED):
        assert final not in ALLOWED  # a final state is final
        with pytest.raises(ValueError):
            store.executions.transition(run, [final], S.RUNNING)
        with pytest.raises(ValueError):
            store.executions.claim_slot(run, 5, final)
    assert store.executions.get(run) == before


def test_writes_guarded_by_run_key_never_touch_another_runs_row(store: Store) -> None:
    """After a restored backup hands an id out again, a supervisor of the old run (same id,
    other key) writes nothing into the new run's row."""
    run = new_run(store, "mine")
    assert store.executions.claim_slot(run, 10, S.QUEUED) == "claimed"
    before = store.executions.get(run)
    assert not store.executions.update(run, key="someone-else", cost_usd=9.0)
    assert not store.executions.beat(run, "2030-01-01T00:00:00+00:00", 1.0, "someone-else")
    assert not store.executions.finish(run, S.COMPLETED, 0, "success", key="someone-else")
    assert not store.executions.transition(run, [S.RUNNING], S.WAITING, key="someone-else")
    assert store.executions.get(run) == before
    assert store.executions.update(run, key="mine", cost_usd=1.5)
    assert store.executions.finish(run, S.COMPLETED, 0, "success", key="mine")
    # A late progress write of the supervisor never lands on its final row.
    assert not store.executions.update(run, key="mine", only_supervised=True, cost_usd=7.0)
    assert store.executions.get(run).cost_usd == 1.5


def test_only_supervised_updates_running_and_waiting_rows(store: Store) -> None:
    run = new_run(store, "sup")
    assert not store.executions.update(run, only_supervised=True, model="m")
    assert store.executions.claim_slot(run, 5, S.QUEUED) == "claimed"
    assert store.executions.update(run, only_supervised=True, model="m1")
    assert store.executions.transition(run, [S.RUNNING], S.WAITING)
    assert store.executions.update(run, only_supervised=True, model="m2")
    assert store.executions.get(run).model == "m2"


def test_compare_and_set_race_between_connections(store: Store, open_another: Another) -> None:
    """A supervisor's final write and a reaper's, on two connections at once: one wins, and
    the row is exactly the winner's."""
    others = [open_another() for _ in range(4)]
    for round_ in range(10):
        run = new_run(store, f"race-{round_}")
        assert store.executions.claim_slot(run, 100, S.QUEUED) == "claimed"
        outcomes = [
            (S.COMPLETED, 0, "success"),
            (S.FAILED, 137, "runner_lost"),
            (S.KILLED, 143, "killed_by_user"),
            (S.FAILED, 124, "overdue"),
        ]
        won = at_once(
            [partial(s.executions.finish, run, *o) for o, s in zip(outcomes, others, strict=True)]
        )
        assert won.count(True) == 1, won
        got = store.executions.get(run)
        winner = outcomes[won.index(True)]
        assert (got.status, got.exit_code, got.reason) == winner


def test_delete_only_removes_rows_that_never_started(store: Store) -> None:
    queued = new_run(store, "q")
    running = new_run(store, "r")
    assert store.executions.claim_slot(running, 5, S.QUEUED) == "claimed"
    assert store.executions.delete(queued)
    assert not store.executions.delete(running)
    assert not store.executions.delete(queued)
    with pytest.raises(NotFoundError):
        store.executions.get(queued)


# -- heartbeats, slots, the queue ----------------------------------------------------------------


def test_beat_records_time_and_uptime_only_while_supervised(store: Store) -> None:
    run = new_run(store, "beat")
    at = "2026-11-24T06:02:03.123456+00:00"
    assert not store.executions.beat(run, at, 1.0, "beat")  # queued: no supervisor yet
    assert store.executions.claim_slot(run, 5, S.QUEUED) == "claimed"
    assert store.executions.beat(run, at, 12.5, "beat")
    got = store.executions.get(run)
    assert (got.heartbeat_at, got.uptime_s) == (at, 12.5)
    assert store.executions.finish(run, S.COMPLETED, 0, "success")
    assert not store.executions.beat(run, "2026-11-24T07:00:00+00:00", 13.0, "beat")
    assert store.executions.get(run).heartbeat_at == at


def test_a_preparing_row_is_not_startable_by_the_queue_pass(store: Store) -> None:
    run = new_run(store, "half-made", prepared=False)
    assert store.executions.get(run).status is S.PREPARING
    assert store.executions.queued() == []
    assert store.executions.claim_slot(run, 10, S.QUEUED) == "gone"
    assert store.executions.get(run).status is S.PREPARING
    # Its own start claims it straight from preparing.
    assert store.executions.claim_slot(run, 10, S.PREPARING) == "claimed"
    assert store.executions.get(run).status is S.RUNNING


def test_claim_slot_respects_the_cap(store: Store) -> None:
    runs = [new_run(store, f"slot{i}") for i in range(4)]
    assert store.executions.claim_slot(runs[0], 2, S.QUEUED) == "claimed"
    assert store.executions.claim_slot(runs[1], 2, S.QUEUED) == "claimed"
    assert store.executions.claim_slot(runs[2], 2, S.QUEUED) == "full"
    assert store.executions.get(runs[2]).status is S.QUEUED
    assert store.executions.slots_in_use() == 2
    started = store.executions.get(runs[0]).started_at
    assert started and ISO_UTC.match(started)
    # Claiming a run that is not queued does nothing.
    assert store.executions.claim_slot(runs[0], 10, S.QUEUED) == "gone"
    assert store.executions.finish(runs[0], S.COMPLETED, 0, "success")
    assert store.executions.claim_slot(runs[2], 2, S.QUEUED) == "claimed"
    assert store.executions.claim_slot(runs[3], 2, S.QUEUED) == "full"
    assert store.executions.slots_in_use() == 2
    # A waiting run holds its slot too (its supervisor is alive, waiting to resume).
    assert store.executions.transition(runs[2], [S.RUNNING], S.WAITING)
    assert store.executions.slots_in_use() == 2


def test_claim_slot_cap_holds_with_many_connections_at_once(
    store: Store, open_another: Another
) -> None:
    """Eight hosts claiming at once never start more than the cap."""
    cap = 3
    claimers = [open_another() for _ in range(8)]
    for round_ in range(5):
        runs = [new_run(store, f"many-{round_}-{i}") for i in range(len(claimers))]
        results = at_once(
            [
                partial(s.executions.claim_slot, r, cap, S.QUEUED)
                for r, s in zip(runs, claimers, strict=True)
            ]
        )
        assert results.count("claimed") == cap, results
        assert results.count("full") == len(runs) - cap
        assert store.executions.slots_in_use() == cap
        for execution in store.executions.list_executions(statuses=["running"]):
            assert store.executions.finish(execution.id, S.COMPLETED, 0, "success")


def _claim_in_process(location: str, run: int, cap: int, barrier: Any, out: Any) -> None:
    with open_store(location) as store:
        barrier.wait(60)
        out.put(store.executions.claim_slot(run, cap, ExecutionStatus.QUEUED))


def test_claim_slot_cap_holds_across_processes(store: Store) -> None:
    cap = 2
    runs = [new_run(store, f"proc-{i}") for i in range(5)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(runs))
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(store.location, run, cap, barrier, out))
        for run in runs
    ]
    try:
        for proc in procs:
            proc.start()
        results = [out.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    assert sorted(results) == ["claimed"] * cap + ["full"] * (len(runs) - cap)
    assert store.executions.slots_in_use() == cap


def test_usage_limit_until_is_the_latest_active_reset(store: Store) -> None:
    now = "2030-01-01T00:00:00.000000+00:00"
    assert store.executions.usage_limit_until(now) is None
    resets = ["2030-01-01T05:00:00.000000+00:00", "2030-01-01T03:00:00.000000+00:00"]
    for i, until in enumerate([*resets, "2029-12-31T23:00:00.000000+00:00"]):
        run = new_run(store, f"limit-{i}")
        assert store.executions.claim_slot(run, 10, S.QUEUED) == "claimed"
        assert store.executions.transition(
            run, [S.RUNNING], S.WAITING, waiting_until=until, waiting_reason="usage_limit"
        )
    backoff = new_run(store, "backoff")
    assert store.executions.claim_slot(backoff, 10, S.QUEUED) == "claimed"
    assert store.executions.transition(
        backoff,
        [S.RUNNING],
        S.WAITING,
        waiting_until="2030-01-09T00:00:00.000000+00:00",
        waiting_reason="retry_backoff",
    )
    assert store.executions.usage_limit_until(now) == resets[0]
    assert store.executions.usage_limit_until("2030-01-01T06:00:00+00:00") is None


def test_spent_since_sums_the_cost_of_recent_runs(store: Store, sql: Sql) -> None:
    old = new_run(store, "old")
    sql("UPDATE executions SET created_at = '2020-01-01T00:00:00.000000+00:00' WHERE id = ?", old)
    store.executions.update(old, cost_usd=5.0)
    for i, cost in enumerate([0.25, 1.5, None]):
        run = new_run(store, f"spend-{i}")
        if cost is not None:
            store.executions.update(run, cost_usd=cost)
    since = "2025-01-01T00:00:00.000000+00:00"
    assert store.executions.spent_since(since) == pytest.approx(1.75)
    assert store.executions.spent_since(to_iso(utc_now().replace(year=2100))) == 0.0


def test_stats_rows(store: Store) -> None:
    a = new_run(store, "sa", exec_type="note")
    b = new_run(store, "sb", exec_type="gameplan")
    new_run(store, "sc", exec_type="note")
    store.executions.update(a, cost_usd=0.5, input_tokens=10, output_tokens=2)
    store.executions.transition(a, [S.QUEUED], S.RUNNING, started_at="2026-01-01T00:00:00+00:00")
    store.executions.finish(a, S.COMPLETED, 0, "success", completed_at="2026-01-01T00:01:30+00:00")
    store.executions.finish(b, S.FAILED, 1, "no_result")
    stats = store.executions.stats_rows("2000-01-01T00:00:00+00:00")
    assert stats["by_status"] == {"completed": 1, "failed": 1, "queued": 1}
    assert stats["recent"] == stats["by_status"]
    assert stats["per_type"][0] == {
        "exec_type": "note", "runs": 2, "cost_usd": 0.5, "input_tokens": 10, "output_tokens": 2,
    }  # fmt: skip
    assert stats["per_type"][1]["exec_type"] == "gameplan"
    assert stats["durations"] == [pytest.approx(90.0)]
    assert store.executions.stats_rows("2100-01-01T00:00:00+00:00")["recent"] == {}


# -- post-actions --------------------------------------------------------------------------------


def _owed_run(store: Store, key: str) -> tuple[int, int]:
    source = store.documents.save("Source", "body", None, ["🚀"])
    run = new_run(store, key, doc_id=source)
    assert store.executions.claim_slot(run, 10, S.QUEUED) == "claimed"
    assert store.executions.finish(run, S.COMPLETED, 0, "success", post_actions="pending")
    return run, source


def test_post_actions_are_applied_once(store: Store) -> None:
    run, source = _owed_run(store, "post")
    assert [e.id for e in store.executions.owing_post_actions()] == [run]
    output = ("Analysis: Source", "the result", "proj", ["🔍"], source)
    done, output_id = store.complete_post_actions(run, output, ["✅"], ["🚀"])
    assert done and output_id is not None
    saved = store.documents.get(output_id)
    assert (saved.title, saved.content, saved.project, saved.tags, saved.parent_id) == (
        "Analysis: Source", "the result", "proj", ("🔍",), source,
    )  # fmt: skip
    assert store.documents.get(source).tags == ("✅",)
    got = store.executions.get(run)
    assert (got.post_actions, got.output_doc_id) == ("done", output_id)
    assert store.executions.owing_post_actions() == []
    assert store.complete_post_actions(run, output, ["✅"], ["🚀"]) == (False, None)
    assert len(store.documents.list_documents(limit=None)) == 2
    assert store.complete_post_actions(run + 99, None, [], []) == (False, None)


def test_post_actions_exactly_once_with_concurrent_callers(
    store: Store, open_another: Another
) -> None:
    """The supervisor and a sweep both try at once: one applies them, the other finds them
    done, and the output document exists once."""
    callers = [open_another() for _ in range(4)]
    for round_ in range(5):
        run, source = _owed_run(store, f"post-race-{round_}")
        before = len(store.documents.list_documents(limit=None))
        output = (f"Analysis {round_}", "text", None, ["🔍"], source)
        results = at_once(
            [partial(s.complete_post_actions, run, output, ["✅"], []) for s in callers]
        )
        assert [done for done, _ in results].count(True) == 1, results
        assert len(store.documents.list_documents(limit=None)) == before + 1
        assert store.executions.get(run).post_actions == "done"


def test_a_taken_run_key_is_refused_as_such_and_writes_nothing(store: Store) -> None:
    """A key collision is its own error (the start path draws another key), on both backends:
    not a store failure recognised by the words of the driver's message."""
    first = new_run(store, "same-key")
    with pytest.raises(RunKeyTaken):
        new_run(store, "same-key")
    assert [e.id for e in store.executions.list_executions(None, None)] == [first]


def test_the_start_path_draws_another_key_after_a_collision(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emdx.service import Service
    from emdx.service import scheduler as scheduler_module

    taken = new_run(store, "drawn-twice")
    keys = iter(["drawn-twice", "drawn-fresh"])
    monkeypatch.setattr(scheduler_module, "make_run_key", lambda doc_id: next(keys))
    service = Service(store)
    doc = store.documents.get(service.save_document("# d\nbody", title="d", detect=False).id)
    execution_id, key = service.scheduler._create_row(doc, ExecType.GENERIC, ExecOptions(), None)
    assert key == "drawn-fresh" and execution_id != taken
    assert store.executions.get(execution_id).run_key == "drawn-fresh"


def test_writes_and_the_claim_of_a_stale_job_change_nothing(store: Store) -> None:
    """A team worker's writes before its claim, and its claim, apply only while the row is
    queued under its job: one frozen meanwhile (the run queued again under a new job, or taken
    elsewhere) overwrites nothing and claims nothing."""
    run = new_run(store, "stale")
    assert store.executions.update(run, job_id=7)
    assert store.executions.update(run, queued_job=7, host="a", working_dir="/a/runs/stale")
    assert store.executions.update(run, job_id=8)  # queued again: job 8 is the run's now
    assert not store.executions.update(run, queued_job=7, host="a", working_dir="/a/x")
    assert store.executions.claim_slot(run, 5, S.QUEUED, 7) == "gone"
    assert store.executions.get(run).status is S.QUEUED
    assert store.executions.claim_slot(run, 5, S.QUEUED, 8) == "claimed"
    assert not store.executions.update(run, queued_job=8, host="b")  # running: not queued
    row = store.executions.get(run)
    assert (row.status, row.host, row.working_dir) == (S.RUNNING, "a", "/a/runs/stale")
