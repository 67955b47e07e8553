"""An agent's leftovers cannot make cleanup change anything outside EMDX_HOME (DESIGN §8).

Each test plays the agent (plants links after its run), then runs emdx's own commands and
compares a victim tree outside EMDX_HOME, byte for byte, before and after.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from escape_helpers import (
    Runs,
    cleanup_env,
    git_repo,
    make_old,
    procs,
    reaper,
    runs,
    svc,
    tree_digest,
    victim_tree,
    victim_worktree,
    worktrees,
)
from testkit import one_line_error

from emdx import paths

__all__ = ["cleanup_env", "git_repo", "procs", "reaper", "runs", "svc"]


def _finished(runs: Runs, *extra: str, cwd: Path | None = None) -> tuple[int, Path]:
    doc = runs.doc("# Quick\nFAKE:events=1\n", title="Quick")
    row = runs.wait_final(runs.start(doc, *extra, cwd=cwd))
    assert row.status.value == "completed", row
    return row.id, Path(str(row.working_dir))


def _finished_run(runs: Runs, *extra: str, cwd: Path | None = None) -> Path:
    return _finished(runs, *extra, cwd=cwd)[1]


def test_a_link_next_to_a_run_dir_is_never_followed(runs: Runs, tmp_path: Path) -> None:
    """`runs/innocent-looking -> /elsewhere/worktree`: the default `cleanup all` once removed
    that other worktree, uncommitted work included."""
    _finished_run(runs)
    victim_repo, victim = victim_worktree(tmp_path)
    plant = paths.runs_dir() / "innocent-looking"
    plant.symlink_to(victim)
    make_old(plant)
    before = tree_digest(victim), worktrees(victim_repo)

    for args in (("cleanup", "all", "--yes"), ("cleanup", "dirs", "--older-than", "0s")):
        done = runs.cli(*args, "--json")
        assert done.code == 0, done
        [kept] = [a for a in runs_actions(done.stdout) if a["target"] == str(plant)]
        assert kept["result"] == "kept" and "never followed" in kept["detail"], kept
    assert (tree_digest(victim), worktrees(victim_repo)) == before
    assert plant.is_symlink()  # left in place


def runs_actions(stdout: str) -> list[dict[str, str]]:
    import json

    return list(json.loads(stdout)["actions"])


def test_a_run_dir_swapped_for_a_link_is_never_followed(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """The agent replaces its own directory (a plain run's, and a worktree's) with a link to a
    directory of the user's: cleanup must neither delete through it nor run git in it."""
    victim_repo, victim = victim_worktree(tmp_path)
    plain_victim = victim_tree(tmp_path / "plain-victim")
    plain = _finished_run(runs)
    tree = _finished_run(runs, "--worktree", cwd=git_repo)
    for run_dir, target in ((plain, plain_victim), (tree, victim)):
        os.rename(run_dir, run_dir.with_name(run_dir.name + ".moved"))
        run_dir.symlink_to(target)
    before = tree_digest(victim), tree_digest(plain_victim), worktrees(victim_repo)

    done = runs.cli("cleanup", "dirs", "--older-than", "0s", "--json")
    assert done.code == 0, done
    acts = {a["target"]: a for a in runs_actions(done.stdout)}
    for run_dir in (plain, tree):
        assert acts[str(run_dir)]["result"] == "kept", acts
    branches = runs.cli("cleanup", "branches", "--yes", "--force", "--json", cwd=git_repo)
    # The worktree's branch cannot go while its directory is a link: a failed line, exit 1.
    assert branches.code == 1, branches
    assert any(a["result"] == "failed" for a in json.loads(branches.stdout)["actions"])
    assert (tree_digest(victim), tree_digest(plain_victim), worktrees(victim_repo)) == before
    assert plain.is_symlink() and tree.is_symlink()


def test_runs_swapped_for_a_link_is_refused_and_never_chmodded(runs: Runs, tmp_path: Path) -> None:
    """The agent renames `runs/` and puts a link to another directory in its place: the next
    command (even `exec list`) chmodded the target 0700 and `cleanup dirs` deleted its
    subdirectories."""
    _finished_run(runs)
    victim = victim_tree(tmp_path / "victim")
    os.chmod(victim, 0o755)
    runs_dir = paths.runs_dir()
    os.rename(runs_dir, runs_dir.with_name("runs.moved"))
    runs_dir.symlink_to(victim)
    before = tree_digest(victim)

    listed = runs.cli("exec", "list")
    assert listed.code == 0, listed
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o755
    for args in (("cleanup", "dirs", "--older-than", "0s"), ("cleanup", "dirs", "--dry-run")):
        error = one_line_error(runs.cli(*args))
        assert "symbolic link" in error and str(runs_dir) in error, error
    everything = runs.cli("cleanup", "all", "--yes", "--older-than", "0s", "--json")
    assert everything.code == 1, everything  # it went on, and says a line failed
    [refused] = [a for a in runs_actions(everything.stdout) if a["kind"] == "dir"]
    assert refused["result"] == "failed" and "symbolic link" in refused["detail"], refused
    doc = runs.doc("# Another\nFAKE:events=1\n", title="Another")
    started = runs.cli("claude", "execute", str(doc), "--background")
    assert "symbolic link" in one_line_error(started)
    assert tree_digest(victim) == before
    assert runs_dir.is_symlink() and os.readlink(runs_dir) == str(victim)
    assert [e.status.value for e in runs.service.list_executions(None, None)] == ["completed"]


def test_a_home_spelled_through_a_link_keeps_its_live_runs(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """Owners are matched by resolved paths: with EMDX_HOME spelled through a link, `cleanup
    dirs` deleted a live run's directory (and a locked worktree through its rmtree fallback)."""
    home = paths.emdx_home()
    alias = tmp_path / "home-alias"
    alias.symlink_to(home)
    slow = runs.doc("# Slow\nFAKE:sleep=60\n", title="Slow")
    via_alias = {"EMDX_HOME": str(alias)}
    plain_id = _started(runs, runs.cli("claude", "execute", str(slow), "-b", env=via_alias))
    tree_id = _started(
        runs, runs.cli("claude", "execute", str(slow), "-b", "--worktree", cwd=git_repo)
    )
    live = [Path(str(runs.wait_settled(i).working_dir)) for i in (plain_id, tree_id)]
    for run_dir in live:
        make_old(run_dir)
    before = [tree_digest(d) for d in live]

    for env in ({}, via_alias):
        done = runs.cli("cleanup", "dirs", "--older-than", "0s", "--json", env=env)
        assert done.code == 0, done
        assert runs_actions(done.stdout) == [], done.stdout
        listed = runs.cli("exec", "list", "--json", env=env)
        assert listed.code == 0
    assert [tree_digest(d) for d in live] == before
    assert str(live[1]) in worktrees(git_repo)
    for execution_id in (plain_id, tree_id):
        row = runs.get(execution_id)
        assert row.status.value == "running" and runs.service.runner_alive(row), row


def _started(runs: Runs, done: object) -> int:
    from testkit import started_id

    assert getattr(done, "code", 1) == 0, done
    return started_id(str(getattr(done, "stdout", "")))


def test_cleanup_of_a_run_dir_never_escapes_through_links_inside_it(
    runs: Runs, tmp_path: Path
) -> None:
    """Links the agent leaves inside its directory (to a file and to a directory of the user's)
    are removed as links; their targets stay."""
    execution_id, run_dir = _finished(runs)
    victim = victim_tree(tmp_path / "victim")
    (run_dir / "to-dir").symlink_to(victim)
    (run_dir / "to-file").symlink_to(victim / "precious.txt")
    (run_dir / "nested").mkdir()
    (run_dir / "nested" / "up").symlink_to(victim / "sub")
    before = tree_digest(victim)
    runs.wait_finished_for(execution_id, 0.2)
    done = runs.cli("cleanup", "dirs", "--older-than", "0s")
    assert done.code == 0, done
    assert not os.path.lexists(run_dir)
    assert tree_digest(victim) == before


def test_remove_tree_never_leaves_its_directory(tmp_path: Path) -> None:
    """The one removal cleanup uses: links (to a directory, to a file, dangling) are unlinked,
    never followed; a link or a file in place of the directory, or a path outside `inside`, is
    refused and left as it is."""
    from emdx.errors import EnvironmentProblem

    inside = tmp_path / "runs"
    victim = victim_tree(tmp_path / "victim")
    before = tree_digest(victim)
    target = inside / "run"
    (target / "a" / "b").mkdir(parents=True)
    (target / "a" / "to-dir").symlink_to(victim)
    (target / "a" / "b" / "to-file").symlink_to(victim / "precious.txt")
    (target / "dangling").symlink_to(tmp_path / "nowhere")
    (target / "file").write_text("x")
    paths.remove_tree(target, inside)
    assert not os.path.lexists(target) and tree_digest(victim) == before
    link = inside / "link"
    link.symlink_to(victim)
    plain = inside / "plain"
    plain.write_text("not a directory")
    for refused, where in ((link, inside), (plain, inside), (victim, inside)):
        with pytest.raises(EnvironmentProblem):
            paths.remove_tree(refused, where)
    assert link.is_symlink() and plain.read_text() == "not a directory"
    assert tree_digest(victim) == before


def test_git_is_only_run_through_the_helper() -> None:
    """No module but `emdx.system.git` starts git (so every call gets the safe configuration)."""
    import re

    src = Path(paths.__file__).resolve().parent
    starts_git = re.compile(r"""\[\s*["']git["']|which\(\s*["']git["']\s*\)""")
    offenders = []
    for path in src.rglob("*.py"):
        if path.name == "git.py" and path.parent.name == "system":
            continue
        if starts_git.search(path.read_text()):
            offenders.append(str(path.relative_to(src)))
    assert not offenders, offenders
    done = subprocess.run(
        [sys.executable, "-c", "import emdx.system.git as g; print(g.SAFE_CONFIG)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "('core.fsmonitor', 'false')" in done.stdout
    assert "('core.hooksPath', '/dev/null')" in done.stdout
