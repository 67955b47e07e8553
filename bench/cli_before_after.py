"""`emdx --help` and `emdx exec list` of two source trees, alternating in one run (same machine
load for both): the figures of a refactoring's "no slower" claim (issue 13).

Usage: python bench/cli_before_after.py BEFORE_SRC AFTER_SRC [RUNS]
  e.g. git worktree add /tmp/before 99b328c
       python bench/cli_before_after.py /tmp/before/src src 15
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(tree: str, args: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "emdx", *args],
        env={**env, "PYTHONPATH": tree},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return (time.perf_counter() - began) * 1000


def main() -> int:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    trees = {"before": str(Path(sys.argv[1]).resolve()), "after": str(Path(sys.argv[2]).resolve())}
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    for tree in trees.values():
        compileall.compile_dir(tree, quiet=1)  # as an install leaves it
    with tempfile.TemporaryDirectory() as tmp:
        envs = {}
        for name, tree in trees.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("EMDX_")}
            env.update(EMDX_HOME=str(Path(tmp) / name), HOME=tmp)
            subprocess.run(
                [sys.executable, "-m", "emdx", "save", "--title", "x"],
                input=b"x",
                env={**env, "PYTHONPATH": tree},
                capture_output=True,
                check=True,
            )
            envs[name] = env
        for args in (["--help"], ["exec", "list"]):
            times: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(runs):
                for name, tree in trees.items():
                    times[name].append(run(tree, args, envs[name]))
            figures = ", ".join(f"{n} {statistics.median(v):.0f} ms" for n, v in times.items())
            print(f"emdx {' '.join(args)}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
