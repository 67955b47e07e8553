"""The typed messages the TUI's thread workers post back to their screen.

A worker does its database and process work off the UI thread and ends by posting one of these
(through `emdx.tui.workers.post`); the screen's handler updates the widgets on the UI thread.
Each message carries what its handler needs to tell whether it is still current (the query, the
filter, the run it was for): a slower, older worker's result can arrive after a newer one's.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from emdx.models import Execution
from emdx.service import KillResult, LogTail
from emdx.tui.data import DocumentRow


@dataclass
class DocumentsLoaded(Message, bubble=False):
    """The documents matching `query`, the filter's text when the search began."""

    query: str
    rows: list[DocumentRow]


@dataclass
class PreviewLoaded(Message, bubble=False):
    """A document's content and its most recent executions, for the preview pane."""

    doc_id: int
    content: str
    runs: list[Execution]


@dataclass
class RunStarted(Message, bubble=False):
    """A run of document `doc_id` was started (or queued)."""

    doc_id: int
    execution: Execution


@dataclass
class RunsLoaded(Message, bubble=False):
    """The runs for status filter `filter_index`, and the entries new in the followed log
    `tail` (read in the same worker, so a refresh costs the UI thread no file reads)."""

    filter_index: int
    runs: list[Execution]
    tail: LogTail | None
    entries: list[dict[str, object]]


@dataclass
class LogOpened(Message, bubble=False):
    """The log of run `execution_id` was opened; `entries` is what it holds so far."""

    execution_id: int
    tail: LogTail | None
    entries: list[dict[str, object]]


@dataclass
class RunKilled(Message, bubble=False):
    """A kill the user confirmed has ended (or found the run already over)."""

    result: KillResult


@dataclass
class RunRetried(Message, bubble=False):
    """Run `retried_id` was retried as the new run `execution`."""

    retried_id: int
    execution: Execution
