"""The team-mode demo (`make demo-team`): two worker "hosts" and a laptop sharing one PostgreSQL
database, running the real Claude Code CLI against the scripted model server, offline.

A throwaway database is made on the local server (EMDX_DEMO_PG_URL names another one), two
`emdx worker`s start with their own EMDX_HOME and EMDX_HOST, a third home submits six runs and
shows them spread over both; then one worker is SIGKILLed mid-run and the repair is shown: its
run failed/137/host_lost, its queued runs finished by the survivor. Everything is stopped and the
database dropped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from emdx.testing.model_server import ScriptedModelServer, offline_claude_env

REPO = Path(__file__).resolve().parent.parent
CLAUDE = REPO / "node_modules" / ".bin" / "claude"
BIN = Path(sys.executable).parent
SERVER = os.environ.get("EMDX_DEMO_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Each run: a Bash step that takes a few seconds (so that a worker can be lost mid-run), then
# the answer.
SCRIPT = [
    {
        "text": "Measuring.",
        "tool_use": {
            "name": "Bash",
            "input": {"command": "sleep 4; hostname > where.txt", "description": "Work a bit"},
        },
    },
    {"text": "Done: the work is in where.txt."},
]


def emdx(*args: str, env: dict[str, str], cwd: Path, quiet: bool = False) -> str:
    if not quiet:
        print(f"\n$ emdx {' '.join(args)}", flush=True)
    done = subprocess.run(
        [str(BIN / "emdx"), *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if not quiet:
        print((done.stdout + done.stderr).rstrip(), flush=True)
    if done.returncode not in (0, 1, 143):
        sys.exit(f"demo-team: `emdx {' '.join(args)}` exited {done.returncode}")
    return done.stdout


def admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(SERVER, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def wait(what: str, check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"demo-team: timed out waiting for {what}")
        time.sleep(0.5)


def main() -> int:
    if not CLAUDE.exists():
        sys.exit(f"demo-team: {CLAUDE} is missing; run `npm ci` (make demo-team does it)")
    name = f"emdx_demo_{secrets.token_hex(4)}"
    parts = urlsplit(SERVER)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    work = Path(tempfile.mkdtemp(prefix="emdx-team-"))
    admin(f'CREATE DATABASE "{name}"')
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with ScriptedModelServer(scripts={"default": SCRIPT}) as server:
            base = {
                k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "CLAUDE"))
            }
            base.update(offline_claude_env(server.url, str(work / "claude"), str(work / "home")))
            base.update(
                EMDX_DATABASE_URL=url,
                EMDX_CLAUDE_BIN=str(CLAUDE),
                EMDX_HEARTBEAT_SECONDS="1",
                EMDX_WORKER_HEARTBEAT_SECONDS="1",
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            )

            def host(label: str) -> dict[str, str]:
                return {**base, "EMDX_HOME": str(work / label), "EMDX_HOST": label}

            print(f"team database: {url}\nscripted model server: {server.url}")
            for label in ("build-box-1", "build-box-2"):
                log = open(work / f"{label}.log", "wb")  # noqa: SIM115 (the worker's whole life)
                print(f"\n$ EMDX_HOST={label} emdx worker --name {label} --concurrency 2 &")
                workers[label] = subprocess.Popen(
                    [str(BIN / "emdx"), "worker", "--name", label, "--concurrency", "2"],
                    env=host(label),
                    cwd=work,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            laptop = host("laptop")
            wait(
                "both workers",
                lambda: emdx("workers", env=laptop, cwd=work, quiet=True).count("alive") == 2,
            )
            emdx("workers", env=laptop, cwd=work)
            saved = subprocess.run(
                [str(BIN / "emdx"), "save", "--title", "Measure something"],
                input="Measure something and write it down.",
                text=True,
                env=laptop,
                cwd=work,
                capture_output=True,
                check=True,
            )
            doc = saved.stdout.split("#", 1)[1].split(":", 1)[0]
            for _ in range(6):
                emdx("claude", "execute", doc, "--background", env=laptop, cwd=work)

            def busy() -> bool:
                found = json.loads(emdx("workers", "--json", env=laptop, cwd=work, quiet=True))
                return len(found) == 2 and all(w["running"] for w in found)

            wait("runs on both workers", busy, 60)
            emdx("workers", env=laptop, cwd=work)
            print("\n$ kill -9 <build-box-2's worker>   # the host is lost mid-run")
            workers["build-box-2"].send_signal(signal.SIGKILL)
            workers["build-box-2"].wait()

            def settled() -> bool:
                listing = emdx("exec", "list", env=laptop, cwd=work, quiet=True)
                return not any(s in listing for s in ("running", "queued", "waiting"))

            wait("every run to end", settled, 180)
            emdx("exec", "list", env=laptop, cwd=work)
            emdx("workers", "--all", env=laptop, cwd=work)
            listing = emdx("exec", "list", "--json", env=laptop, cwd=work, quiet=True)
            rows = json.loads(listing)
            lost = [r for r in rows if r["reason"] == "host_lost"]
            done = [r for r in rows if r["status"] == "completed"]
            if lost:
                emdx("exec", "show", str(lost[0]["id"]), env=laptop, cwd=work)
            print(
                f"\n{len(done)} completed ({', '.join(sorted({r['host'] for r in done}))}), "
                f"{len(lost)} host_lost (not retried: `emdx exec retry ID` runs one again)"
            )
            if len(done) + len(lost) != 6 or not done:
                sys.exit("demo-team: unexpected outcome")
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(20)
                if proc.poll() is None:
                    proc.kill()
        with contextlib.suppress(Exception):
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    print("\ndemo-team: done (database dropped, workers stopped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
