"""The offline end-to-end demo: save a gameplan and execute it with the real Claude Code CLI.

A scripted Anthropic Messages API server on 127.0.0.1 plays the model; everything else is real:
the `emdx` CLI, the supervisor, the Claude Code CLI and the tools it runs (Bash, Write, Read) in the
execution's working directory. Run it with `make demo`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from emdx.testing.model_server import ScriptedModelServer, offline_claude_env

REPO = Path(__file__).resolve().parent.parent
CLAUDE = REPO / "node_modules" / ".bin" / "claude"
BIN = Path(sys.executable).parent

GAMEPLAN = """\
# Hello emdx

A tiny gameplan for the offline demo.

1. Create `hello/greet.py` that prints a greeting.
2. Run it and check the output.
3. Write `hello/REPORT.md` with what was done.
"""

SCRIPT = [
    {
        "text": "Starting with the directory layout.",
        "tool_use": {
            "name": "Bash",
            "input": {
                "command": "mkdir -p hello && ls -la",
                "description": "Create the hello directory",
            },
        },
    },
    {
        "tool_use": {
            "name": "Write",
            "input": {
                "file_path": "{cwd}/hello/greet.py",
                "content": "print('hello from an emdx execution')\n",
            },
        }
    },
    {
        "tool_use": {
            "name": "Bash",
            "input": {"command": "python3 hello/greet.py", "description": "Run the greeting"},
        }
    },
    {
        "tool_use": {
            "name": "Write",
            "input": {
                "file_path": "{cwd}/hello/REPORT.md",
                "content": "# Report\n\nCreated hello/greet.py and ran it.\n",
            },
        }
    },
    {"tool_use": {"name": "Read", "input": {"file_path": "{cwd}/hello/REPORT.md"}}},
    {"text": "Done: created hello/greet.py, ran it (it prints the greeting), wrote REPORT.md."},
]


def emdx(*args: str, env: dict[str, str], cwd: Path, check: bool = True) -> int:
    print(f"\n$ emdx {' '.join(args)}", flush=True)
    code = subprocess.run([str(BIN / "emdx"), *args], env=env, cwd=cwd, check=False).returncode
    if check and code != 0:
        sys.exit(f"demo: `emdx {' '.join(args)}` exited {code}")
    return code


def main() -> int:
    if not CLAUDE.exists():
        sys.exit(f"demo: {CLAUDE} is missing; run `npm ci` (make demo does it)")
    work = Path(tempfile.mkdtemp(prefix="emdx-demo-"))
    home = work / "home"
    home.mkdir()
    emdx_home = work / "emdx"
    # A small git project to work on: a gameplan run there gets its own worktree and branch.
    project = work / "project"
    project.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "demo@emdx.local"],
        ["config", "user.name", "emdx demo"],
    ):
        subprocess.run(["git", *args], cwd=project, check=True)
    (project / "README.md").write_text("# demo project\n")
    subprocess.run(["git", "add", "."], cwd=project, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "initial"], cwd=project, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(EMDX_HOME=str(emdx_home), EMDX_CLAUDE_BIN=str(CLAUDE), EMDX_HEARTBEAT_SECONDS="2")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    try:
        with ScriptedModelServer(scripts={"default": SCRIPT}) as server:
            env.update(offline_claude_env(server.url, str(work / "claude-config"), str(home)))
            print(f"scripted model server: {server.url}")
            print(f"EMDX_HOME: {emdx_home}")
            emdx("claude", "check-env", env=env, cwd=project)
            saved = subprocess.run(
                [str(BIN / "emdx"), "save", "--tags", "gameplan,active", "--project", "demo"],
                input=GAMEPLAN,
                text=True,
                env=env,
                cwd=project,
                capture_output=True,
                check=True,
            )
            print(
                f"\n$ emdx save --tags gameplan,active --project demo < gameplan.md\n"
                f"{saved.stdout.strip()}"
            )
            doc_id = saved.stdout.split("#", 1)[1].split(":", 1)[0]
            emdx("find", "greeting", env=env, cwd=project)
            code = emdx("claude", "execute", doc_id, env=env, cwd=project, check=False)
            emdx("exec", "show", "1", "--lines", "0", env=env, cwd=project)
            emdx("exec", "list", env=env, cwd=project)
            emdx("exec", "stats", env=env, cwd=project)
            emdx("tags", env=env, cwd=project)
            emdx("cleanup", "all", "--dry-run", env=env, cwd=project)
            workdir = next((emdx_home / "runs").iterdir())
            print(f"\nfiles the agent created in {workdir}:")
            for path in sorted(workdir.rglob("*")):
                print(f"  {path.relative_to(workdir)}")
            greet = workdir / "hello" / "greet.py"
            if code != 0 or not greet.exists():
                print(f"\ndemo FAILED: execute exited {code}", file=sys.stderr)
                return 1
            print("\ndemo OK: the real Claude Code CLI ran the gameplan offline; run completed.")
            return 0
    finally:
        if os.environ.get("EMDX_DEMO_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
