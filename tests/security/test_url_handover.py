"""The team's database URL handed from one emdx process to the next on a pipe
(EMDX_DATABASE_URL_FD), never in a long-lived process's /proc/PID/environ or cmdline: the
command that starts again as itself without it, the reader, and its one-line failures. With
real PostgreSQL and real workers: tests/team/test_team_secrets.py."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import wait_until

from emdx import settings
from emdx.system import spawn

PASSWORD = "pw-handover-9f3a"
# Nothing listens on port 1: a command fails when it connects, after the hand-over.
URL = f"postgresql://emdx:{PASSWORD}@127.0.0.1:1/team"


def _emdx(
    args: list[str], fds: tuple[int, ...] = (), env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        pass_fds=fds,
    )


def _fails_in_one_line(proc: subprocess.Popen[bytes], stdin: bytes = b"") -> str:
    out, err = proc.communicate(stdin, timeout=60)
    text = err.decode()
    assert proc.returncode == 1, (proc.returncode, text)
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
    assert PASSWORD not in text + out.decode()
    return text


def _proc(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as handle:
        return handle.read()


def _handover_pipe_closed(pid: int) -> bool:
    try:
        return not os.readlink(f"/proc/{pid}/fd/3").startswith("pipe:")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("given", ["--db", "EMDX_DATABASE_URL"])
def test_a_command_given_the_url_starts_again_without_it(given: str) -> None:
    """`save` waits for its document on stdin: meanwhile its command line and environment are
    read as another process reads them. Same pid; the URL came on the pipe, which is closed."""
    by_flag = given == "--db"
    args = ["emdx", "--db", URL] if by_flag else ["emdx"]
    env = {} if by_flag else {"EMDX_DATABASE_URL": URL}
    proc = _emdx([*args, "save", "--title", "t"], env=env)
    try:
        wait_until(lambda: b"EMDX_DATABASE_URL_FD=" in _proc(proc.pid, "environ"), 30)
        wait_until(lambda: _handover_pipe_closed(proc.pid), 30)
        cmdline, environ = _proc(proc.pid, "cmdline"), _proc(proc.pid, "environ")
        assert cmdline.split(b"\0")[1:-1] == [b"-m", b"emdx", b"save", b"--title", b"t"]
        assert PASSWORD.encode() not in cmdline + environ
        assert b"EMDX_DATABASE_URL=" not in environ
    finally:
        text = _fails_in_one_line(proc, b"a document")
    # It used the URL it was handed: the database it names is the one it could not reach.
    assert "cannot reach PostgreSQL at postgresql://emdx@127.0.0.1:1/team" in text, text


def test_help_and_sqlite_mode_do_not_start_again() -> None:
    for args in (["emdx", "--db", URL, "--help"], ["emdx", "list"]):
        proc = _emdx(args)
        out, err = proc.communicate(b"", timeout=60)
        assert proc.returncode == 0, err
        assert b"EMDX_DATABASE_URL_FD" not in err + out


def test_the_handed_url_is_read_once_and_the_variable_forgotten() -> None:
    read = spawn.url_pipe(URL)
    code = (
        "import os; from emdx import settings; print(settings.database_url()); "
        "print(os.environ.get('EMDX_DATABASE_URL_FD')); print(settings.database_url()); "
        f"os.fstat({read})"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "EMDX_DATABASE_URL_FD": str(read)},
            pass_fds=(read,),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(read)
    assert done.stdout.splitlines() == [URL, "None", URL], done.stdout + done.stderr
    assert "Bad file descriptor" in done.stderr  # closed after the one read


def _empty_pipe() -> int:
    read, write = os.pipe()
    os.close(write)
    return read


@pytest.mark.parametrize("case", ["no such fd", "not a number", "closed empty pipe", "a file"])
@pytest.mark.parametrize("program", ["emdx", "emdx.runner"])
def test_a_bad_handover_is_one_line_and_a_non_zero_exit(
    case: str, program: str, tmp_path: Path
) -> None:
    fds: tuple[int, ...] = ()
    if case == "no such fd":
        value = "987"
    elif case == "not a number":
        value = "three"
    else:
        if case == "closed empty pipe":
            fd = _empty_pipe()
        else:
            (tmp_path / "f").write_text(URL)
            fd = os.open(tmp_path / "f", os.O_RDONLY)
        fds, value = (fd,), str(fd)
    args = [program, "exec", "list"] if program == "emdx" else [program, "1"]
    try:
        proc = _emdx(args, fds, {"EMDX_DATABASE_URL_FD": value})
    finally:
        for fd in fds:
            os.close(fd)
    text = _fails_in_one_line(proc)
    assert f"EMDX_DATABASE_URL_FD={value}" in text, text
    if program == "emdx.runner":
        assert text.startswith("emdx runner: "), text


def test_a_url_too_long_for_the_pipe_is_refused() -> None:
    with pytest.raises(OSError) as raised:
        spawn.url_pipe("postgresql://u@h/" + "x" * settings.URL_MAX_BYTES)
    assert raised.value.errno == errno.E2BIG


def test_the_supervisors_environment_never_carries_the_url() -> None:
    env = {"EMDX_DATABASE_URL": URL, "EMDX_DATABASE_URL_FD": "7", "KEEP": "1"}
    assert spawn.without_url(env) == {"KEEP": "1"}
