#!/usr/bin/env python3
"""A small stand-in for the Claude Code CLI, for fast unit tests of the supervisor.

It reads the prompt on stdin and obeys `FAKE:` directives found in it (one per line):
  FAKE:events=N        N assistant events before the result (FAKE:interval=S between them)
  FAKE:sleep=S         sleep S seconds silently before the result
  FAKE:garbage         garbage, blank lines, a 5 MB line and invalid UTF-8 among the events
  FAKE:no-result       exit 0 without a result event
  FAKE:error-result    result with is_error true (subtype success), exit 1
  FAKE:api-error=N     an API error result (is_error, api_error_status N, "API Error: N …"), exit 1
  FAKE:max-turns       result subtype error_max_turns, exit 1
  FAKE:exit=N          exit with N (after the result, if any)
  FAKE:ignore-term     ignore SIGTERM
  FAKE:setsid-child    start a `sleep 600` in a new session (like Claude's Bash tool)
  FAKE:hang-after-result  print the result, then never exit
  FAKE:pidfile=PATH    write "agent_pid [child_pid]" to PATH
  FAKE:leak=NAME       print the value of $NAME wherever an agent can: session id, model, assistant
                       text, a tool call, a tool result, a \\u-escaped event, an unparsable line,
                       stderr and the result text
  FAKE:leak-cuts=NAME  print $NAME across each cut emdx makes: the 160-char summary, the
                       2000-char text of an unparsable line, the 4000-char stderr text and, when
                       EMDX_LINE_MAX_BYTES is set, the per-line caps of stdout and stderr
  FAKE:stderr-flood=MB MB MiB on stderr as one line without a newline, written in chunks
  FAKE:touch=PATH      create PATH (after the flood)
  FAKE:wait-file=PATH  wait until PATH exists (60 s at most), before the assistant events
  FAKE:env=A,B         report the values of $A and $B in the result
  FAKE:proc-scan=PATH  write to PATH (JSON) what it can read of other processes: its ancestors
                       (parent first), the environ and cmdline of every process on the host,
                       the names of its own environment and its open file descriptors
  FAKE:hostile         terminal escape sequences (HOSTILE) in everything the agent controls:
                       session id, model, assistant text, a tool call and its result, stderr,
                       an unparsable stdout line (with raw 8-bit C1 bytes), the result text
`--version` alone prints a version and exits 0, as the real CLI does.
The result text reports the prompt's size and sha256, the argv, the cwd (and FAKE:env
variables), so tests can check them.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

# A stream-json event, as json.dumps takes it.
Event = dict[str, object]

# What an attacker prints to a terminal: OSC 52 (clipboard write) ended by BEL, OSC 0 (window
# title) ended by ST, CSI clear screen and colour, 8-bit CSI / OSC / ST, DCS, BEL, backspace,
# DEL, a carriage return and a right-to-left override. tests/security checks for each.
HOSTILE = (
    "\x1b]52;c;cHduZWQ=\x07 \x1b]0;pwned-title\x1b\\ \x1b[2J\x1b[31mred "
    "\x9b1m \x9d0;c1-title\x9c \x1bPdcs\x1b\\ \x07\x08\x7f\rover \u202eevil"
)


def emit(obj: Event) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def emit_utf8(obj: Event) -> None:
    """As the real CLI prints: non-ASCII as UTF-8, not escaped."""
    sys.stdout.buffer.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
    sys.stdout.flush()


def say(text: str) -> Event:
    return {"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}}


def json_escaped_utf8(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False)[1:-1].encode()


def every_char_escaped(text: str) -> str:
    """`text` as a JSON string body with every character written as a \\u escape."""
    units = text.encode("utf-16-be")
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))


def leak(secret: str) -> None:
    emit_utf8(
        {
            "type": "assistant",
            "message": {
                "content": [
                    {"type": "text", "text": f"the key is {secret}"},
                    {"type": "tool_use", "name": "Bash", "input": {"command": f"echo {secret}"}},
                ],
            },
        }
    )
    emit_utf8(
        {
            "type": "user",
            "message": {"content": [{"type": "tool_result", "content": f"printed {secret}"}]},
        }
    )
    escaped = every_char_escaped(secret)
    sys.stdout.buffer.write(
        b'{"type": "assistant", "message": {"content": [{"type": "text", "text": "escaped '
        + escaped.encode()
        + b'"}]}}\n'
    )
    sys.stdout.buffer.write(f"not json: {secret}\n".encode())
    sys.stderr.buffer.write(f"warning: token {secret} in the environment\n".encode())
    sys.stdout.flush()
    sys.stderr.flush()


def leak_cuts(secret: str) -> None:
    # `keep` characters of the secret fall before each cut: at least 8, so a leak shows.
    keep = min(len(secret) - 1, max(8, len(secret) // 2))
    emit_utf8(say("p" * (159 - keep) + secret + " after the summary cut"))
    kept = len(secret[:keep].encode())
    sys.stdout.buffer.write(b"q" * (2000 - kept) + secret.encode() + b" not json\n")
    sys.stderr.buffer.write(("e" * (4000 - keep) + secret + " end\n").encode())
    cap = int(os.environ.get("EMDX_LINE_MAX_BYTES", "0") or 0)
    if cap:
        head = json.dumps(say(""), ensure_ascii=False).encode()[: -len('"}]}}')]
        before = len(json_escaped_utf8(secret[:keep]))
        sys.stdout.buffer.write(
            head + b"r" * (cap - len(head) - before) + json_escaped_utf8(secret) + b'"}]}}\n'
        )
        # One byte into the next character: a cap may cut a UTF-8 sequence in two.
        before = kept + (1 if len(secret[keep].encode()) > 1 else 0)
        sys.stderr.buffer.write(b"s" * (cap - before) + secret.encode() + b" end\n")
    sys.stdout.flush()
    sys.stderr.flush()


def stderr_flood(mib: int) -> None:
    chunk = b"x" * (1 << 20)
    for _ in range(mib):
        sys.stderr.buffer.write(chunk)
    sys.stderr.flush()


def wait_file(path: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def _read_proc(pid: str, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            return handle.read().replace(b"\0", b"\n").decode("utf-8", "replace")
    except OSError:
        return None


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _parent_of(pid: int) -> int:
    stat = _read_proc(str(pid), "stat") or ""
    # The name (2nd field) may hold spaces and parentheses: the fields after the last ")".
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else 0


def proc_scan(path: str) -> None:
    """What a hostile agent running as the user reads of the processes above it and beside it."""
    ancestors: list[int] = []
    pid = os.getppid()
    while pid > 1 and len(ancestors) < 64:
        ancestors.append(pid)
        pid = _parent_of(pid)
    processes = {
        entry: {"cmdline": _read_proc(entry, "cmdline"), "environ": _read_proc(entry, "environ")}
        for entry in os.listdir("/proc")
        if entry.isdigit() and entry != str(os.getpid())
    }
    report = {
        "ancestors": ancestors,
        "processes": processes,
        "own_env": sorted(os.environ),
        "own_fds": {fd: _link(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")},
    }
    with open(path, "w") as handle:
        json.dump(report, handle)


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        # What emdx's pre-flight runs (the real CLI prints "2.1.332 (Claude Code)").
        print("2.1.332 (Claude Code, fake)")
        return
    prompt = sys.stdin.buffer.read()
    directives: dict[str, str] = {}
    for line in prompt.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("FAKE:"):
            key, _, value = line[5:].partition("=")
            directives[key.strip()] = value.strip()
    if "ignore-term" in directives:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    session = "fake-" + hashlib.sha1(prompt).hexdigest()[:12]
    model = "fake-model"
    if "--model" in sys.argv:
        model = sys.argv[sys.argv.index("--model") + 1]
    secret = os.environ.get(directives.get("leak", ""), "") if "leak" in directives else ""
    if secret:
        session, model = f"session-{secret}", f"model-{secret}"
    hostile = "hostile" in directives
    if hostile:
        session += HOSTILE
        model += HOSTILE
    (emit_utf8 if secret else emit)(
        {
            "type": "system",
            "subtype": "init",
            "session_id": session,
            "model": model,
            "tools": ["Bash", "Read"],
            "cwd": os.getcwd(),
            "claude_code_version": "fake",
        }
    )
    child_pid: int | None = None
    if "setsid-child" in directives:
        child = subprocess.Popen(
            ["sleep", "600"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        child_pid = child.pid
    if "pidfile" in directives:
        with open(directives["pidfile"], "w") as handle:
            handle.write(f"{os.getpid()} {child_pid or ''}".strip())
    if "garbage" in directives:
        sys.stdout.buffer.write(b'this is not json\n\n   \n{"unterminated": \n')
        sys.stdout.buffer.write(b"\xff\xfe invalid utf-8 \xc3\x28\n")
        sys.stdout.buffer.write(b"x" * (5 * 1024 * 1024) + b"\n")
        sys.stdout.buffer.write(b"[1, 2, 3]\n")
        emit({"type": "brand_new_event", "payload": {"x": 1}})
        sys.stdout.flush()
    if secret:
        leak(secret)
    if "leak-cuts" in directives:
        leak_cuts(os.environ[directives["leak-cuts"]])
    if "stderr-flood" in directives:
        stderr_flood(int(directives["stderr-flood"]))
    if "touch" in directives:
        open(directives["touch"], "w").close()
    if "proc-scan" in directives:
        proc_scan(directives["proc-scan"])
    if "wait-file" in directives:
        wait_file(directives["wait-file"])
    if hostile:
        emit_hostile(session, model)
    interval = float(directives.get("interval", "0") or 0)
    for i in range(int(directives.get("events", "1") or 1)):
        emit(
            {
                "type": "assistant",
                "session_id": session,
                "message": {
                    "model": model,
                    "content": [{"type": "text", "text": f"step {i}"}],
                    "usage": {"input_tokens": 10, "output_tokens": 5},
                },
            }
        )
        if interval:
            time.sleep(interval)
    if "sleep" in directives:
        time.sleep(float(directives["sleep"]))
    exit_code = int(directives.get("exit", "0") or 0)
    if "no-result" not in directives:
        result: Event = {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "num_turns": 2,
            "session_id": session,
            "total_cost_usd": 0.0123,
            "usage": {"input_tokens": 100, "output_tokens": 50},
            "result": json.dumps(
                {
                    "prompt_bytes": len(prompt),
                    "sha256": hashlib.sha256(prompt).hexdigest(),
                    "argv": sys.argv[1:],
                    "env": {
                        name: os.environ.get(name)
                        for name in directives.get("env", "").split(",")
                        if name
                    },
                    "cwd": os.getcwd(),
                }
            ),
        }
        if "error-result" in directives:
            result.update(is_error=True, result="API Error: 400 bad request")
            exit_code = exit_code or 1
        if "api-error" in directives:
            status = int(directives["api-error"])
            result.update(is_error=True, api_error_status=status,
                          result=f"API Error: {status} scripted failure")  # fmt: skip
            exit_code = exit_code or 1
        if "max-turns" in directives:
            result.update(subtype="error_max_turns", is_error=True)
            exit_code = exit_code or 1
        if secret:
            result["result"] = f"# Analysis\n\nThe environment holds {secret} as its key."
        if hostile:
            result["result"] = "result " + HOSTILE
        (emit_utf8 if secret else emit)(result)
    if "hang-after-result" in directives:
        while True:
            time.sleep(1)
    sys.exit(exit_code)


def emit_hostile(session: str, model: str) -> None:
    def assistant(block: Event) -> None:
        emit(
            {
                "type": "assistant",
                "session_id": session,
                "message": {"model": model, "content": [block], "usage": {"output_tokens": 1}},
            }
        )

    assistant({"type": "text", "text": "assistant says " + HOSTILE})
    assistant({"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": HOSTILE}})
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": "tool says " + HOSTILE}
    emit({"type": "user", "session_id": session, "message": {"content": [tool_result]}})
    for line in ("stderr says " + HOSTILE, "stderr again " + HOSTILE):
        sys.stderr.buffer.write(line.encode() + b" raw \x9b\x9d\n")
    sys.stderr.flush()
    sys.stdout.buffer.write(b"not json " + HOSTILE.encode() + b" raw \x9b\x9d\xff\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
