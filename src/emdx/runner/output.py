"""The agent's output as the supervisor keeps it: every stdout line parsed (masked before
anything reads it) into the run's progress and its log; stderr lines masked, then cut."""

from __future__ import annotations

from emdx.agent.progress import Progress
from emdx.agent.stream import StreamEvent, parse_line
from emdx.agent.summary import summarize
from emdx.masking import Masker
from emdx.runlog import LogWriter
from emdx.system.clock import boot_clock

MAX_STDERR_LINES = 2000
# Of each stderr line at most STDERR_TEXT_CHARS are shown (the framer keeps at most 64 KiB).
STDERR_TEXT_CHARS = 4000


class AgentOutput:
    def __init__(self, log: LogWriter, masker: Masker) -> None:
        self.log = log
        self.masker = masker
        self.progress = Progress()
        self.agent_pid: int | None = None
        self.last_event_at: float | None = None
        self.stderr_lines = 0

    def restart(self, agent_pid: int | None = None) -> Progress:
        """A new agent process: fresh progress (the previous one's is returned)."""
        finished, self.progress = self.progress, Progress()
        self.agent_pid = agent_pid
        return finished

    def on_line(self, line: bytes) -> bool:
        """One stdout line; True when it was an event (a blank line is none)."""
        event = parse_line(line, self.masker)
        if event is None:
            return False
        self.last_event_at = boot_clock()  # on the heartbeats' clock when written
        self.progress.update(event)
        self._log_event(event, line)
        return True

    def on_line_quietly(self, line: bytes) -> None:
        self.on_line(line)

    def _log_event(self, event: StreamEvent, line: bytes) -> None:
        icon, message = summarize(event)
        level = "warning" if event.kind == "malformed" else "info"
        if event.is_result and (event.data or {}).get("is_error") is not False:
            level = "error"
        type_ = event.kind if event.subtype is None else f"{event.kind}/{event.subtype}"
        if event.is_result:
            type_ = "result"
        raw: object = None
        raw_json: bytes | None = None
        if event.data is None:
            raw = event.text
        elif event.masked:
            raw = event.data
        else:
            # Valid JSON as printed, with nothing to mask: log its own text (the hot path).
            raw_json = line
        self.log.write(
            type_,
            message,
            level=level,
            source="agent",
            pid=self.agent_pid,
            icon=icon,
            raw=raw,
            raw_json=raw_json,
        )

    def on_stderr(self, raw: bytes, cut: bool) -> None:
        """From the stderr thread: each line, masked before it is cut."""
        self.stderr_lines += 1
        if self.stderr_lines > MAX_STDERR_LINES:
            return
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            return
        self.log.write(
            "stderr",
            self.masker.mask_cut(text, STDERR_TEXT_CHARS, cut=cut),
            level="warning",
            source="agent-stderr",
            pid=self.agent_pid,
            icon="🟧",
        )
