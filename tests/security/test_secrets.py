"""A secret in the environment never reaches what emdx keeps, whatever the agent does with it.

The fake agent prints `$EMDX_TEST_API_KEY` wherever an agent can (FAKE:leak) and across every
cut emdx makes (FAKE:leak-cuts). Each secret form must be absent — every spelling of its first
8 characters, so no prefix of 8 or more is left either — from the database file and its WAL,
the log, `exec logs --raw`, `exec show --json`, `exec list --json`, `runner.err` and the
document saved from the result; `***` must be where it was, so that dropping text cannot pass.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import (
    Cli,
    RunWaits,
    assert_run_gone,
    fake_agent_env,
    reap_leftovers,
    service,
    supervisor_of,
    wait_until,
)

from emdx import paths, runlog, system
from emdx.models import Execution
from emdx.service import Service

__all__ = ["reap_leftovers", "service"]

SECRET_NAME = "EMDX_TEST_API_KEY"
FORMS = {
    "plain": "sk-ant-api03-Qm7cT2vX9pL4wZ8rN1bY",
    "quote": 'sk"quote-inside-Qm7cT2vX9pL4',
    "backslash": "sk\\back-slash-Qm7cT2vX9pL4",
    # The cuts fall just before "к": one of them in the middle of its two bytes.
    "non-ascii": "sk-pä🔑ss-wörtключ-Qm7cT2vX9",
    "slash": "sk/slash/in/it/Qm7cT2vX9pL4",
    "long": "sk-long-" + "".join(f"{(i * 7919) % 9973:04x}" for i in range(48)),
}
assert len(FORMS["long"]) == 200
PREFIX_CHARS = 8


class SecretRuns(RunWaits):
    def __init__(self, service: Service, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.service = service

    def get(self, execution_id: int) -> Execution:
        return self.service.store.executions.get(execution_id)

    def start(self, content: str, tags: list[str] | None = None) -> int:
        doc = self.service.save_document(content, title="leaky", tags=tags, detect=False)
        return self.service.start_execution(doc.id).id

    def finish(self, execution_id: int) -> Execution:
        """The row once the run is over and its supervisor (post-actions included) is gone."""
        row = self.wait_final(execution_id)
        assert_run_gone(row)
        return self.get(execution_id)


@pytest.fixture
def secret_runs(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SecretRuns]:
    fake_agent_env(monkeypatch)
    yield SecretRuns(service, tmp_path)


def spellings(text: str) -> set[str]:
    """How `text` can appear in what emdx writes: as is, JSON-escaped, ASCII-escaped, `\\/`."""
    forms = {text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]}
    return forms | {form.replace("/", "\\/") for form in forms}


def strings_in(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def assert_clean(haystack: bytes | str, secret: str, where: str) -> None:
    data = haystack.encode() if isinstance(haystack, str) else haystack
    for form in spellings(secret[:PREFIX_CHARS]):
        assert form.encode() not in data, f"{form!r} (the secret's start) found in {where}"


def assert_clean_json(value: Any, secret: str, where: str) -> None:
    """No spelling of the secret's start in any string (key or value) of a decoded document:
    catches a `\\u`-escaped leak that the bytes do not show."""
    for text in strings_in(value):
        assert_clean(text, secret, f"a string of {where}: {text[:200]!r}")


def assert_log_clean(row: Execution, secret: str) -> list[dict[str, Any]]:
    assert row.log_file
    log = Path(row.log_file)
    assert_clean(log.read_bytes(), secret, "the log file")
    entries = runlog.read_entries(log)
    assert len(entries) == len(log.read_bytes().splitlines()), "a log line is not valid JSON"
    assert_clean_json(entries, secret, "the log")
    return entries


def assert_store_clean(secret: str) -> None:
    """knowledge.db and its WAL as they are, then once more after a checkpoint (the pages the
    WAL held, now in the main file, old versions included)."""
    db = paths.db_path()
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert_clean(path.read_bytes(), secret, path.name)
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    assert_clean(db.read_bytes(), secret, f"{db.name} after a checkpoint")


def runner_err(row: Execution) -> str:
    path = paths.runner_err_path(str(row.run_key))
    return path.read_text(errors="replace") if path.exists() else ""


def messages_of(entries: list[dict[str, Any]], type_: str) -> list[str]:
    return [str(e["message"]) for e in entries if e["type"] == type_]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_secret_is_masked_everywhere(
    form: str, secret_runs: SecretRuns, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = FORMS[form]
    monkeypatch.setenv(SECRET_NAME, secret)
    # A note run: its result is saved as an Analysis document (and indexed).
    execution_id = secret_runs.start(f"# leak\nFAKE:leak={SECRET_NAME}\n", tags=["note"])
    row = secret_runs.finish(execution_id)
    assert (row.status.value, row.reason) == ("completed", "success"), secret_runs.diagnose(row.id)

    # Row fields are computed from masked events (a masked session id is no session id Claude
    # Code gives, so none is recorded: it could never be resumed).
    assert (row.session_id, row.model) == (None, "model-***")

    entries = assert_log_clean(row, secret)
    raws = [json.dumps(e.get("raw"), ensure_ascii=False) for e in entries]
    for expected in (
        "the key is ***",  # assistant text
        "echo ***",  # a tool call
        "printed ***",  # a tool result
        "escaped ***",  # an event with every character \u-escaped
        "not json: ***",  # an unparsable line
        "holds *** as its key",  # the result text
    ):
        assert any(expected in raw for raw in raws), f"{expected!r} not in the log's events"
    assert "warning: token *** in the environment" in messages_of(entries, "stderr")

    assert row.output_doc_id is not None, "the result was not saved as a document"
    saved = secret_runs.service.get_document(row.output_doc_id)
    assert_clean(saved.content, secret, "the saved document")
    assert "holds *** as its key" in saved.content
    assert_clean(saved.title, secret, "the saved document's title")

    for args in (
        ("exec", "logs", str(row.id), "--raw"),
        ("exec", "show", str(row.id), "--json"),
        ("exec", "list", "--json"),
    ):
        done = cli(*args)
        assert done.code == 0, done.stderr
        where = f"`emdx {' '.join(args)}`"
        assert_clean(done.stdout, secret, where)
        assert_clean(done.stderr, secret, f"{where} stderr")
        for line in done.stdout.splitlines() if "--raw" in args else [done.stdout]:
            assert_clean_json(json.loads(line), secret, where)
        assert "***" in done.stdout, f"{where} shows no trace of the masked secret"
    assert_clean(runner_err(row), secret, "runner.err")
    assert_store_clean(secret)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_no_cut_leaves_a_prefix_of_a_secret(
    form: str, secret_runs: SecretRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret straddles each cut: the 160-char summary, the 2000-char text of an unparsable
    line, the 4000-char stderr text; and (second run, EMDX_LINE_MAX_BYTES=1500) the per-line
    caps of stdout and stderr, which drop the secret's end before emdx ever sees it."""
    secret = FORMS[form]
    monkeypatch.setenv(SECRET_NAME, secret)
    content = f"# cuts\nFAKE:leak-cuts={SECRET_NAME}\n"
    display_cuts = secret_runs.start(content)
    monkeypatch.setenv("EMDX_LINE_MAX_BYTES", "1500")
    line_caps = secret_runs.start(content)

    row = secret_runs.finish(display_cuts)
    assert row.status.value == "completed", secret_runs.diagnose(row.id)
    entries = assert_log_clean(row, secret)
    summary = [m for m in messages_of(entries, "assistant") if m.startswith("ppp")]
    assert len(summary) == 1 and "p***" in summary[0], summary
    unparsable = [str(e["raw"]) for e in entries if e["type"] == "malformed"]
    assert len(unparsable) == 1 and unparsable[0].startswith("qqq"), unparsable
    assert "q***" in unparsable[0] and len(unparsable[0]) <= 2000
    stderr = [m for m in messages_of(entries, "stderr") if m.startswith("eee")]
    assert len(stderr) == 1 and "e***" in stderr[0] and len(stderr[0]) <= 4000, stderr

    row = secret_runs.finish(line_caps)
    assert row.status.value == "completed", secret_runs.diagnose(row.id)
    entries = assert_log_clean(row, secret)
    cut_json = [str(e["raw"]) for e in entries if str(e.get("raw")).startswith('{"type"')]
    assert len(cut_json) == 1, [str(e.get("raw"))[:80] for e in entries]
    assert cut_json[0].endswith("r***"), cut_json[0][-80:]
    cut_stderr = [m for m in messages_of(entries, "stderr") if m.startswith("sss")]
    assert len(cut_stderr) == 1 and cut_stderr[0].endswith("s***"), cut_stderr
    assert len(cut_stderr[0].encode()) <= 1500
    notes = messages_of(entries, "runner")
    assert any("over-long stderr line(s) were cut" in m for m in notes), notes
    assert_store_clean(secret)


# Loaded by every Python process started with this PYTHONPATH; only the supervisor (the one
# process that imports emdx's stream parser while the variable is set) is affected.
SITECUSTOMIZE = """
import os
if os.environ.get("EMDX_TEST_LEAKY_BUG"):
    try:
        import emdx.agent.progress as progress
    except ImportError:
        pass
    else:
        def broken(self, event):
            raise RuntimeError("injected bug, quoting " + os.environ["EMDX_TEST_API_KEY"])
        progress.Progress.update = broken
"""


def test_runner_err_and_notes_are_masked(
    secret_runs: SecretRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception whose text holds a secret: its traceback (runner.err) and the runner's
    note about it (the log) show `***`."""
    secret = 'sk"mixed\\all/of-pä🔑-Qm7cT2vX9pL4'
    monkeypatch.setenv(SECRET_NAME, secret)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("EMDX_TEST_LEAKY_BUG", "1")
    row = secret_runs.finish(secret_runs.start("# bug\nFAKE:events=1\n"))
    assert (row.status.value, row.reason) == ("failed", "supervisor_error")

    err = runner_err(row)
    assert "RuntimeError: injected bug, quoting ***" in err, err[-2000:]
    assert_clean(err, secret, "runner.err")
    entries = assert_log_clean(row, secret)
    assert any(
        "supervisor error: RuntimeError: injected bug, quoting ***" in m
        for m in messages_of(entries, "runner")
    )


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in KiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_a_300_mb_stderr_line_keeps_the_supervisor_small(
    secret_runs: SecretRuns, tmp_path: Path
) -> None:
    flooded, go = tmp_path / "flooded", tmp_path / "go"
    execution_id = secret_runs.start(
        f"# flood\nFAKE:stderr-flood=300\nFAKE:touch={flooded}\nFAKE:wait-file={go}\n"
    )
    row = secret_runs.wait_agent(execution_id)
    assert row.pid and row.pid_started_at
    supervisor = supervisor_of(row)
    peak = 0

    def flood_read() -> bool:
        # The agent's writes return once the pipe took them: all but one pipe buffer is read.
        nonlocal peak
        if system.same_process(*supervisor):
            peak = max(peak, peak_rss_kib(supervisor[0]))
        return flooded.exists()

    wait_until(flood_read, 120, message="the agent to write 300 MiB to stderr")
    assert system.same_process(*supervisor), secret_runs.diagnose(execution_id)
    peak = max(peak, peak_rss_kib(supervisor[0]))
    go.touch()
    row = secret_runs.finish(execution_id)
    assert (row.status.value, row.reason) == ("completed", "success"), secret_runs.diagnose(row.id)
    assert 0 < peak < 100 * 1024, f"supervisor peak RSS {peak} KiB while reading the flood"

    assert row.log_file
    entries = runlog.read_entries(Path(row.log_file))
    flood = [m for m in messages_of(entries, "stderr") if m.startswith("xxx")]
    assert len(flood) == 1 and set(flood[0]) == {"x"} and len(flood[0]) <= 4000, len(flood)
    notes = messages_of(entries, "runner")
    assert any("1 over-long stderr line(s) were cut" in m for m in notes), notes
