"""Fault injection for emdx's own processes (CLI, supervisor), loaded by every Python process
started with this directory on PYTHONPATH (`testkit.inject_faults`).

EMDX_FAULTS is a JSON list of faults: {"proc": "cli" | "runner" | "any", "target":
"module:Qualified.name", "when": "before" | "after", "action": "sigkill" | "interrupt" |
"raise-full" | "raise-locked" | "raise-io" | "hold", "times": N (default 1, 0 = always), "mark":
a path touched when the fault fires, "release": for "hold", the path whose creation lets the
call go on (60 s at most)}. The target is wrapped once the process starts; a process of
the other kind is left alone. Each firing appends a line to the mark file, so a test can wait
for it.
"""

import json
import os
import sys
from typing import TypedDict


def _kind() -> str:
    argv = getattr(sys, "orig_argv", sys.argv)
    if "emdx.runner" in argv:
        return "runner"
    if "emdx" in argv or any(a.endswith("/emdx") for a in argv):
        return "cli"
    return "other"


class Fault(TypedDict, total=False):
    """One entry of EMDX_FAULTS (see above)."""

    proc: str
    target: str
    when: str
    action: str
    times: int
    mark: str
    release: str


def _install(fault: Fault) -> None:
    import importlib
    import signal
    import sqlite3

    module_name, _, qualname = fault["target"].partition(":")
    module = importlib.import_module(module_name)
    owner = module
    *parents, name = qualname.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    state = {"left": int(fault.get("times", 1))}

    def fire() -> None:
        if state["left"] == 0 and int(fault.get("times", 1)) != 0:
            return
        if state["left"] > 0:
            state["left"] -= 1
        if fault.get("mark"):
            with open(fault["mark"], "a") as handle:
                handle.write(f"{os.getpid()}\n")
        action = fault["action"]
        if action == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "hold":
            import time

            deadline = time.monotonic() + 60
            while not os.path.exists(fault["release"]) and time.monotonic() < deadline:
                time.sleep(0.02)
            return
        from emdx.errors import StoreError

        text = {
            "raise-full": "database or disk is full",
            "raise-locked": "database is locked",
            "raise-io": "disk I/O error",
        }[action]
        try:
            raise sqlite3.OperationalError(text)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"injected: {text}") from exc

    def wrapper(*args: object, **kwargs: object) -> object:
        if fault.get("when", "before") == "before":
            fire()
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        fire()
        return result

    setattr(owner, name, wrapper)


def _main() -> None:
    raw = os.environ.get("EMDX_FAULTS")
    if not raw:
        return
    kind = _kind()
    for fault in json.loads(raw):
        if fault.get("proc", "any") in ("any", kind):
            _install(fault)


_main()
