"""What every thread worker body of the TUI uses: `reporting` (its failure becomes one
notification), `cancelled` (for `emdx.tui.data`'s calls) and `post` (its result, as a message).

A worker's SQL stops when the worker is cancelled (a newer search replaces it, the app quits),
so `q` always quits at once; a cancelled worker shows nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from textual.app import App
from textual.message import Message
from textual.message_pump import MessagePump
from textual.worker import get_current_worker

from emdx.errors import EmdxError
from emdx.format import one_line


def cancelled() -> Callable[[], bool]:
    """The current thread worker's "was I cancelled?", for `emdx.tui.data`'s calls."""
    worker = get_current_worker()
    return lambda: worker.is_cancelled


@contextmanager
def reporting(app: App[None], title: str = "", timeout: float | None = None) -> Iterator[None]:
    """The body of a thread worker: any exception becomes one error notification and the app
    keeps running; a worker cancelled meanwhile says nothing (its SQL was interrupted on
    purpose, and the app may be gone).

    The message can quote agent or document text: sanitised, and not read as markup (Textual's
    own markup has tags, `[$variable]`, that no escape function covers). An error emdx did not
    expect is named by its type, so that it can be reported."""
    try:
        yield
    except Exception as exc:
        if get_current_worker().is_cancelled:
            return
        text = str(exc) if isinstance(exc, EmdxError) else f"unexpected {type(exc).__name__}: {exc}"
        app.call_from_thread(
            app.notify, one_line(text), title=title, severity="error", timeout=timeout, markup=False
        )


def post(target: MessagePump, message: Message) -> None:
    """Post a worker's result to `target` (thread-safe), unless the worker was cancelled: a
    newer one replaces it, or the app is quitting."""
    if not get_current_worker().is_cancelled:
        target.post_message(message)
