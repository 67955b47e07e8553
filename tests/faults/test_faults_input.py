"""Fault injection, input and concurrency: a 1 MB prompt, hostile document content, cleanup
racing finishing runs.

Every run case checks (a) the exact final row, (b) that no process of the run survives, (c) that
nothing else in the database changed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from faults_helpers import (
    World,
    assert_same_snapshot,
    final_triple,
    result_payload,
)
from testkit import Cli, run_in_pty, started_id

from emdx.format import sanitize
from emdx.service import Service
from emdx.service.cleanup import Action

# -- 14. a 1 MB prompt -------------------------------------------------------------------------


def test_one_megabyte_prompt(world: World) -> None:
    """14. A 1 MiB prompt reaches the agent byte-exact, on stdin, never in argv (E2BIG)."""
    marker = "UNIQUE-MARKER-7f3a"
    line = f"{marker} lorem ipsum dolor sit amet — ünïcödé ✓ 🚀\n"
    head = "# big prompt\n"
    body = head + line * ((1 << 20) // len(line.encode()))
    pad = (1 << 20) - len(body.encode())
    content = body + "x" * (pad - 1) + "\n"
    data = content.encode()
    assert len(data) == 1 << 20
    execution = world.start(content)
    before = world.snapshot(execution.id)

    final = world.wait_final(execution.id, timeout=30)
    assert final_triple(final) == ("completed", 0, "success")
    payload = result_payload(final)
    assert payload["prompt_bytes"] == len(data)
    assert payload["sha256"] == hashlib.sha256(data).hexdigest()
    argv = payload["argv"]
    assert not any(marker in arg or "lorem" in arg for arg in argv), argv
    assert sum(len(arg) for arg in argv) < 2000, argv
    world.assert_gone(final)
    assert_same_snapshot(before, world.snapshot(execution.id))


# -- 15. hostile document content --------------------------------------------------------------


def _hostile(tmp: Path, canary: Path) -> str:
    pwn = tmp / "pwned"
    return (
        "--help --version -rf --dangerously-skip-permissions\n"
        f"$(touch {pwn}-subst) $(touch pwned-relative)\n"
        f"`touch {pwn}-backtick`\n"
        f"; touch {pwn}-semicolon; rm -rf {canary}\n"
        f"&& touch {pwn}-and || touch {pwn}-or | touch {pwn}-pipe > {pwn}-redirect\n"
        "'\"\\ $HOME ${PATH} %s %n {0} {} [bold red]not markup[/] [/] <script>x</script>\n"
        "\x1b[31mred\x1b[0m \x1b]0;window title\x07 \x1b[2J\x1b[H \x1b[?1049h after-clear\n"
        "binary-ish: \x01\x02\x07\x08\x0b\x0c\x0e\x1f\x7f \x85 \u200b\u202e\u2028\u2029"
        " \ufeff\ufffd\uffff \U0001f4a5 \U0010ffff e\u0301 \u0663\u0664\r\n"
        "FAKE:events=2\n" + "y" * 100_000 + "\n"
        "tail line\n"
    )


def _run_in_pty(argv: list[str]) -> tuple[int, str]:
    """Run the CLI with a terminal as stdout (so `view` renders markdown with rich)."""
    code, output = run_in_pty(argv, size=(40, 100))
    return code, output.decode("utf-8", "replace")


def test_hostile_document_content(world: World, cli: Cli) -> None:
    """15. Content that starts with `--`, carries shell syntax, control and ANSI characters,
    odd unicode and a 100k-character line: saved, run, delivered byte-exact, never executed;
    `view` and `exec show` print it without crashing."""
    canary = world.tmp / "canary"
    canary.mkdir()
    (canary / "keep").write_text("still here")
    content = _hostile(world.tmp, canary)
    data = content.encode("utf-8")
    assert b"\x00" not in data

    saved = cli("save", input=data)
    assert saved.code == 0, saved
    doc_id = int(saved.stdout.split("#", 1)[1].split(":", 1)[0])
    started = cli("claude", "execute", str(doc_id), "--background")
    assert started.code == 0, started
    execution_id = started_id(started.stdout)
    before = world.snapshot(execution_id)

    final = world.wait_final(execution_id, timeout=30)
    assert final_triple(final) == ("completed", 0, "success")
    payload = result_payload(final)
    assert payload["prompt_bytes"] == len(data)
    assert payload["sha256"] == hashlib.sha256(data).hexdigest()
    assert not any("touch" in arg or "yyyy" in arg for arg in payload["argv"]), payload["argv"]
    world.assert_gone(final)
    assert_same_snapshot(before, world.snapshot(execution_id))

    def nothing_executed() -> None:
        assert not list(world.tmp.glob("pwned*")), list(world.tmp.glob("pwned*"))
        assert not list(world.tmp.rglob("pwned-relative"))
        assert (canary / "keep").read_text() == "still here"

    nothing_executed()
    doc = world.service.get_document(doc_id)
    assert doc.content == content
    assert doc.title == "--help --version -rf --dangerously-skip-permissions"

    raw = cli("view", str(doc_id), "--raw")
    assert (raw.code, raw.stderr) == (0, "")
    assert raw.stdout == content  # --raw: the content as stored
    plain = cli("view", str(doc_id))
    assert (plain.code, plain.stderr) == (0, "")
    assert plain.stdout == sanitize(content)  # not a terminal: the text, control bytes escaped
    as_json = cli("view", str(doc_id), "--json")
    assert as_json.code == 0, as_json
    assert json.loads(as_json.stdout)["content"] == content
    code, rendered = _run_in_pty(["view", str(doc_id)])
    assert code == 0, rendered[-2000:]
    assert "Traceback" not in rendered and "tail line" in rendered

    for argv in (
        ("exec", "show", str(execution_id)),
        ("exec", "show", str(execution_id), "--json"),
        ("exec", "logs", str(execution_id)),
        ("exec", "list"),
        ("list",),
    ):
        shown = cli(*argv)
        assert shown.code == 0, (argv, shown)
        assert "Traceback" not in shown.stderr
    shown_json = json.loads(cli("exec", "show", str(execution_id), "--json").stdout)
    assert shown_json["doc_title"] == doc.title
    code, rendered = _run_in_pty(["exec", "show", str(execution_id)])
    assert code == 0 and "Traceback" not in rendered, rendered[-2000:]
    nothing_executed()


# -- 16. cleanup racing finishing runs ---------------------------------------------------------


def test_concurrent_cleanup_never_fails_finishing_runs(world: World, cli: Cli) -> None:
    """16. `cleanup processes` in a loop (in-process service and CLI) while 8 short runs start,
    queue (EMDX_MAX_PARALLEL=4) and finish: every run completes, none is ever seen failed, no
    completed row ever changes back, cleanup repairs and kills nothing."""
    stop = threading.Event()
    errors: list[BaseException] = []
    actions: list[Action] = []
    cli_actions: list[dict[str, Any]] = []
    history: dict[int, list[str]] = {}
    ids: list[int] = []
    ids_ready = threading.Event()
    passes = {"service": 0, "cli": 0}

    def guarded(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    def cleanup_loop() -> None:
        with Service() as service:
            while not stop.is_set():
                actions.extend(service.cleanup_processes())
                passes["service"] += 1

    def cli_cleanup_loop() -> None:
        while not stop.is_set():
            done = cli("cleanup", "processes", "--json")
            assert done.code == 0, done
            cli_actions.extend(json.loads(done.stdout)["actions"])
            passes["cli"] += 1

    def sampler() -> None:
        ids_ready.wait(30)
        with Service() as service:
            while not stop.is_set():
                for execution_id in ids:
                    status = service.store.executions.get(execution_id).status.value
                    seen = history.setdefault(execution_id, [])
                    if not seen or seen[-1] != status:
                        seen.append(status)
                time.sleep(0.01)

    threads = [
        threading.Thread(target=guarded(fn), daemon=True)
        for fn in (cleanup_loop, cli_cleanup_loop, sampler)
    ]
    for thread in threads:
        thread.start()
    try:
        for i in range(8):
            ids.append(world.start(f"# short {i}\nFAKE:events=3\nFAKE:interval=0.2\n").id)
        ids_ready.set()
        before = world.snapshot(*ids)
        finals = [world.wait_final(execution_id, timeout=60) for execution_id in ids]
        # Keep cleaning while the last supervisors exit.
        for final in finals:
            world.assert_gone(final)
    finally:
        ids_ready.set()
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    print(f"\n[cleanup race] passes={passes} history={history}")
    assert passes["service"] >= 5 and passes["cli"] >= 2, passes
    assert any("running" in seen for seen in history.values()), history

    for final in finals:
        assert final_triple(final) == ("completed", 0, "success"), final
        assert world.get(final.id) == final  # and it stayed that way
    for execution_id in ids:
        seen = history.get(execution_id, [])
        assert seen and seen[-1] == "completed", (execution_id, seen)
        assert set(seen) <= {"queued", "running", "completed"}, (execution_id, seen)
        assert seen.count("completed") == 1, (execution_id, seen)
    done_actions = [a for a in actions if a.result == "done"]
    assert not done_actions, done_actions
    assert not [a for a in cli_actions if a["result"] == "done"], cli_actions
    assert_same_snapshot(before, world.snapshot(*ids))
