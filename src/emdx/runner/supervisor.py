"""The supervisor of one execution: spawn the agent, stream its output, watch it, finish the row.

Timeline: find our row by id *and* run key → record our identity → become child subreaper →
spawn the agent (`launch`, `agent_process`) → pump its output into the log (at once, with its
own times) while the row writer (`writer`) keeps the row and the heartbeat current and the
watchdogs (`watchdog`) watch → decide the outcome → after a usage limit or a transient failure
(`policy`), wait and resume the session as the next attempt (`waiting`) → kill whatever the
agent left behind (`leftovers`) → say what the log lost and how the heartbeats went (`reports`)
→ write the outcome to its side file (fsync'd), then the final state with a compare-and-set
retried through locks and a full disk (`finish`). Post-actions and the next queued run are the
service's (see `emdx.runner.__main__`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from emdx import paths, settings, smart, system
from emdx.agent.outcome import EXIT_TIMEOUT, Outcome, decide
from emdx.agent.totals import Banked
from emdx.masking import Masker
from emdx.models import Execution, ExecutionStatus
from emdx.reasons import Reason
from emdx.runlog import LogWriter
from emdx.runner import clock, policy, waiting
from emdx.runner.agent_process import AgentProcess
from emdx.runner.finish import record_outcome, warn
from emdx.runner.launch import launch
from emdx.runner.leftovers import kill_leftovers
from emdx.runner.output import AgentOutput
from emdx.runner.reports import report_heartbeats, report_log
from emdx.runner.watchdog import Alarm, Limits, Readings, alarm_text, background_ceiling, due
from emdx.runner.writer import RowWriter
from emdx.store import Store
from emdx.store.connection import retry_transient
from emdx.system import git
from emdx.system.clock import boot_clock

POLL_S = 0.2
# How long the supervisor's first write (its identity) retries through a database blip.
START_RETRY_S = 60.0
PROMPT_MAX = 64 * 1024 * 1024


@dataclass
class Watch:
    """Why the supervisor stopped the agent, if it did."""

    stop_signal: int | None = None
    alarm: Alarm | None = None


class Supervisor:
    def __init__(
        self,
        store: Store,
        execution: Execution,
        early_signals: list[int] | None = None,
        masker: Masker | None = None,
        on_resume: Callable[[Store], object] | None = None,
    ) -> None:
        assert execution.run_key is not None
        # What the entry point does when a wait ends (the queue pass: runs held while a usage
        # limit was active may start now); the service lives above this layer.
        self.on_resume = on_resume
        self.early_signals = early_signals if early_signals is not None else []
        self.masker = masker if masker is not None else Masker.from_env(os.environ)
        self.store = store
        self.execution = execution
        self.id = execution.id
        self.key: str = execution.run_key
        self.options = execution.options
        self.kill_grace = settings.kill_grace()
        self.heartbeat_s = execution.heartbeat_s or settings.heartbeat_seconds()
        self.started_at = system.process_start_time(os.getpid())
        log_path = Path(execution.log_file) if execution.log_file else paths.run_log_path(self.key)
        self.log = LogWriter(log_path, masker=self.masker)
        self.output = AgentOutput(self.log, self.masker)
        self.watch = Watch()
        self.agent: AgentProcess | None = None
        self.banked = Banked()
        self.last = self.output.progress
        self.attempt = execution.attempt
        # The agent's last event (on the boot clock) and its time as written (once per event).
        self._last_event: tuple[float, str] | None = None
        self.writer = RowWriter(
            store.location,
            self.id,
            self.key,
            self.heartbeat_s,
            self.uptime,
            self.note,
            log_path,
            self._row_gone,
        )

    def uptime(self) -> float:
        """Seconds since this process started, on the boot clock (what readers compare)."""
        return system.boot_clock() - (self.started_at or 0.0)

    # -- logging --------------------------------------------------------------------------

    def note(self, message: str, level: str = "info", icon: str = "🛡️") -> None:
        # Notes quote exception texts, paths and argv: anything may hold a secret.
        self.log.write(
            "runner",
            self.masker.mask(message),
            level=level,
            source="runner",
            pid=os.getpid(),
            icon=icon,
        )
        self.log.flush()

    # -- main -----------------------------------------------------------------------------

    def run(self) -> int:
        me = os.getpid()
        recorded = retry_transient(  # a database blip as we start is waited out
            lambda: self.store.executions.update(
                self.id,
                key=self.key,
                pid=me,
                pid_started_at=self.started_at,
                heartbeat_at=self.writer.now(self.store),
                uptime_s=round(self.uptime(), 3),
                heartbeat_s=self.heartbeat_s,
            ),
            START_RETRY_S,
        )
        if not recorded:
            warn(f"emdx runner: no row {self.id} with run key {self.key}")
            return 1
        subreaper = system.become_subreaper()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        for early in self.early_signals:
            # Arrived while Python was still importing us (a kill right after the start).
            self._on_signal(early, None)
        self.note(f"supervisor {me} started ({'subreaper' if subreaper else 'no subreaper'})")
        self.writer.start()
        try:
            outcome = self._supervise()
        finally:
            kill_leftovers(self.key, self.kill_grace, self.note)
            left = self.writer.stop()
        report_log(self.log, self.note)
        report_heartbeats(self.log, self.writer.report())
        self._finish(outcome, left)
        if self.execution.repo and self.execution.branch and self.execution.working_dir:
            git.unlock_worktree(Path(self.execution.repo), Path(self.execution.working_dir))
        paths.forget_environment(self.key)  # secrets at rest no longer than needed
        self.log.close()
        if self.writer.shipper is not None:
            self.writer.shipper.ship_rest(self.store)  # team mode: its last entries too
        system.reap_children()
        return outcome.exit_code

    def abort(self, exc: BaseException) -> None:
        """Last resort after an unexpected error: stop the agent's tree, record the failure."""
        with contextlib.suppress(Exception):
            self.note(f"supervisor error: {type(exc).__name__}: {exc}", "error", "💥")
        with contextlib.suppress(Exception):
            if self.agent is not None:
                self.agent.kill_now()
            kill_leftovers(self.key, self.kill_grace, self.note)
        with contextlib.suppress(Exception):
            self.writer.stop(1.0)
        with contextlib.suppress(Exception):
            self._finish(Outcome(ExecutionStatus.FAILED, 1, Reason.SUPERVISOR_ERROR), {})
        paths.forget_environment(self.key)

    def _row_gone(self, why: str) -> None:
        """From the row writer: the run is over for everyone else; stop the agent (our final
        write then finds the row finished, and changes nothing)."""
        self.note(f"{why}: stopping the agent", "warning", "🛑")
        self._on_signal(signal.SIGTERM, None)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.watch.stop_signal is None:
            self.watch.stop_signal = signum

    # -- attempts -------------------------------------------------------------------------

    def _supervise(self) -> Outcome:
        """Agent processes until one ends for good: after a usage limit (unless --no-wait-limit)
        or a transient failure (--retries), wait — heartbeating, no agent — then resume the
        session in the same directory, in this same execution."""
        try:
            prompt = paths.read_bounded(paths.prompt_path(self.key), PROMPT_MAX)
        except OSError as exc:
            self.note(f"cannot read the prompt: {exc}", "error", "❌")
            return Outcome(ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED)
        resume = self.options.resume_session
        waited = 0.0
        retries = 0
        while True:
            outcome = self._attempt(prompt, resume)
            limit = self.output.progress.usage_limit
            # Its counts move into the run's totals; the next process starts from zero.
            self.last = self.output.restart()
            self.banked = self.banked.plus(self.last)
            resets_at = None
            if outcome.reason == Reason.USAGE_LIMIT and limit and limit.resets_at is not None:
                resets_at = clock.iso(limit.resets_at)
                self.writer.progress(resets_at=resets_at)
            if self.watch.stop_signal is not None:
                return outcome
            wait = policy.next_wait(
                outcome,
                self.options,
                limit,
                now=time.time(),
                waited_s=waited,
                retries_done=retries,
                max_wait_s=settings.max_limit_wait(),
                jitter_s=settings.limit_jitter(),
                backoff_s=settings.retry_backoff(),
            )
            if wait is None:
                if outcome.reason == Reason.USAGE_LIMIT and self.options.wait_limit:
                    self.note(
                        "usage limit: not waiting (no reset time, or past the most a run "
                        "may wait in all)",
                        "warning",
                        "⏳",
                    )
                return outcome
            if wait.reason == "retry_backoff":
                retries += 1
            began = boot_clock()
            if not self._wait(wait, resets_at):
                return decide(None, None, killed=True)
            waited += boot_clock() - began
            resume = self.banked.session_id or resume
            prompt = policy.CONTINUATION_PROMPT.format(why=wait.why).encode()

    def _wait(self, wait: policy.Wait, resets_at: str | None) -> bool:
        """Wait out `wait` in `waiting` (see `waiting.wait_out`): False when a signal stopped it
        (the run is then killed) or the row was finished from outside."""
        # With the move: what the run did so far and the limit's reset time (no view shows a
        # wait without them), and no agent pid (the agent is gone until the resume).
        fields = {**self._row_progress(), "agent_pid": None, "agent_started_at": None}
        if resets_at is not None:
            fields["resets_at"] = resets_at
        attempt = waiting.wait_out(
            self.store,
            self.id,
            self.key,
            wait,
            fields,
            attempt=self.attempt,
            session=self.banked.session_id or "-",
            stop_signal=lambda: self.watch.stop_signal,
            note=self.note,
            now=self.writer.epoch,
        )
        if attempt is None:
            return False
        self.attempt = attempt
        if self.on_resume is not None:
            with contextlib.suppress(Exception):
                self.on_resume(self.store)
        return True

    # -- the agent ------------------------------------------------------------------------

    def _attempt(self, prompt: bytes, resume: str | None) -> Outcome:
        """One run of the agent, from spawn to its decided outcome."""
        self.watch.alarm = None
        proc = launch(
            self.options,
            self.execution.working_dir,
            self.id,
            prompt,
            resume,
            self.output.on_stderr,
            stopped=lambda: self.watch.stop_signal is not None,
            note=self.note,
        )
        if isinstance(proc, Outcome):
            return proc
        self.agent = proc
        self.output.agent_pid = proc.pid
        self.writer.progress(urgent=True, agent_pid=proc.pid, agent_started_at=proc.started_at)
        self.note(f"agent {proc.pid} started: {' '.join(proc.argv[1:])}", icon="🤖")
        self._pump(proc)
        returncode = proc.wait()
        if proc.stderr_framer.truncated:
            framer = proc.stderr_framer
            self.note(
                f"{framer.truncated} over-long stderr line(s) were cut "
                f"({framer.dropped_bytes} bytes dropped)",
                "warning",
                "✂️",
            )
        if self.watch.alarm is Alarm.HUNG_AFTER_RESULT:
            return Outcome(ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.HUNG_AFTER_RESULT)
        if self.watch.alarm is Alarm.DATABASE_LOST:
            return Outcome(ExecutionStatus.FAILED, 1, Reason.DATABASE_LOST)
        progress = self.output.progress
        return decide(
            returncode,
            progress.result,
            timed_out=self.watch.alarm is Alarm.TIMEOUT,
            stalled=self.watch.alarm is Alarm.STALLED,
            killed=self.watch.stop_signal is not None,
            needed_sigkill=proc.needed_sigkill,
            usage_limit=progress.usage_limit is not None,
        )

    def _pump(self, proc: AgentProcess) -> None:
        """Read the agent's output until it is done, stopping it on a signal or an alarm."""
        limits = Limits(
            timeout_s=self.options.timeout_s,
            stall_s=self.options.stall_timeout_s,
            result_grace_s=settings.result_exit_grace(),
            background_ceiling_s=background_ceiling(os.environ),
            database_s=settings.outage_tolerance() if self.store.queue is not None else None,
        )
        now = time.monotonic()
        readings = Readings(began=now, last_event=now)
        last_flush = now
        stopping = False
        seen_results = 0
        while True:
            for line in proc.read(POLL_S):
                if self.output.on_line(line):
                    readings.last_event = time.monotonic()
            now = time.monotonic()
            progress = self.output.progress
            # Another result (after background tasks) restarts the grace.
            results = len(progress.results)
            if results and results != seen_results:
                readings.result_at, seen_results = now, results
            readings.background_open = progress.background_open
            readings.unreached_since = self.writer.unreached_since()
            if now - last_flush >= 0.5:
                self._flush_progress()
                last_flush = now
            if proc.finished(now):
                break
            if stopping:
                continue
            if self.watch.stop_signal is not None:
                name = signal.Signals(self.watch.stop_signal).name
                self.note(f"received {name}: stopping the agent", "warning", "🛑")
            else:
                alarm = due(limits, readings, now)
                if alarm is None:
                    continue
                self.watch.alarm = alarm
                icon = {Alarm.TIMEOUT: "⏰", Alarm.DATABASE_LOST: "🔌"}.get(alarm, "🧊")
                self.note(alarm_text(alarm, limits), "error", icon)
            stopping = True
            proc.terminate(self.kill_grace, self.output.on_line_quietly)
            if proc.needed_sigkill:
                self.note(
                    f"agent ignored SIGTERM for {self.kill_grace:g}s: SIGKILL", "warning", "🔪"
                )
        if proc.truncated:
            self.note(f"{proc.truncated} over-long output line(s) were cut", "warning", "✂️")
        self._flush_progress()

    def _row_progress(self) -> dict[str, Any]:
        current = self.output.progress
        explained_by = current if current.event_count else self.last
        fields = self.banked.row_fields(current, self.attempt, explained_by)
        at = self.output.last_event_at
        if at is not None:
            if self._last_event is None or self._last_event[0] != at:
                self._last_event = (at, clock.iso(self.writer.epoch(at)))
            fields["last_event_at"] = self._last_event[1]
        return fields

    def _flush_progress(self) -> None:
        """The log to disk now; the row's fields to the writer (which never blocks us)."""
        self.log.flush()
        self.writer.progress(**self._row_progress())

    # -- stopping and finishing -----------------------------------------------------------

    def _finish(self, outcome: Outcome, left: dict[str, Any]) -> bool:
        """The final state (see `finish.record_outcome`); a completed smart run owes its
        post-actions, which the entry point applies right after."""
        fields = {**left, **self._row_progress()}
        owes = outcome.status is ExecutionStatus.COMPLETED and smart.has_post_actions(
            self.execution.exec_type
        )
        if owes:
            fields["post_actions"] = "pending"
        result = self.last.result_text if owes else None
        return record_outcome(
            self.store, self.id, self.key, outcome, fields, result, self.note, self.writer.clock()
        )
