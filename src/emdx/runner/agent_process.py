"""One agent process: spawned in its own process group with a parent-death signal, the prompt on
stdin, no shell; its stdout and stderr read as bytes framed on `\\n` with a per-line cap; stopped
with SIGTERM to its group, a grace period, then SIGKILL."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from emdx import system
from emdx.agent.stream import LineFramer

# After the agent exits, how long a grandchild that kept our stdout open may delay the end.
PIPE_DRAIN_S = 2.0
READ_CHUNK = 1 << 16


class AgentProcess:
    def __init__(
        self,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        prompt: bytes,
        line_max: int,
        stderr_line_max: int,
        on_stderr: Callable[[bytes, bool], None],
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.prompt = prompt
        self.framer = LineFramer(line_max)
        self.stderr_framer = LineFramer(stderr_line_max)
        self.on_stderr = on_stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self.identity: tuple[int, float] | None = None
        self.started_at: float | None = None
        self.stdout_open = True
        self.needed_sigkill = False
        self.exited_at: float | None = None
        self._stderr_thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> tuple[int, float | None]:
        """Spawn it (raises OSError: FileNotFoundError, PermissionError, …)."""
        # Called while the supervisor is single-threaded but for its row writer, which holds
        # no lock a forked child could need: preexec_fn runs between fork and exec.
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
            preexec_fn=system.die_with_parent,
            close_fds=True,
        )
        started = self.started_at = system.process_start_time(self.proc.pid)
        if started is not None:
            self.identity = (self.proc.pid, started)
        threading.Thread(target=self._feed_prompt, name="stdin", daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="stderr", daemon=True)
        self._stderr_thread.start()
        return self.proc.pid, started

    def _feed_prompt(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(self.prompt)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it died before reading it all; its exit is reported on its own

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        framer = self.stderr_framer
        while True:
            try:
                chunk = os.read(fd, READ_CHUNK)
            except OSError:
                chunk = b""
            for raw in framer.feed(chunk) if chunk else framer.flush():
                self.on_stderr(raw, framer.last_cut)
            if not chunk:
                return

    def read(self, timeout_s: float) -> Iterator[bytes]:
        """The complete stdout lines that arrive within `timeout_s` (one read's worth)."""
        assert self.proc is not None and self.proc.stdout is not None
        if not self.stdout_open:
            time.sleep(timeout_s)
            return
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            return
        chunk = os.read(fd, READ_CHUNK)
        if not chunk:
            # End of output is not the end of the agent: it may still run (and must still obey
            # the watchdogs and signals) after closing its stdout.
            self.stdout_open = False
            yield from self.framer.flush()
            return
        yield from self.framer.feed(chunk)

    def finished(self, now: float) -> bool:
        """The agent exited and its output is drained (or a grandchild holding our stdout open
        has had PIPE_DRAIN_S to let go)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            return False
        if not self.stdout_open:
            return True
        self.exited_at = self.exited_at or now
        return now - self.exited_at >= PIPE_DRAIN_S

    def wait(self) -> int:
        """Its exit status (reaped); then the last stderr lines (2 s at most: a grandchild may
        hold stderr open too)."""
        assert self.proc is not None
        code = self.proc.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(0 if self.stdout_open else PIPE_DRAIN_S)
        return code

    def terminate(self, grace_s: float, on_line: Callable[[bytes], None]) -> None:
        """SIGTERM its process group, keep reading its output during the grace, then SIGKILL."""
        assert self.proc is not None
        pgid = self.proc.pid  # start_new_session: the agent leads its own group
        system.signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return
            # Output written while the agent shuts down still belongs in the log.
            for line in self.read(0.1):
                on_line(line)
        self.needed_sigkill = True
        system.signal_group(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            system.signal_pid(self.proc.pid, signal.SIGKILL)

    def kill_now(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            system.signal_group(self.proc.pid, signal.SIGKILL)

    @property
    def truncated(self) -> int:
        return self.framer.truncated
