"""`python -m emdx.testing.model_server --script FILE.json [--port N]`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

from emdx.testing.model_server.scripts import Script
from emdx.testing.model_server.server import ScriptedModelServer


def _load_script_file(path: str) -> Mapping[str, Script] | Script:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, list | dict):
        raise SystemExit(f"{path}: expected a list of turns or an object of named scripts")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emdx.testing.model_server",
        description="Serve a scripted Anthropic Messages API for the Claude Code CLI.",
    )
    parser.add_argument(
        "--script",
        required=True,
        help="JSON file: a list of turns, or an object mapping script names to lists",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    try:
        server = ScriptedModelServer(
            host=args.host,
            port=args.port,
            scripts=_load_script_file(args.script),
            verbose=args.verbose,
        )
    except (OSError, ValueError) as exc:
        print(f"model_server: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    try:
        # A parent process reads this line to learn the port; flush so it is not stuck in a
        # pipe buffer.
        print(f"MODEL_SERVER_URL={server.url}", flush=True)
        # Wake up periodically: signal handlers only run between bytecodes of the main thread.
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
