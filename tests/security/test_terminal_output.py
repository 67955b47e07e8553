"""Nothing hostile reaches a terminal (DESIGN §8): escape sequences planted everywhere an agent or
a document can put them, then every text command through the real CLI entry point, the TUI
under Pilot and the TUI in a real terminal (tmux).

Each check asserts both halves: no raw dangerous character in what the terminal gets, and the
escaped form visibly there (a command cannot pass by dropping the text).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_claude import HOSTILE
from security_helpers import (
    HOSTILE_PROJECT,
    HOSTILE_TAG,
    HOSTILE_TITLE,
    OSC0_ST,
    OSC52_BEL,
    RICH_CONTROLS,
    SHOWN_C1,
    SHOWN_ESC,
    SHOWN_OSC52,
    Checked,
    assert_all_clean,
    check_output,
    hostile_document,
    violations,
)
from testkit import Cli, CliResult, Deadline, run_in_pty, started_id, wait_until

from emdx import paths
from emdx.models import ExecOptions, Execution
from emdx.service import Service

SHOWN_TAG = "evil\\x1b]0;tag\\x07"
# What the fake agent's HOSTILE looks like once escaped, after each place it is printed from.
AGENT_SHOWN = [
    f"assistant says {SHOWN_OSC52}",
    f"tool says {SHOWN_OSC52}",
    f"stderr says {SHOWN_OSC52}",
    f"not json {SHOWN_OSC52}",
    f"result {SHOWN_OSC52}",
    SHOWN_C1,
]


def checked(
    name: str, result: CliResult, shown: list[str] | tuple[str, ...] = (), code: int | None = 0
) -> Checked:
    """A CLI result checked for raw dangerous characters on stdout and stderr; its exit code
    (unless `code` is None) and the absence of a traceback are part of the check."""
    found = check_output(name, [result.stdout_bytes, result.stderr_bytes], shown)
    if code is not None and result.code != code:
        found.problems.append(f"exit {result.code}, wanted {code}: {result.stderr[-500:]}")
    if "Traceback" in result.stderr:
        found.problems.append("traceback on stderr")
    return found


def checked_json(name: str, result: CliResult, check: Callable[[Any], bool]) -> Checked:
    """`--json` output: nothing raw, one JSON document, and `check(decoded)` true (the hostile
    text round-trips, escaped only in the encoding)."""
    found = checked(name, result)
    try:
        ok = check(json.loads(result.stdout))
    except ValueError as exc:
        found.problems.append(f"not JSON: {exc}")
    else:
        if not ok:
            found.problems.append("the hostile value did not round-trip")
    return found


def new_doc(service: Service, *directives: str) -> int:
    content = hostile_document(*directives)
    return service.save_document(content, tags=HOSTILE_TAG, project=HOSTILE_PROJECT).id


def wait_final(service: Service, execution_id: int, timeout: float = 30) -> Execution:
    def final() -> Execution | None:
        row = service.get_execution(execution_id)
        return row if row.status.is_final else None

    return wait_until(final, timeout, message=f"execution {execution_id} to end")


def wait_hostile_output(service: Service, execution_id: int, timeout: float = 30) -> Execution:
    """The row once the supervisor has recorded the agent's model and logged its stderr."""

    def ready() -> Execution | None:
        row = service.get_execution(execution_id)
        log = Path(str(row.log_file))
        text = log.read_text(errors="replace") if log.exists() else ""
        return row if row.model and "stderr again" in text and "not json" in text else None

    return wait_until(ready, timeout, message=f"hostile output of execution {execution_id}")


# -- documents ---------------------------------------------------------------------------------


def test_document_commands_show_hostile_text_escaped(cli: Cli, tmp_path: Path) -> None:
    content = hostile_document()
    saved = cli("save", "--tags", HOSTILE_TAG, "--project", HOSTILE_PROJECT, input=content)
    results = [checked("save", saved, [SHOWN_OSC52, SHOWN_TAG])]
    assert saved.code == 0, saved
    doc_id = saved.stdout.split("#", 1)[1].split(":", 1)[0]

    def is_hostile(doc: dict[str, Any]) -> bool:
        return (doc["title"], doc["project"], doc["tags"]) == (
            HOSTILE_TITLE,
            HOSTILE_PROJECT,
            [HOSTILE_TAG],
        )

    results += [
        checked("list", cli("list"), [SHOWN_OSC52, SHOWN_TAG]),
        checked_json("list --json", cli("list", "--json"), lambda d: is_hostile(d[0])),
        checked("view (not a tty)", cli("view", doc_id), [SHOWN_OSC52, "\\x1b[2J", "\\x0dwrite"]),
        checked_json(
            "view --json", cli("view", doc_id, "--json"), lambda d: d["content"] == content
        ),
        checked("find", cli("find", "searchable-word"), [SHOWN_OSC52, "\\x07"]),
        checked_json(
            "find --json",
            cli("find", "searchable-word", "--json"),
            lambda d: is_hostile(d[0]),
        ),
        checked("tags", cli("tags"), [SHOWN_TAG]),
        checked_json("tags --json", cli("tags", "--json"), lambda d: d[0]["name"] == HOSTILE_TAG),
        checked("tag", cli("tag", doc_id, "urgent"), [SHOWN_TAG]),
        checked("untag", cli("untag", doc_id, "urgent"), [SHOWN_TAG]),
        checked("delete", cli("delete", doc_id), [SHOWN_OSC52]),
        checked("restore", cli("restore", doc_id), [SHOWN_OSC52]),
        checked(
            "error line",
            cli("save", str(tmp_path / f"missing {OSC0_ST} {OSC52_BEL}.md")),
            ["\\x1b]0;pwned-title", SHOWN_OSC52],
            code=1,
        ),
    ]
    code, tty = run_in_pty(["view", doc_id])
    tty_check = check_output("view (tty)", [tty], [SHOWN_OSC52, "\\x1b[2J"], RICH_CONTROLS)
    if code != 0:
        tty_check.problems.append(f"exit {code}")
    results.append(tty_check)

    raw = cli("view", doc_id, "--raw")
    # --raw is what the user asked for: the content byte for byte, escape sequences included.
    assert (raw.code, raw.stdout_bytes) == (0, content.encode()), raw
    assert_all_clean(results)


# -- runs --------------------------------------------------------------------------------------


def test_run_commands_show_agent_text_escaped(cli: Cli, service: Service, tmp_path: Path) -> None:
    doc_id = str(new_doc(service, "FAKE:hostile"))
    foreground = cli("claude", "execute", doc_id)
    results = [checked("claude execute (foreground)", foreground, [SHOWN_OSC52, *AGENT_SHOWN])]
    execution_id = started_id(foreground.stderr)
    run = wait_final(service, execution_id)
    assert run.model == "fake-model" + HOSTILE, run.model
    # The agent can write to the database too (it runs as the user): a hostile execution type.
    conn = sqlite3.connect(str(paths.db_path()), timeout=30)
    with conn:
        conn.execute(
            "UPDATE executions SET exec_type = ? WHERE id = ?", (f"gen{OSC52_BEL}", execution_id)
        )
    conn.close()
    # …and a directory next to its own (`../`), old enough for `cleanup dirs` to list it.
    planted = paths.runs_dir() / f"left {OSC0_ST} {OSC52_BEL}"
    planted.mkdir()
    os.utime(planted, (time.time() - 3600, time.time() - 3600))
    agent_bin = tmp_path / "claude-with-a-hostile-version"
    agent_bin.write_text(f"#!/bin/sh\nprintf 'claude 9.9 {OSC52_BEL} \\302\\233\\n'\n")
    agent_bin.chmod(0o755)

    ref = str(execution_id)
    # A row reads a damaged type as "generic" (ExecType.of); stats counts the stored column.
    show_shown = [SHOWN_OSC52, f"fake-model{SHOWN_OSC52}", "generic"]
    results += [
        checked("exec list", cli("exec", "list"), [SHOWN_OSC52]),
        checked_json(
            "exec list --json",
            cli("exec", "list", "--json"),
            lambda d: d[0]["model"] == run.model and d[0]["session_id"] == run.session_id,
        ),
        checked("exec show", cli("exec", "show", ref), [*show_shown, *AGENT_SHOWN]),
        checked_json(
            "exec show --json",
            cli("exec", "show", ref, "--json"),
            lambda d: d["model"] == run.model and d["doc_title"] == HOSTILE_TITLE,
        ),
        checked("exec show --follow", cli("exec", "show", ref, "--follow"), AGENT_SHOWN),
        checked("exec tail", cli("exec", "tail", ref), AGENT_SHOWN),
        checked("exec logs", cli("exec", "logs", ref), AGENT_SHOWN),
        checked("exec stats", cli("exec", "stats"), [f"gen{SHOWN_OSC52}"]),
        checked_json(
            "exec stats --json",
            cli("exec", "stats", "--json"),
            lambda d: d["per_type"][0]["exec_type"] == f"gen{OSC52_BEL}",
        ),
        checked("cleanup all --dry-run", cli("cleanup", "all", "--dry-run"), [SHOWN_OSC52]),
        checked_json(
            "cleanup all --dry-run --json",
            cli("cleanup", "all", "--dry-run", "--json"),
            lambda d: any(a["target"] == str(planted) for a in d["actions"]),
        ),
        checked(
            "claude check-env",
            cli("claude", "check-env", "--verbose", env={"EMDX_CLAUDE_BIN": str(agent_bin)}),
            [SHOWN_OSC52, "\\x9b"],
            code=None,  # other checks (node, say) may fail on this machine
        ),
    ]
    raw = cli("exec", "logs", ref, "--raw")
    raw_check = checked("exec logs --raw", raw)
    entries = [json.loads(line) for line in raw.stdout.splitlines()]
    messages = " ".join(str(e.get("message")) for e in entries)
    for said in ("assistant says ", "tool says ", "stderr says ", "not json ", "result "):
        if said + OSC52_BEL not in messages:
            raw_check.problems.append(f"{said!r} + the raw sequence is not in the decoded log")
    results.append(raw_check)

    code, tty = run_in_pty(["exec", "show", ref])
    tty_check = check_output("exec show (tty)", [tty], show_shown, RICH_CONTROLS)
    if code != 0:
        tty_check.problems.append(f"exit {code}")
    results.append(tty_check)
    assert_all_clean(results)


def test_active_run_commands_show_agent_text_escaped(cli: Cli, service: Service) -> None:
    doc_id = str(new_doc(service, "FAKE:hostile", "FAKE:sleep=600"))
    started = cli("claude", "execute", doc_id, "--background")
    results = [checked("claude execute --background", started, [SHOWN_OSC52])]
    execution_id = started_id(started.stdout)
    run = wait_hostile_output(service, execution_id)
    ref = str(execution_id)

    results += [
        checked("exec running", cli("exec", "running"), [SHOWN_OSC52]),
        checked_json(
            "exec running --json",
            cli("exec", "running", "--json"),
            lambda d: d[0]["model"] == run.model,
        ),
        checked("exec health", cli("exec", "health"), code=None),  # 1 if its heartbeat lags
        checked_json(
            "exec health --json",
            cli("exec", "health", "--json"),
            lambda d: d["runs"][0]["doc_title"] == HOSTILE_TITLE,
        ),
        checked("exec show (running)", cli("exec", "show", ref), [*AGENT_SHOWN[:4], SHOWN_OSC52]),
    ]

    code, tty = run_in_pty(
        ["exec", "monitor", "--interval", "0.5"],
        until=lambda out: b"1 active" in out,  # the caption, drawn below the run's row
    )
    monitor = check_output("exec monitor (tty)", [tty], [SHOWN_ESC], RICH_CONTROLS)
    if code != 0:
        monitor.problems.append(f"exit {code} after Ctrl-C")
    results.append(monitor)
    results.append(checked("exec kill", cli("exec", "kill", ref)))
    assert_all_clean(results)


# -- the TUI -----------------------------------------------------------------------------------


def widget_texts(app: Any) -> dict[str, str]:
    """What the active screen shows, as text: the composed screen and each widget's content."""
    from textual.widgets import DataTable, Markdown, RichLog, Static

    screen = app.screen
    texts = {"screen": "\n".join(strip.text for strip in screen._compositor.render_strips())}
    for table in screen.query(DataTable):
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        texts[f"table #{table.id}"] = "\n".join(
            " | ".join(getattr(c, "plain", str(c)) for c in row) for row in rows
        )
    for markdown in screen.query(Markdown):
        texts[f"markdown #{markdown.id}"] = markdown.source
    for log in screen.query(RichLog):
        texts[f"log #{log.id}"] = "\n".join(strip.text for strip in log.lines)
    for static in screen.query(Static):
        texts[f"static #{static.id}"] = str(static.render())
    return texts


def tui_problems(name: str, texts: dict[str, str], shown: list[str]) -> Checked:
    problems = []
    for part, text in texts.items():
        problems += [f"{part}: {v}" for v in violations(text.encode("utf-8", "surrogateescape"))]
    everything = "\n".join(texts.values())
    problems += [f"{s!r} not shown" for s in shown if s not in everything]
    return Checked(name, problems)


def test_tui_shows_hostile_text_escaped(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textual.pilot import Pilot
    from textual.widgets import Markdown

    from emdx.tui import app as tui_app
    from emdx.tui import data
    from emdx.tui.app import DocumentsScreen, EmdxApp, ExecutionsScreen

    doc_id = new_doc(service, "FAKE:hostile")
    run = service.start_execution(doc_id, ExecOptions())
    wait_final(service, run.id)
    notices: list[tuple[str, bool]] = []
    refreshes: list[int] = []
    list_runs = data.executions

    def counted(*args: Any, **kwargs: Any) -> list[Execution]:
        refreshes.append(1)
        return list_runs(*args, **kwargs)

    monkeypatch.setattr(data, "executions", counted)

    class App(EmdxApp):
        # Textual resolves a relative CSS_PATH against the subclass's file: point at the app's.
        CSS_PATH = str(Path(tui_app.__file__).parent / str(EmdxApp.CSS_PATH))

        def notify(self, message: str, **kwargs: Any) -> None:
            notices.append((message, kwargs.get("markup", True)))
            super().notify(message, **kwargs)

    app = App(refresh_s=0.5)
    results: list[Checked] = []

    async def until(pilot: Pilot[None], predicate: Callable[[], object], what: str) -> None:
        deadline = Deadline(20, what)
        while not deadline.poll(predicate):
            await pilot.pause(0.1)

    async def scenario(pilot: Pilot[None]) -> None:
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, DocumentsScreen)
                and "body" in app.screen.query_one("#preview", Markdown).source
                and "#" in str(app.screen.query_one("#doc-runs").render())
            ),
            "the documents screen with the preview and its runs",
        )
        results.append(tui_problems("documents screen", widget_texts(app), [SHOWN_OSC52]))
        missing = tmp_path / f"no-claude{OSC0_ST}"
        monkeypatch.setenv("EMDX_CLAUDE_BIN", str(missing))
        await pilot.press("x")
        await until(pilot, lambda: notices, "the error notification")
        await until(pilot, lambda: "cannot execute" in widget_texts(app)["screen"], "the toast")
        results.append(tui_problems("error notification", widget_texts(app), []))
        results.append(tui_problems("notified text", {"notice": notices[0][0]}, ["\\x1b]0;"]))
        await pilot.press("e")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, ExecutionsScreen)
                and "result" in widget_texts(app).get("log #run-log", "")
            ),
            "the executions screen with the run's log",
        )

        # Refreshes (every 0.5 s) redraw the same rows: what is shown stays clean each time.
        def refreshed(times: int) -> Callable[[], bool]:
            wanted = len(refreshes) + times
            return lambda: len(refreshes) >= wanted

        for _ in range(3):
            await until(pilot, refreshed(2), "a refresh of the runs table")
            results.append(
                tui_problems(
                    "executions screen", widget_texts(app), [SHOWN_OSC52, *AGENT_SHOWN[:-1]]
                )
            )

    async def main() -> None:
        async with app.run_test(size=(160, 48), notifications=True) as pilot:
            await scenario(pilot)

    asyncio.run(main())
    assert_all_clean(results)
    assert notices[0][1] is False, "error notifications must not parse markup"


# -- the TUI in a real terminal ----------------------------------------------------------------


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """A private tmux server that accepts OSC 52 into its paste buffers (`set-clipboard on`), so
    that a clipboard write would show; killed at teardown. No tmux is a failure, not a skip."""
    binary = shutil.which("tmux")
    if binary is None:
        pytest.fail("tmux is not installed (apt-get install tmux); CI installs it", pytrace=False)
    config = tmp_path / "tmux.conf"
    config.write_text("set -g set-clipboard on\n")
    socket = f"emdx-sec-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        done = subprocess.run(
            [binary, "-L", socket, "-f", str(config), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return done.stdout

    try:
        yield tmux
    finally:
        tmux("kill-server")


def test_tui_in_tmux_changes_no_title_and_no_clipboard(
    tmux: Callable[..., str], service: Service, tmp_path: Path
) -> None:
    doc_id = new_doc(service, "FAKE:hostile")
    wait_final(service, service.start_execution(doc_id, ExecOptions()).id)
    env = {
        name: os.environ[name]
        for name in ("EMDX_HOME", "HOME", "CLAUDE_CONFIG_DIR", "EMDX_CLAUDE_BIN", "PYTHONPATH")
        if name in os.environ
    }
    env.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), LANG="C.UTF-8", LC_ALL="C.UTF-8")
    env["TERM"] = "tmux-256color"
    exit_file = tmp_path / "gui-exit-code"
    command = (
        "env -i "
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        + f" {shlex.quote(sys.executable)} -m emdx gui; echo $? > {shlex.quote(str(exit_file))}"
    )
    tmux("new-session", "-d", "-s", "gui", "-x", "160", "-y", "48", command)

    def pane() -> str:
        return tmux("capture-pane", "-p", "-e", "-t", "gui")

    def title() -> str:
        return tmux("display-message", "-p", "-t", "gui", "#{pane_title}")

    title_before = title()

    def shown_or_attacked(wanted: str) -> str:
        """The pane once it shows `wanted` (escaped text), or once an escape sequence got
        through (the pane's title changed, a paste buffer appeared), whichever comes first."""

        def seen() -> tuple[str] | None:
            text = pane()
            attacked = title() != title_before or tmux("list-buffers") != ""
            return (text,) if wanted in text or attacked else None

        found = wait_until(seen, 30, 0.2, lambda: f"{wanted!r} in the tmux pane:\n{pane()}")
        return found[0]

    documents = shown_or_attacked(SHOWN_OSC52)
    tmux("send-keys", "-t", "gui", "e")
    executions = shown_or_attacked(f"result {SHOWN_OSC52}")
    title_after, buffers = title(), tmux("list-buffers")
    tmux("send-keys", "-t", "gui", "q")
    wait_until(exit_file.exists, 20, interval=0.2, message="emdx gui to exit after q")

    assert "pwned" not in title_after, title_after
    assert title_after == title_before
    assert buffers == "", f"a clipboard write reached tmux: {buffers!r}"
    # capture-pane -e shows the pane's cells with their colours (SGR) and nothing else
    for name, text in (("documents", documents), ("executions", executions)):
        found = violations(text.encode(), RICH_CONTROLS)
        assert not found, (name, found)
    assert SHOWN_OSC52 in documents, documents
    assert f"result {SHOWN_OSC52}" in executions, executions
    assert exit_file.read_text().strip() == "0"
