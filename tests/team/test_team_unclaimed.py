"""A worker killed between making a run's worktree and claiming the run: nothing it made stays
on its host (the directory, the worktree's registration, the branch), and the run still runs
once — on another host, or on the same host once it is back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from cleanup_helpers import branch_exists, git, worktrees
from team_helpers import Team, Worker, new_repo
from testkit import FAULT_HOOKS, wait_until

pytestmark = pytest.mark.slow


def _killed_after_its_worktree(team: Team, there: Path) -> tuple[Worker, int, str, str]:
    """Alpha, holding `there`, SIGKILLed once it made the run's worktree (not yet claimed):
    the run, its key, and the branch alpha made for it."""
    here = new_repo(team.root / "laptop-src" / "proj")
    there.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(here), str(there)], check=True)
    alpha, mark, _ = team.start_held_worker(
        "alpha", "emdx.service.preparing:Preparation._make_workdir", repos=(there,)
    )
    run = team.submit("laptop", team.save("laptop", "# in the repo\n"), "--worktree", cwd=here)
    wait_until(mark.exists, 60, message=alpha.text)
    alpha.signal(signal.SIGKILL)
    alpha.proc.wait(10)
    row = team.row(run)
    assert row.status.value == "queued" and row.branch, row
    key = row.run_key or ""
    left = alpha.home / "runs" / key
    assert left.is_dir() and worktrees(there).get(str(left)) == row.branch, worktrees(there)
    return alpha, run, key, row.branch


def _nothing_of_it_left(alpha: Worker, there: Path, key: str, branch: str) -> None:
    assert not (alpha.home / "runs" / key).exists()
    assert list(worktrees(there)) == [str(there)], worktrees(there)
    assert not branch_exists(there, branch)


def test_what_a_worker_made_before_it_died_is_swept_when_it_starts_again(team: Team) -> None:
    there = team.root / "alpha-src" / "proj"
    beta_repo = team.root / "beta-src" / "proj"
    alpha, run, key, branch = _killed_after_its_worktree(team, there)
    beta_repo.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(there), str(beta_repo)], check=True)
    team.start_worker("beta", repos=(beta_repo,))
    row = team.wait_final(run, 90)
    assert (row.status.value, row.host) == ("completed", "beta"), (row, team.events(run))
    assert (alpha.home / "runs" / key).is_dir()  # not yet: alpha is down
    restarted = team.start_worker("alpha", repos=(there,))
    assert "never claimed here" in restarted.text(), restarted.text()
    _nothing_of_it_left(alpha, there, key, branch)
    assert branch_exists(beta_repo, row.branch or ""), row  # the run's own branch stays


def test_a_run_taken_again_on_the_host_that_died_preparing_it_runs_there(team: Team) -> None:
    there = team.root / "alpha-src" / "proj"
    alpha, run, key, branch = _killed_after_its_worktree(team, there)
    team.start_worker("alpha", repos=(there,))
    row = team.wait_final(run, 90)
    assert (row.status.value, row.host) == ("completed", "alpha"), (row, team.events(run))
    assert row.working_dir == str(alpha.home / "runs" / key)
    assert worktrees(there) == {str(there): "main", str(alpha.home / "runs" / key): row.branch}
    assert row.branch and branch_exists(there, row.branch)
    if row.branch != branch:
        assert not branch_exists(there, branch)


@pytest.mark.parametrize("target", ["empty", "dangling"])
def test_a_link_planted_at_a_queued_runs_path_is_never_gone_through(
    team: Team, target: str
) -> None:
    """A link named like a queued worktree run's key in the worker's runs/: git never writes
    where it points, no branch is left, the run fails saying why."""
    here = new_repo(team.root / "laptop-src" / "proj")
    there = team.root / "alpha-src" / "proj"
    there.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(here), str(there)], check=True)
    run = team.submit("laptop", team.save("laptop", "# in the repo\n"), "--worktree", cwd=here)
    key = team.row(run).run_key or ""
    victim = team.root / "victim"
    if target == "empty":
        victim.mkdir()
    runs = team.root / "alpha" / "emdx-home" / "runs"
    runs.mkdir(parents=True, mode=0o700)
    (runs / key).symlink_to(victim)
    team.start_worker("alpha", repos=(there,))
    row = team.wait_final(run, 60)
    assert (row.status.value, row.reason) == ("failed", "spawn_failed"), row
    assert (list(victim.iterdir()) == []) if target == "empty" else not victim.exists()
    assert list(worktrees(there)) == [str(there)], worktrees(there)
    assert git(there, "branch", "--list", "exec-*") == ""


def test_a_registration_whose_directory_is_gone_is_swept_with_its_branch(team: Team) -> None:
    """Alpha died preparing; its directory was removed meanwhile (by hand, a tmp cleaner) but
    git still lists the worktree: alpha's start-up sweep forgets it and deletes its branch."""
    there = team.root / "alpha-src" / "proj"
    alpha, run, key, branch = _killed_after_its_worktree(team, there)
    beta_repo = team.root / "beta-src" / "proj"
    beta_repo.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(there), str(beta_repo)], check=True)
    team.start_worker("beta", repos=(beta_repo,))
    assert team.wait_final(run, 90).status.value == "completed"
    shutil.rmtree(alpha.home / "runs" / key)
    assert str(alpha.home / "runs" / key) in worktrees(there)  # git still lists it
    restarted = team.start_worker("alpha", repos=(there,))
    assert "never claimed here" in restarted.text(), restarted.text()
    _nothing_of_it_left(alpha, there, key, branch)


def test_a_branch_git_made_before_the_worker_died_unmarked_is_swept(team: Team) -> None:
    """SIGKILLed right after git made the run's worktree and branch, before emdx marked the
    branch as the run's: the branch is still known as made for it (by its name) and goes."""
    here = new_repo(team.root / "laptop-src" / "proj")
    there = team.root / "alpha-src" / "proj"
    there.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(here), str(there)], check=True)
    fault = {"proc": "cli", "target": "emdx.system.git:add_worktree", "when": "after"}
    fault["action"] = "sigkill"
    hooks = f"{FAULT_HOOKS}{os.pathsep}{team.base_env['PYTHONPATH']}"
    alpha = team.start_worker(
        "alpha", repos=(there,), extra={"PYTHONPATH": hooks, "EMDX_FAULTS": json.dumps([fault])}
    )
    run = team.submit("laptop", team.save("laptop", "# in the repo\n"), "--worktree", cwd=here)
    alpha.proc.wait(60)
    row = team.row(run)
    key, branch = row.run_key or "", row.branch or ""
    made = [b for b in git(there, "branch", "--list", "exec-*").split() if b not in ("*", "+")]
    assert row.status.value == "queued" and made, (row, made)
    assert git(there, "config", "--get-regexp", r"\.emdxrunkey$", check=False) == ""  # unmarked
    restarted = team.start_worker("alpha", repos=(there,))
    row = team.wait_final(run, 90)
    assert (row.status.value, row.host) == ("completed", "alpha"), (row, restarted.text())
    left = [b for b in git(there, "branch", "--list", "exec-*").split() if b not in ("*", "+")]
    assert left == [row.branch], (made, left, branch, key)


def test_a_home_shared_by_two_hosts_keeps_the_others_preparation(team: Team) -> None:
    """Alpha and beta share one EMDX_HOME (an NFS home): beta starting while alpha prepares a
    run in it leaves alpha's directory alone (alpha's, by its mark), and alpha runs it."""
    shared = {"EMDX_HOME": str(team.root / "shared-home")}
    alpha, mark, release = team.start_held_worker(
        "alpha", "emdx.service.preparing:Preparation._make_workdir", extra=shared
    )
    run = team.submit("laptop", team.save("laptop", "# moves\n"))
    wait_until(mark.exists, 60, message=alpha.text)
    key = team.row(run).run_key or ""
    made = team.root / "shared-home" / "runs" / key
    assert made.is_dir()
    beta = team.start_worker("beta", extra=shared)
    assert made.is_dir() and "never claimed here" not in beta.text(), beta.text()
    release.touch()
    row = team.wait_final(run)
    assert (row.status.value, row.host) == ("completed", "alpha"), (row, alpha.text())
