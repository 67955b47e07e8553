"""The supervisor of one execution: spawn the agent, stream its output, watch it, finish the row.

Timeline: record our identity → become child subreaper → spawn the agent (own process group,
parent-death signal, prompt on stdin, no shell) → pump stdout into the log and the row while the
heartbeat thread beats and the watchdogs watch → decide the outcome → compare-and-set the final
state → post-actions → kill whatever the agent left behind → start the next queued run.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from emdx import agent, paths, smart, system
from emdx import tags as T
from emdx.agent.outcome import EXIT_NOT_FOUND, EXIT_TIMEOUT, Outcome, decide
from emdx.agent.stream import LineFramer, Progress, StreamEvent, line_max_bytes, parse_line
from emdx.agent.summary import summarize
from emdx.errors import EmdxError, StoreError
from emdx.masking import Masker, MaskingStream
from emdx.models import (
    ExecType,
    Execution,
    ExecutionStatus,
    Reason,
    now_iso,
    percentile,
    to_iso,
)
from emdx.runlog import LogWriter
from emdx.runner.launch import kill_grace, start_queued
from emdx.store import Store, open_store
from emdx.store.connection import retry_locked
from emdx.system import git

DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_RESULT_EXIT_GRACE_S = 30.0
PROGRESS_EVERY_S = 0.5
# After the agent exits, how long a grandchild that kept our stdout open may delay the end.
PIPE_DRAIN_S = 2.0
FINAL_WRITE_DEADLINE_S = 600.0
MAX_STDERR_LINES = 2000
# Of each stderr line at most this much is kept (the rest is counted and dropped), and at most
# STDERR_TEXT_CHARS of it shown: memory stays bounded whatever the agent prints.
STDERR_LINE_MAX_BYTES = 64 * 1024
STDERR_TEXT_CHARS = 4000


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def heartbeat_interval() -> float:
    return _env_float("EMDX_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_S)


@dataclass
class Watch:
    """Why the supervisor stopped the agent, if it did."""

    stop_signal: int | None = None
    timed_out: bool = False
    stalled: bool = False
    hung_after_result: bool = False
    needed_sigkill: bool = False


class Supervisor:
    def __init__(
        self,
        store: Store,
        execution: Execution,
        early_signals: list[int] | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.early_signals = early_signals if early_signals is not None else []
        self.masker = masker if masker is not None else Masker.from_env(os.environ)
        self.store = store
        self.execution = execution
        self.id = execution.id
        self.options = execution.options
        self.kill_grace = kill_grace()
        self.result_grace = _env_float(
            "EMDX_RESULT_EXIT_GRACE_SECONDS", DEFAULT_RESULT_EXIT_GRACE_S
        )
        self.log = LogWriter(paths.run_log_path(self.id), masker=self.masker)
        self.progress = Progress()
        self.framer = LineFramer(line_max_bytes())
        self.stdout_open = True
        self.last_event_at: float | None = None
        self.watch = Watch()
        self.proc: subprocess.Popen[bytes] | None = None
        self.agent_identity: tuple[int, float] | None = None
        self._stop = threading.Event()
        self.cost_offset = self._earlier_session_cost() if self.options.resume_session else 0.0
        self.beat_ms: list[float] = []
        self.beat_failures = 0
        self._log_lock = threading.Lock()

    def _earlier_session_cost(self) -> float:
        """Cost already recorded for the session this run resumes: Claude Code reports the
        session's running total, and every earlier run of it (the chain of parents, and other
        resumes of the same session) has recorded its own share."""
        earlier: dict[int, float] = {}
        parent_id = self.execution.parent_execution_id
        while parent_id is not None and parent_id not in earlier:
            try:
                parent = self.store.executions.get(parent_id)
            except EmdxError:
                break
            earlier[parent.id] = parent.cost_usd or 0.0
            if parent.exec_type != ExecType.RESUME.value:
                break
            parent_id = parent.parent_execution_id
        if self.options.resume_session:
            for row in self.store.executions.by_session(self.options.resume_session):
                if row.id != self.id and row.status.is_final:
                    earlier[row.id] = row.cost_usd or 0.0
        return sum(earlier.values())

    # -- logging --------------------------------------------------------------------------

    def note(self, message: str, level: str = "info", icon: str = "🛡️") -> None:
        # Notes quote exception texts, paths and argv: anything may hold a secret.
        message = self.masker.mask(message)
        with self._log_lock:
            self.log.write(
                "runner", message, level=level, source="runner", pid=os.getpid(), icon=icon
            )
            self.log.flush()

    # -- main -----------------------------------------------------------------------------

    def run(self) -> int:
        me = os.getpid()
        self._update(
            pid=me,
            pid_started_at=system.process_start_time(me),
            heartbeat_at=now_iso(),
            log_file=str(self.log.path),
        )
        subreaper = system.become_subreaper()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        for early in self.early_signals:
            # Arrived while Python was still importing us (a kill right after the start).
            self._on_signal(early, None)
        self.note(f"supervisor {me} started ({'subreaper' if subreaper else 'no subreaper'})")

        outcome = self._spawn_and_pump()
        self._cleanup_descendants()
        self._report_heartbeats()
        final = self._finish(outcome)
        if self.execution.repo and self.execution.branch and self.execution.working_dir:
            git.unlock_worktree(Path(self.execution.repo), Path(self.execution.working_dir))
        if final and outcome.status is ExecutionStatus.COMPLETED:
            self._post_actions()
        self.log.close()
        try:
            start_queued(self.store)
        except EmdxError as exc:
            print(f"emdx runner: could not start queued runs: {exc}", file=sys.stderr)
        system.reap_children()
        return outcome.exit_code

    def abort(self, exc: BaseException) -> None:
        """Last resort after an unexpected error: stop the agent's tree, record the failure."""
        with contextlib.suppress(Exception):
            self.note(f"supervisor error: {type(exc).__name__}: {exc}", "error", "💥")
        with contextlib.suppress(Exception):
            if self.proc is not None and self.proc.poll() is None:
                system.signal_group(self.proc.pid, signal.SIGKILL)
            self._cleanup_descendants()
        with contextlib.suppress(Exception):
            self.store.executions.finish(
                self.id, ExecutionStatus.FAILED, 1, Reason.SUPERVISOR_ERROR
            )
        with contextlib.suppress(Exception):
            start_queued(self.store)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.watch.stop_signal is None:
            self.watch.stop_signal = signum
        self._stop.set()

    # -- agent ----------------------------------------------------------------------------

    def _spawn_and_pump(self) -> Outcome:
        binary = agent.resolve_binary()
        if binary is None:
            self.note(f"agent binary {agent.configured_binary()!r} not found", "error", "❌")
            return Outcome(ExecutionStatus.FAILED, EXIT_NOT_FOUND, Reason.AGENT_NOT_FOUND)
        try:
            prompt = paths.prompt_path(self.id).read_bytes()
        except OSError as exc:
            self.note(f"cannot read the prompt: {exc}", "error", "❌")
            return Outcome(ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED)
        tools = self.options.tools if self.options.tools is not None else agent.FULL_TOOLS
        argv = agent.build_argv(
            binary, tools, self.options.model, self.options.max_turns, self.options.resume_session
        )
        workdir = self.execution.working_dir or str(paths.runs_dir())
        if self.watch.stop_signal is not None:
            return decide(None, None, killed=True)
        try:
            # Single-threaded here on purpose: preexec_fn is only safe before threads start.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=agent.agent_env(os.environ, self.id),
                start_new_session=True,
                preexec_fn=system.die_with_parent,
                close_fds=True,
            )
        except FileNotFoundError:
            self.note(f"agent binary {binary} not found", "error", "❌")
            return Outcome(ExecutionStatus.FAILED, EXIT_NOT_FOUND, Reason.AGENT_NOT_FOUND)
        except PermissionError as exc:
            self.note(f"agent binary {binary} cannot be executed: {exc}", "error", "❌")
            return Outcome(ExecutionStatus.FAILED, EXIT_NOT_FOUND, Reason.AGENT_NOT_FOUND)
        except OSError as exc:
            self.note(f"cannot start the agent: {exc}", "error", "❌")
            return Outcome(ExecutionStatus.FAILED, 1, Reason.SPAWN_FAILED)
        started = system.process_start_time(self.proc.pid)
        self.agent_identity = (self.proc.pid, started) if started is not None else None
        self._update(agent_pid=self.proc.pid, agent_started_at=started)
        self.note(f"agent {self.proc.pid} started: {' '.join(argv[1:])}", icon="🤖")

        threading.Thread(target=self._feed_prompt, args=(prompt,), daemon=True).start()
        stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        stderr_reader.start()
        threading.Thread(target=self._heartbeat, daemon=True).start()
        self._pump()
        returncode = self.proc.wait()
        # Its last lines belong before the final note. A stdout still open means a grandchild
        # holds our pipes and we have already waited for it.
        stderr_reader.join(0 if self.stdout_open else PIPE_DRAIN_S)
        self._stop.set()
        if self.watch.hung_after_result:
            return Outcome(ExecutionStatus.FAILED, EXIT_TIMEOUT, Reason.HUNG_AFTER_RESULT)
        return decide(
            returncode,
            self.progress.result,
            timed_out=self.watch.timed_out,
            stalled=self.watch.stalled,
            killed=self.watch.stop_signal is not None,
            needed_sigkill=self.watch.needed_sigkill,
        )

    def _feed_prompt(self, prompt: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(prompt)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            # The agent died before reading it all; its exit is reported on its own.
            pass

    def _read_stderr(self) -> None:
        """Log the agent's stderr line by line, each line capped like stdout's."""
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        framer = LineFramer(min(STDERR_LINE_MAX_BYTES, line_max_bytes()))
        lines = 0
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            for raw in framer.feed(chunk) if chunk else framer.flush():
                lines += 1
                if lines <= MAX_STDERR_LINES:
                    self._log_stderr(raw, framer.last_cut)
            if not chunk:
                break
        if framer.truncated:
            self.note(
                f"{framer.truncated} over-long stderr line(s) were cut "
                f"({framer.dropped_bytes} bytes dropped)",
                "warning",
                "✂️",
            )

    def _log_stderr(self, raw: bytes, cut: bool) -> None:
        assert self.proc is not None
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            return
        text = self.masker.mask_cut(text, STDERR_TEXT_CHARS, cut=cut)
        with self._log_lock:
            self.log.write(
                "stderr",
                text,
                level="warning",
                source="agent-stderr",
                pid=self.proc.pid,
                icon="🟧",
            )

    def _heartbeat(self) -> None:
        interval = heartbeat_interval()
        try:
            store = open_store(self.store.path)
        except EmdxError as exc:
            self.note(f"heartbeat thread cannot open the database: {exc}", "error")
            return
        try:
            while not self._stop.wait(interval):
                began = time.perf_counter()
                try:
                    store.executions.beat(self.id, now_iso())
                    self.beat_ms.append((time.perf_counter() - began) * 1000)
                except EmdxError as exc:
                    # Never fatal: a missed beat only makes the run look unresponsive for a while.
                    self.beat_failures += 1
                    self.note(f"heartbeat write failed (will retry): {exc}", "warning", "💔")
        finally:
            store.close()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        framer = self.framer
        began = last_event = time.monotonic()
        last_flush = 0.0
        result_at: float | None = None
        exited_at: float | None = None
        timeout = self.options.timeout_s
        stall = self.options.stall_timeout_s
        while True:
            events = poller.poll(200) if self.stdout_open else []
            if not self.stdout_open:
                time.sleep(0.2)
            now = time.monotonic()
            for _, mask in events:
                chunk = os.read(fd, 1 << 16) if mask & (select.POLLIN | select.POLLHUP) else b""
                if not chunk:
                    # End of output is not the end of the agent: it may still run (and must
                    # still obey the watchdogs and signals) after closing its stdout.
                    self.stdout_open = False
                    poller.unregister(fd)
                    for line in framer.flush():
                        self._on_line(line)
                    break
                for line in framer.feed(chunk):
                    if self._on_line(line):
                        last_event = now
                if result_at is None and self.progress.result is not None:
                    result_at = now
            if now - last_flush >= PROGRESS_EVERY_S:
                self._flush_progress()
                last_flush = now
            if self.proc.poll() is not None:
                if not self.stdout_open:
                    break
                # A grandchild may hold our stdout open forever; the agent's exit ends the run.
                exited_at = exited_at or now
                if now - exited_at >= PIPE_DRAIN_S:
                    break
                continue
            if self._stop.is_set() and self.watch.stop_signal is not None:
                self.note(
                    f"received {signal.Signals(self.watch.stop_signal).name}: stopping the agent",
                    "warning",
                    "🛑",
                )
                self._terminate_agent()
            elif timeout is not None and now - began >= timeout:
                self.watch.timed_out = True
                self.note(f"wall-clock timeout of {timeout:g}s reached", "error", "⏰")
                self._terminate_agent()
            elif stall is not None and now - last_event >= stall:
                self.watch.stalled = True
                self.note(f"no agent event for {stall:g}s: stalled", "error", "🧊")
                self._terminate_agent()
            elif result_at is not None and now - result_at >= self.result_grace:
                self.watch.hung_after_result = True
                self.note(
                    f"agent did not exit {self.result_grace:g}s after its result", "error", "🧊"
                )
                self._terminate_agent()
        if framer.truncated:
            self.note(f"{framer.truncated} over-long output line(s) were cut", "warning", "✂️")
        self._flush_progress()

    def _on_line(self, line: bytes) -> bool:
        # Masked here, before anything reads the event: row fields and summaries too.
        event = parse_line(line, self.masker)
        if event is None:
            return False
        self.last_event_at = time.time()
        self.progress.update(event)
        self._log_event(event, line)
        return True

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
        with self._log_lock:
            self.log.write(
                type_,
                message,
                level=level,
                source="agent",
                pid=self.proc.pid if self.proc else None,
                icon=icon,
                raw=raw,
                raw_json=raw_json,
            )

    def _row_progress(self) -> dict[str, object]:
        fields = self.progress.row_fields()
        if fields["cost_usd"] is not None and self.cost_offset:
            # A resumed session reports its whole history's cost; the row keeps this run's share.
            fields["cost_usd"] = max(0.0, float(fields["cost_usd"]) - self.cost_offset)
        return fields

    def _flush_progress(self) -> None:
        with self._log_lock:
            self.log.flush()
        fields = self._row_progress()
        if self.last_event_at is not None:
            fields["last_event_at"] = to_iso(datetime.fromtimestamp(self.last_event_at, UTC))
        try:
            self.store.executions.update(self.id, **fields)
        except StoreError as exc:
            self.note(f"progress write failed (will retry): {exc}", "warning", "💾")

    # -- stopping -------------------------------------------------------------------------

    def _terminate_agent(self) -> None:
        """SIGTERM the agent's process group, drain its output during the grace, then SIGKILL."""
        assert self.proc is not None
        pgid = self.proc.pid  # start_new_session: the agent leads its own group
        system.signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return
            self._drain(0.1)
        self.watch.needed_sigkill = True
        self.note(f"agent ignored SIGTERM for {self.kill_grace:g}s: SIGKILL", "warning", "🔪")
        system.signal_group(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            system.signal_pid(self.proc.pid, signal.SIGKILL)

    def _drain(self, wait_s: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        if not self.stdout_open:
            time.sleep(wait_s)
            return
        ready, _, _ = select.select([self.proc.stdout.fileno()], [], [], wait_s)
        if ready:
            # Output written while the agent shuts down still belongs in the log.
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self.stdout_open = False
            for line in self.framer.feed(chunk):
                self._on_line(line)

    def _cleanup_descendants(self) -> None:
        """Kill what the agent left: our descendants (we are subreaper) and marked processes."""
        leftovers = system.identify(system.descendants(os.getpid()))
        marked = system.marked_processes(self.id, exclude={pid for pid, _ in leftovers})
        targets = leftovers + marked
        if targets:
            pids = ", ".join(str(pid) for pid, _ in targets)
            self.note(
                f"stopping {len(targets)} process(es) the agent left behind: {pids}",
                "warning",
                "🧹",
            )
            system.kill_identified(targets, min(self.kill_grace, 5.0))
        system.reap_children()

    def _report_heartbeats(self) -> None:
        beats = sorted(self.beat_ms)
        if not beats and not self.beat_failures:
            return

        def pct(p: float) -> float:
            return round(percentile(beats, p) or 0.0, 2)

        stats = {
            "beats": len(beats),
            "failures": self.beat_failures,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": round(beats[-1], 2) if beats else 0,
        }
        with self._log_lock:
            self.log.write(
                "runner",
                f"heartbeats: {stats['beats']} written, "
                f"{stats['failures']} failed, p99 {stats['p99_ms']} ms",
                source="runner",
                pid=os.getpid(),
                icon="💓",
                raw=stats,
            )

    # -- finishing ------------------------------------------------------------------------

    def _finish(self, outcome: Outcome) -> bool:
        fields = self._row_progress()

        def write() -> bool:
            return self.store.executions.finish(
                self.id, outcome.status, outcome.exit_code, str(outcome.reason), **fields
            )

        try:
            won = retry_locked(write, FINAL_WRITE_DEADLINE_S)
        except StoreError as exc:
            self.note(f"could not record the final state: {exc}", "error", "❌")
            return False
        if won:
            self.note(
                f"finished: {outcome.status.value}, exit {outcome.exit_code}, "
                f"reason {outcome.reason}",
                icon="🏁",
            )
        else:
            current = self.store.executions.get(self.id)
            self.note(f"final state was already recorded ({current.status.value}); keeping it")
        return won

    def _post_actions(self) -> None:
        """Smart execution on success: save the output document, or mark the gameplan done."""
        execution = self.store.executions.get(self.id)
        if execution.doc_id is None or execution.exec_type == ExecType.GENERIC.value:
            return
        try:
            doc = self.store.documents.get(execution.doc_id, include_deleted=True)
            plan = smart.plan_for_type(doc, ExecType(execution.exec_type))
            # Masked with its event already; again here, as this text is kept (and indexed).
            result_text = self.masker.mask(
                str((self.progress.result or {}).get("result") or "").strip()
            )
            if plan.output_title and result_text:
                output_id = self.store.documents.save(
                    plan.output_title, result_text, doc.project, list(plan.output_tags), doc.id
                )
                self.store.executions.update(self.id, output_doc_id=output_id)
                self.note(
                    f"saved the result as document #{output_id}: {plan.output_title}", icon="💾"
                )
            if plan.source_tags_on_success:
                self.store.documents.add_tags(doc.id, list(plan.source_tags_on_success))
                self.store.documents.remove_tags(doc.id, [T.ACTIVE])
                self.note(
                    f"tagged document #{doc.id} {' '.join(plan.source_tags_on_success)}", icon="🏷️"
                )
        except EmdxError as exc:
            self.note(f"post-action failed: {exc}", "error", "❌")

    def _update(self, **fields: object) -> None:
        try:
            self.store.executions.update(self.id, **fields)
        except StoreError as exc:
            self.note(f"row update failed: {exc}", "warning", "💾")


def main(argv: list[str], early_signals: list[int] | None = None) -> int:
    masker = Masker.from_env(os.environ)
    if masker:
        # Our stderr is logs/<id>.runner.err: tracebacks and notes quote exception texts.
        sys.stderr = MaskingStream(sys.stderr, masker)
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m emdx.runner EXECUTION_ID", file=sys.stderr)
        return 2
    try:
        store = open_store()
        execution = store.executions.get(int(argv[0]))
    except EmdxError as exc:
        print(f"emdx runner: {exc}", file=sys.stderr)
        return 1
    if execution.status is not ExecutionStatus.RUNNING:
        # Killed while queued, or already finished: nothing to supervise.
        print(f"emdx runner: execution {execution.id} is {execution.status.value}", file=sys.stderr)
        return 0
    supervisor = Supervisor(store, execution, early_signals, masker)
    try:
        return supervisor.run()
    except Exception as exc:
        # A bug in emdx must still end the run, kill what it started and say why.
        traceback.print_exc()
        supervisor.abort(exc)
        return 1
