"""What an agent leaves behind when it ends (tool processes in sessions of their own, orphans of
a SIGKILLed CLI): found as the supervisor's descendants (it is child subreaper) and by the run's
marker, stopped by identity (pid + start time)."""

from __future__ import annotations

import os

from emdx import system
from emdx.runner.finish import Note
from emdx.system import spawn

# However long the run's kill grace, leftovers get at most this long to go on SIGTERM.
LEFTOVER_GRACE_MAX_S = 5.0


def kill_leftovers(key: str, grace: float, note: Note) -> None:
    """Kill our descendants and the processes marked with our run key (never another run's:
    keys, unlike ids, are unique). The supervisors our queue passes started are other runs, not
    leftovers: they and theirs are spared."""
    leftovers = system.identify(system.descendants(os.getpid(), spare=spawn.launched))
    marked = system.marked_processes(key, exclude={pid for pid, _ in leftovers})
    targets = leftovers + marked
    if targets:
        pids = ", ".join(str(pid) for pid, _ in targets)
        note(f"stopping {len(targets)} process(es) the agent left behind: {pids}", "warning", "🧹")
        system.kill_identified(targets, min(grace, LEFTOVER_GRACE_MAX_S))
    system.reap_children()
