"""The store's retry through transient errors (`store.connection.retry_transient`), driven by a
fake clock and sleeper: the deadline, the pauses and what is retried, with no real waiting."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from emdx.errors import StoreError, StoreUnavailable
from emdx.store.connection import is_transient, retry_transient


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def sqlite_error(text: str) -> StoreError:
    """A StoreError as the store raises it: from the sqlite3 error it describes."""
    error = StoreError(f"knowledge base: {text}")
    error.__cause__ = sqlite3.OperationalError(text)
    return error


def failing(errors: list[BaseException], value: str = "done") -> Callable[[], str]:
    """An action that raises each of `errors` in turn, then returns `value`."""
    pending = list(errors)

    def action() -> str:
        if pending:
            raise pending.pop(0)
        return value

    return action


@pytest.mark.parametrize(
    "error",
    [
        sqlite_error("database is locked"),
        sqlite_error("database table is busy"),
        sqlite_error("database or disk is full"),
        sqlite_error("disk I/O error"),
        sqlite_error("unable to open database file"),
        StoreUnavailable("the server is restarting"),
    ],
    ids=["locked", "busy", "full", "io", "unable-to-open", "unavailable"],
)
def test_transient_errors_are_retried_until_the_action_succeeds(error: StoreError) -> None:
    fake = FakeClock()
    retried: list[StoreError] = []
    action = failing([error, error])

    result = retry_transient(action, 10, 0.5, retried.append, fake.clock, fake.sleep)

    assert result == "done"
    assert retried == [error, error]
    assert fake.sleeps == [0.5, 0.5]


def test_success_at_once_never_sleeps() -> None:
    fake = FakeClock()
    assert retry_transient(lambda: 42, 10, 0.5, None, fake.clock, fake.sleep) == 42
    assert fake.sleeps == []


@pytest.mark.parametrize(
    "error",
    [
        sqlite_error("no such table: executions"),
        StoreError("a plain store error"),
        ValueError("not a store error at all"),
    ],
    ids=["no-such-table", "store-error", "other-exception"],
)
def test_other_errors_are_raised_at_once(error: Exception) -> None:
    fake = FakeClock()
    retried: list[StoreError] = []
    with pytest.raises(type(error)) as info:
        retry_transient(failing([error]), 10, 0.5, retried.append, fake.clock, fake.sleep)
    assert info.value is error
    assert retried == [] and fake.sleeps == []


def test_it_gives_up_at_the_deadline_with_the_last_error() -> None:
    fake = FakeClock()
    errors = [sqlite_error(f"database is locked ({n})") for n in range(100)]
    attempts: list[float] = []
    queue = list(errors)

    def action() -> str:
        attempts.append(fake.now)
        raise queue.pop(0)

    with pytest.raises(StoreError) as info:
        retry_transient(action, 2.0, 0.5, None, fake.clock, fake.sleep)

    # Tried at 0, 0.5, 1, 1.5 and 2 s: the attempt at the deadline is the last.
    assert [t - 1000.0 for t in attempts] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert fake.sleeps == [0.5] * 4
    assert info.value is errors[4]


def test_a_long_pause_is_not_cut_short_but_the_next_failure_ends_it() -> None:
    fake = FakeClock()
    error = sqlite_error("database is locked")
    with pytest.raises(StoreError):
        retry_transient(failing([error] * 10), 1.0, 5.0, None, fake.clock, fake.sleep)
    assert fake.sleeps == [5.0]


def test_is_transient_reads_the_cause_of_a_store_error() -> None:
    assert is_transient(sqlite_error("database is locked"))
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(sqlite_error("syntax error"))
    assert not is_transient(StoreError("database is locked"))  # no sqlite3 cause: not ours
    assert is_transient(StoreUnavailable("anything"))
