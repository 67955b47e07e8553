"""Breaks a red team found by attacking emdx from outside (black box, DESIGN §8 and issues 10–11),
each turned into a regression test. The agent here is a shell script that runs its document as
bash (`#!agent … #!end` inside a smart prompt), so a test writes the attack as the document.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from escape_helpers import (
    Runs,
    cleanup_env,
    git,
    git_repo,
    procs,
    reaper,
    runs,
    svc,
)
from testkit import started_id, wait_until

from emdx import paths

__all__ = ["cleanup_env", "git_repo", "procs", "reaper", "runs", "svc"]

BASH_AGENT = r"""#!/bin/bash
prompt=$(cat)
case "$prompt" in *'#!agent'*) prompt=${prompt#*'#!agent'}; prompt=${prompt%%'#!end'*};; esac
echo '{"type":"system","subtype":"init","session_id":"s1","model":"m"}'
eval "$prompt"
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"hi"}]}}'
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done",'\
'"total_cost_usd":0.01}'
"""


@pytest.fixture
def bash_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "bash-agent"
    script.write_text(BASH_AGENT)
    script.chmod(0o755)
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(script))
    return script


def _run(runs: Runs, script: str, *extra: str, cwd: Path | None = None, tags: str | None = None
         ) -> int:  # fmt: skip
    doc = runs.doc(script, title="Attack", tags=tags)
    done = runs.cli("claude", "execute", str(doc), "--no-smart", *extra, cwd=cwd)
    assert done.code == 0, done
    return started_id(done.stdout + done.stderr)


def test_cleanup_dirs_keeps_a_worktree_with_uncommitted_work(
    runs: Runs, git_repo: Path, bash_agent: Path
) -> None:
    """`cleanup dirs` removed a finished run's worktree holding uncommitted work (a modified
    tracked file and an untracked one), without --force."""
    execution_id = _run(runs, 'echo "agent work" >> README.md; echo new > g\n', "--worktree",
                        cwd=git_repo)  # fmt: skip
    row = runs.wait_final(execution_id)
    workdir = Path(str(row.working_dir))
    for args in (("cleanup", "dirs", "--older-than", "0s"),
                 ("cleanup", "all", "--yes", "--older-than", "0s")):  # fmt: skip
        done = runs.cli(*args, "--json", cwd=git_repo)
        assert done.code == 0, done
        kept = [a for a in json.loads(done.stdout)["actions"] if a["target"] == str(workdir)]
        assert kept and kept[0]["result"] == "kept", kept
        assert "uncommitted" in kept[0]["detail"]
    assert (workdir / "g").read_text() == "new\n"
    forced = runs.cli("cleanup", "branches", "--yes", "--force", cwd=git_repo)
    assert forced.code == 0, forced
    assert not workdir.exists()  # --force is how it goes


def test_a_filter_driver_named_with_an_equals_sign_never_runs(
    runs: Runs, git_repo: Path, bash_agent: Path, tmp_path: Path
) -> None:
    """`-c filter.x=y.clean=` is read by git as key `filter.x`: an agent's filter `x=y` stayed
    active and `cleanup all --dry-run` ran it."""
    marker = tmp_path / "PWNED"
    script = (
        f"git config -f \"$(git rev-parse --git-common-dir)/config\" 'filter.x=y.clean' "
        f'"touch {marker}; cat"\n'
        "echo '* filter=x=y' > .gitattributes\n"
        "sleep 1.1; echo HELLO > README.md\n"
    )
    row = runs.wait_final(_run(runs, script, "--worktree", cwd=git_repo))
    assert row.status.value == "completed", row
    marker.unlink(missing_ok=True)  # what the agent ran itself does not count
    for args in (("cleanup", "all", "--dry-run"), ("cleanup", "branches", "--dry-run")):
        assert runs.cli(*args, cwd=git_repo).code == 0
    assert not marker.exists()


def test_a_branch_name_reused_by_another_home_is_not_this_homes(
    runs: Runs, git_repo: Path, bash_agent: Path, tmp_path: Path
) -> None:
    """Home A ran `exec-1-fix`, the user deleted that branch, home B (ids restart) made a new
    `exec-1-fix` with its own commits: `cleanup branches --force` from A deleted B's branch."""
    script = 'echo "$EMDX_HOME" > w; git add w; git commit -qm "work of $EMDX_HOME"\n'
    first = runs.wait_final(_run(runs, script, "--worktree", cwd=git_repo))
    branch = str(first.branch)
    assert runs.cli("cleanup", "dirs", "--older-than", "0s", cwd=git_repo).code == 0
    git(git_repo, "branch", "-q", "-D", branch)  # the user threw A's result away by hand
    other = {"EMDX_HOME": str(tmp_path / "home-b")}
    assert runs.cli("list", env=other).code == 0
    _seed_same_next_id(tmp_path / "home-b" / "knowledge.db", first.id)
    saved = runs.cli("save", "--title", "Attack", env=other, input=script)
    doc = saved.stdout.split("#")[1].split(":")[0]
    started = runs.cli("claude", "execute", doc, "--no-smart", "--worktree", env=other,
                       cwd=git_repo)  # fmt: skip
    assert started.code == 0, started
    assert git(git_repo, "branch", "--list", branch), "home B did not reuse the name"
    # B removes its worktree (its branch stays), as A did.
    assert runs.cli("cleanup", "dirs", "--older-than", "0s", env=other, cwd=git_repo).code == 0
    tip = git(git_repo, "rev-parse", branch)
    done = runs.cli("cleanup", "branches", "--yes", "--force", "--json", cwd=git_repo)
    assert done.code == 0, done
    assert git(git_repo, "rev-parse", branch) == tip


def _seed_same_next_id(db: Path, execution_id: int) -> None:
    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'executions'",
                     (execution_id - 1,))  # fmt: skip
    finally:
        conn.close()


def test_a_hostile_line_in_the_log_never_gives_a_traceback(runs: Runs, bash_agent: Path) -> None:
    """The agent appends a JSON line nested 100 000 deep to its own log: `exec show`, `exec
    logs [--raw]`, `exec tail` and the foreground `execute` died with a RecursionError."""
    script = ('python3 -c "print(\\"[\\"*100000 + \\"]\\"*100000)" '
              '>> "$EMDX_HOME/logs/$EMDX_RUN_KEY.jsonl"\n')  # fmt: skip
    doc = runs.doc(script, title="Deep")
    foreground = runs.cli("claude", "execute", str(doc), "--no-smart")
    assert foreground.code == 0, foreground
    assert "Traceback" not in foreground.stderr
    row = runs.service.list_executions(None, 1)[0]
    assert row.status.value == "completed"
    ref = str(row.id)
    for args in (("exec", "show", ref), ("exec", "logs", ref), ("exec", "logs", ref, "--raw"),
                 ("exec", "tail", ref)):  # fmt: skip
        done = runs.cli(*args)
        assert "Traceback" not in done.stderr + done.stdout, (args, done)
        assert done.code == 0, (args, done)


def test_captured_environments_never_outlive_their_runs(
    runs: Runs, bash_agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued run's captured environment (its caller's API keys, in plain text) stayed on
    disk forever when the run was killed while queued, or its supervisor was SIGKILLed."""
    monkeypatch.setenv("EMDX_MAX_PARALLEL", "1")
    monkeypatch.setenv("LEAK_API_KEY", "sk-live-0123456789abcdef")
    holder = _run(runs, "sleep 30\n", "-b")
    runs.wait_running_agent(holder)
    dropped = _run(runs, "true\n", "-b")
    assert runs.get(dropped).status.value == "queued"
    env_file = paths.env_path(str(runs.get(dropped).run_key))
    assert env_file.exists()
    assert runs.cli("exec", "kill", str(dropped)).code == 0
    assert not env_file.exists()
    # The holder's supervisor dies mid-run: the repair forgets its environment too.
    row = runs.wait_running_agent(holder)
    holder_env = paths.env_path(str(row.run_key))
    assert holder_env.exists()
    os.kill(int(row.pid or 0), 9)
    wait_until(lambda: runs.cli("exec", "list").code == 0 and runs.get(holder).status.is_final,
               20, message="the repair")  # fmt: skip
    assert not holder_env.exists()
    leaked = [p.name for p in paths.logs_dir().iterdir()
              if b"sk-live-0123456789abcdef" in p.read_bytes()]  # fmt: skip
    assert leaked == []
    # A stray one (left by an older emdx, say) is removed by `cleanup processes`.
    stray = paths.env_path("7-1-1-deadbeef")
    stray.write_text(json.dumps({"LEAK_API_KEY": "sk-live-0123456789abcdef"}))
    old = time.time() - 3600
    os.utime(stray, (old, old))
    assert runs.cli("cleanup", "processes").code == 0
    assert not stray.exists()


def test_secrets_in_nested_json_and_url_or_base64_encodings_are_masked(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON text inside a JSON string (what secret managers print) and the URL-encoded form of
    a key (curl -v) were readable in the log, the saved Analysis document and knowledge.db."""
    password = 'c0rrect"horse\\battery'
    key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("DB_PASSWORD", password)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key)
    agent = tmp_path / "agent"
    agent.write_text(NESTED_AGENT)
    agent.chmod(0o755)
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(agent))
    doc = runs.doc("# audit the deployment\n", title="Audit", tags="note")
    done = runs.cli("claude", "execute", str(doc))
    assert done.code == 0, done
    forms = _encodings(password) + _encodings(key)
    row = runs.service.list_executions(None, 1)[0]
    assert row.output_doc_id is not None
    shown = (
        runs.cli("exec", "logs", str(row.id)).stdout
        + runs.cli("view", str(row.output_doc_id), "--raw").stdout
    )
    assert "***" in shown
    for form in forms:
        assert form not in shown, form
    runs.service.close()
    data = b"".join(p.read_bytes() for p in paths.emdx_home().glob("knowledge.db*"))
    data += b"".join(p.read_bytes() for p in paths.logs_dir().glob("*.jsonl"))
    for form in forms:
        assert form.encode() not in data, form


def _encodings(secret: str) -> list[str]:
    once = json.dumps(secret)[1:-1]
    return [
        json.dumps(once)[1:-1],
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(secret.encode() + b"\n").decode(),
    ]


NESTED_AGENT = r"""#!/usr/bin/env python3
import base64, json, os, sys, urllib.parse
sys.stdin.read()
def emit(o): print(json.dumps(o), flush=True)
inner = json.dumps({"username": "app", "password": os.environ["DB_PASSWORD"]})
tool_out = json.dumps({"Name": "prod/db", "SecretString": inner}, indent=2)
key = os.environ["AWS_SECRET_ACCESS_KEY"]
url = "GET /upload?key=" + urllib.parse.quote(key, safe="") + " HTTP/1.1"
b64 = base64.b64encode((key + "\n").encode()).decode()
emit({"type": "system", "subtype": "init", "session_id": "s1", "model": "m"})
emit({"type": "user", "message": {"content": [{"type": "tool_result", "content": tool_out}]}})
emit({"type": "user", "message": {"content": [{"type": "tool_result", "content": "> " + url}]}})
emit({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
      "total_cost_usd": 0.01,
      "result": "# Findings\n\n```\n" + tool_out + "\n```\n\ncurl said: " + url + "\n" + b64})
"""


def test_cleanup_never_crosses_a_mount_point_in_a_run_dir(
    runs: Runs, bash_agent: Path, tmp_path: Path
) -> None:
    """A mount the agent leaves in its run directory (bind mount here; an unprivileged agent
    gets the same with FUSE): `cleanup dirs` deleted the mounted filesystem's contents."""
    victim = tmp_path / "victim" / "data"
    victim.mkdir(parents=True)
    (victim / "a.txt").write_text("precious\n")
    execution_id = _run(runs, f"mkdir mnt && mount --bind {victim} mnt\n")
    row = runs.wait_final(execution_id)
    mount_point = Path(str(row.working_dir)) / "mnt"
    try:
        assert os.path.ismount(mount_point) or paths.mounts_under(mount_point), "not mounted"
        done = runs.cli("cleanup", "dirs", "--older-than", "0s", "--json")
        assert done.code == 1, done  # a failed line
        [action] = json.loads(done.stdout)["actions"]
        assert action["result"] == "failed" and "mount point" in action["detail"], action
        assert (victim / "a.txt").read_text() == "precious\n"
    finally:
        subprocess.run(["umount", str(mount_point)], check=False, capture_output=True)
    assert (victim / "a.txt").read_text() == "precious\n"


def test_cleanup_removes_a_tree_deeper_than_python_recurses(runs: Runs, bash_agent: Path) -> None:
    """3000 nested directories left by the agent made `cleanup dirs` and `cleanup all` die with a
    RecursionError traceback (shutil's fd-based rmtree recurses per level), cleaning nothing."""
    script = (
        "python3 -c \"import os\nfd = os.open('.', os.O_RDONLY)\nfor _ in range(3000):\n"
        "    os.mkdir('d', dir_fd=fd); n = os.open('d', os.O_RDONLY, dir_fd=fd); "
        'os.close(fd); fd = n"\n'
    )
    deep = runs.wait_final(_run(runs, script))
    plain = runs.wait_final(_run(runs, "true\n"))
    try:
        done = runs.cli("cleanup", "all", "--yes", "--older-than", "0s")
        assert done.code == 0 and "Traceback" not in done.stderr, done
        for row in (deep, plain):
            assert not os.path.lexists(str(row.working_dir)), row.working_dir
    finally:  # pytest's own temp cleanup recurses per level: never leave the tree to it
        if os.path.lexists(str(deep.working_dir)):
            paths.remove_tree(Path(str(deep.working_dir)), paths.runs_dir())


def _bounded_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """`emdx ARGS` with 2 GB of address space (reading /dev/zero to the end would exhaust it);
    TimeoutExpired when it hangs."""
    import resource
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    argv = [sys.executable, "-m", "emdx", *args]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          preexec_fn=limit, check=False)  # fmt: skip


@pytest.mark.parametrize(
    "plant", ['rm "$L"; mkfifo "$L"', 'rm "$L"; ln -s /dev/zero "$L"'], ids=["fifo", "dev-zero"]
)
def test_a_fifo_or_device_in_place_of_the_log_never_hangs_a_reader(
    runs: Runs, bash_agent: Path, plant: str
) -> None:
    """The agent swapped its log for a FIFO (the foreground `execute`, `exec show` and `exec
    logs` blocked for good) or a link to /dev/zero (they read it until memory ran out)."""
    doc = runs.doc(f'L="$EMDX_HOME/logs/$EMDX_RUN_KEY.jsonl"; {plant}\n', title="Swap")
    foreground = _bounded_cli("claude", "execute", str(doc), "--no-smart")
    assert b"Traceback" not in foreground.stderr, foreground
    row = runs.wait_final(runs.service.list_executions(None, 1)[0].id)
    assert row.status.value == "completed", row
    for args in (("exec", "show", str(row.id)), ("exec", "logs", str(row.id)),
                 ("exec", "tail", str(row.id)), ("exec", "list")):  # fmt: skip
        done = _bounded_cli(*args)
        assert b"Traceback" not in done.stderr and b"MemoryError" not in done.stderr, (args, done)


def test_cleanup_unregisters_only_its_own_worktree(
    runs: Runs, git_repo: Path, bash_agent: Path, tmp_path: Path
) -> None:
    """`git worktree prune` after removing a run's worktree also dropped the user's own
    worktree whose directory was missing at that moment (a disk not mounted right now)."""
    usb = tmp_path / "usb"
    git(git_repo, "worktree", "add", "-q", "-b", "user-feature", str(usb / "feature"))
    (usb / "feature" / "wip.txt").write_text("wip\n")
    row = runs.wait_final(_run(runs, "true\n", "--worktree", cwd=git_repo))
    usb.rename(tmp_path / "usb-unplugged")
    for args in (("cleanup", "dirs", "--older-than", "0s"),
                 ("cleanup", "branches", "--yes", "--force")):  # fmt: skip
        assert runs.cli(*args, cwd=git_repo).code == 0
    (tmp_path / "usb-unplugged").rename(usb)
    assert not os.path.lexists(str(row.working_dir))
    listed = git(git_repo, "worktree", "list", "--porcelain")
    assert f"worktree {usb / 'feature'}" in listed and str(row.working_dir) not in listed
    assert "wip.txt" in git(usb / "feature", "status", "--porcelain")


def _result_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, init: str, result: str) -> None:
    script = tmp_path / "result-agent"
    script.write_text(f"#!/bin/bash\ncat >/dev/null\necho '{init}'\necho '{result}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("EMDX_CLAUDE_BIN", str(script))


INIT = '{"type":"system","subtype":"init","session_id":"s1","model":"m"}'


@pytest.mark.parametrize(
    "field", ['"num_turns": 9223372036854775808', '"num_turns": -5, "duration_ms": 1e999',
              '"usage": {"input_tokens": 99999999999999999999999, "output_tokens": 1}'],
    ids=["2**63", "negative-and-inf", "huge-tokens"],
)  # fmt: skip
def test_a_number_no_column_holds_never_bricks_the_commands(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """`"num_turns": 2**63` in a result made the final write die with OverflowError (the row
    stayed running), and every command that sweeps died with the same traceback for good."""
    result = ('{"type":"result","subtype":"success","is_error":false,"result":"done",'
              f'"total_cost_usd":0.01,{field}}}')  # fmt: skip
    _result_agent(tmp_path, monkeypatch, INIT, result)
    doc = runs.doc("# doc")
    foreground = runs.cli("claude", "execute", str(doc), "--no-smart")
    assert foreground.code == 0 and "Traceback" not in foreground.stderr, foreground
    row = runs.wait_final(runs.service.list_executions(None, 1)[0].id)
    assert row.status.value == "completed" and row.exit_code == 0, row
    assert row.num_turns is None or 0 <= row.num_turns < 2**63
    for args in (("exec", "list"), ("exec", "show", str(row.id)), ("exec", "health"),
                 ("exec", "stats"), ("cleanup", "all", "--yes")):  # fmt: skip
        done = runs.cli(*args)
        assert "Traceback" not in done.stdout + done.stderr, (args, done)


def test_an_outcome_file_with_a_huge_number_is_still_recorded(runs: Runs, bash_agent: Path) -> None:
    """The side file the sweep finishes a row from is in EMDX_HOME, where an agent can write: a
    number no column holds must not make the sweep (and so every command) die."""
    execution_id = _run(runs, "sleep 30\n", "-b")
    row = runs.wait_running_agent(execution_id)
    final = paths.final_path(str(row.run_key))
    final.write_text(json.dumps({"run_key": row.run_key, "status": "completed", "exit_code": 0,
                                 "reason": "success", "fields": {"num_turns": 2**64,
                                 "cost_usd": 1e308, "input_tokens": 2**63 - 1}}))  # fmt: skip
    os.kill(int(row.pid or 0), 9)
    done = runs.cli("exec", "list")
    assert done.code == 0 and "Traceback" not in done.stderr, done
    repaired = runs.wait_final(execution_id)
    assert repaired.status.value == "completed", repaired
    assert repaired.num_turns is None and repaired.input_tokens == 2**63 - 1


@pytest.mark.parametrize("cost", ["1e999", "-1e308", "NaN"])
def test_an_agent_chosen_cost_keeps_json_strict_and_tables_narrow(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cost: str
) -> None:
    """`"total_cost_usd": 1e999` made every `--json` print `Infinity` (not JSON), stats `$inf`
    for good; -1e308 printed a 300-digit cost that stretched `exec list` to 387 columns."""
    result = ('{"type":"result","subtype":"success","is_error":false,"num_turns":1,'
              f'"result":"done","total_cost_usd":{cost}}}')  # fmt: skip
    _result_agent(tmp_path, monkeypatch, INIT, result)
    doc = runs.doc("# doc")
    assert runs.cli("claude", "execute", str(doc), "--no-smart").code == 0
    row = runs.wait_final(runs.service.list_executions(None, 1)[0].id)

    def strict(text: str) -> Any:
        def refuse(constant: str) -> None:
            raise AssertionError(f"not JSON: {constant}")

        return json.loads(text, parse_constant=refuse)

    for args in (("exec", "show", str(row.id)), ("exec", "list"), ("exec", "stats")):
        done = runs.cli(*args, "--json")
        assert done.code == 0, done
        strict(done.stdout)
    listing = runs.cli("exec", "list")
    assert max(len(line) for line in listing.stdout.splitlines()) < 160, listing.stdout
    assert "inf" not in runs.cli("exec", "stats").stdout


def test_a_session_id_that_reads_as_an_option_is_never_passed_to_the_agent(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session id "--debug-file=<path>" (from the agent's own output) was passed as `--resume
    <id>`; `--resume` takes an optional value, so Claude Code read it as an option and wrote its
    debug log over a file outside EMDX_HOME."""
    victim = tmp_path / "victim-bashrc"
    victim.write_text("precious\n")
    hostile = f'{{"type":"system","subtype":"init","session_id":"--debug-file={victim}"}}'
    result = '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok"}'
    _result_agent(tmp_path, monkeypatch, hostile, result)
    doc = runs.doc("# doc")
    assert runs.cli("claude", "execute", str(doc), "--no-smart").code == 0
    row = runs.wait_final(runs.service.list_executions(None, 1)[0].id)
    assert row.session_id is None, row.session_id
    # A row written before the check (an older emdx) still holds one: resume refuses it.
    conn = sqlite3.connect(str(paths.db_path()), isolation_level=None)
    try:
        conn.execute("UPDATE executions SET session_id = ? WHERE id = ?",
                     (f"--debug-file={victim}", row.id))  # fmt: skip
    finally:
        conn.close()
    done = runs.cli("exec", "resume", str(row.id), "carry on")
    assert done.code != 0 and "not one Claude Code gives" in done.stderr, done
    assert len(runs.service.list_executions(None, 10)) == 1
    assert victim.read_text() == "precious\n"
