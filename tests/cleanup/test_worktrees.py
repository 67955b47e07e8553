"""Worktree runs (`claude execute --worktree`, gameplans by default) and `emdx cleanup branches`."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from cleanup_helpers import (
    Runs,
    assert_same,
    branch_exists,
    commit_file,
    db_dump,
    git,
    parse_json,
    refs,
    runs_listing,
    worktrees,
)
from testkit import one_line_error, wait_until

from emdx import paths, smart


def _snapshot(repo: Path) -> tuple[Any, ...]:
    return (refs(repo), worktrees(repo), db_dump(), runs_listing())


# -- worktree runs ---------------------------------------------------------------------------


def test_worktree_run_is_a_git_worktree_on_its_branch(runs: Runs, git_repo: Path) -> None:
    title = "Fix: the ~Parser^ [v2] ..lock?"
    doc = runs.doc(f"# {title}\nFAKE:events=1\n", title=title)
    sub = git_repo / "sub" / "dir"
    sub.mkdir(parents=True)  # started from a subdirectory: the worktree is of the top level
    done = runs.cli("claude", "execute", str(doc), "--worktree", cwd=sub)
    assert done.code == 0, done
    [row] = runs.service.list_executions(None, None)
    assert row.status.value == "completed", row

    assert row.branch == f"exec-{row.id}-fix-the-parser-v2-lock"
    assert row.branch == smart.branch_name(row.id, title)
    assert git(git_repo, "check-ref-format", "--branch", row.branch) == row.branch
    assert row.working_dir is not None
    workdir = Path(row.working_dir)
    assert workdir.parent == paths.runs_dir()
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert worktrees(git_repo)[str(workdir)] == row.branch
    assert (workdir / ".git").is_file()
    assert (workdir / "README.md").read_text() == "hello\n"
    assert git(workdir, "rev-parse", "--abbrev-ref", "HEAD") == row.branch
    assert git(workdir, "rev-parse", "HEAD") == git(git_repo, "rev-parse", "main")
    # The main checkout is untouched: still on main.
    assert git(git_repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"

    # The agent ran in the worktree and got the prompt that names the branch.
    init = [e for e in runs.log_entries(row.id) if e.get("type") == "system/init"]
    assert init and init[0]["raw"]["cwd"] == str(workdir)
    prompt = paths.prompt_path(str(row.run_key)).read_bytes()
    assert row.branch.encode() in prompt
    payload = runs.result_payload(row.id)
    assert payload["sha256"] == hashlib.sha256(prompt).hexdigest()
    assert payload["prompt_bytes"] == len(prompt)


def test_gameplan_gets_a_worktree_by_default_and_no_worktree_opts_out(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    doc = runs.doc("# Ship it\nFAKE:events=1\n", title="Ship it", tags="gameplan")
    first = runs.start(doc, cwd=git_repo)
    row = runs.wait_final(first)
    assert row.exec_type == "gameplan"
    assert row.status.value == "completed", row
    assert row.branch == f"exec-{first}-ship-it"
    assert worktrees(git_repo).get(str(row.working_dir)) == row.branch
    prompt = paths.prompt_path(str(row.run_key)).read_text()
    assert f"git branch `{row.branch}`" in prompt

    second = runs.start(doc, "--no-worktree", cwd=git_repo)
    row2 = runs.wait_final(second)
    assert row2.status.value == "completed", row2
    assert row2.branch is None
    assert row2.working_dir and not (Path(row2.working_dir) / ".git").exists()
    assert row2.working_dir not in worktrees(git_repo)
    assert "exec-" not in paths.prompt_path(str(row2.run_key)).read_text()
    assert not git(git_repo, "branch", "--list", f"exec-{second}-*")

    # Outside a repository a gameplan simply runs in a plain directory.
    plain = tmp_path / "plain"
    plain.mkdir()
    third = runs.start(doc, cwd=plain)
    row3 = runs.wait_final(third)
    assert row3.status.value == "completed", row3
    assert row3.branch is None and row3.options.worktree is False
    assert set(worktrees(git_repo)) == {str(git_repo), str(row.working_dir)}


def test_worktree_outside_a_repo_fails_and_creates_nothing(runs: Runs, tmp_path: Path) -> None:
    doc = runs.doc("# doc\nFAKE:events=1\n")
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    for extra in ([], ["--background"]):
        done = runs.cli("claude", "execute", str(doc), "--worktree", *extra, cwd=plain)
        line = one_line_error(done)
        assert "git" in line, line
        assert done.stdout == ""
    listed = runs.cli("exec", "list", "--json", cwd=plain)
    assert listed.code == 0, listed
    assert parse_json(listed.stdout) == []
    assert runs_listing() == []
    assert not list(paths.logs_dir().glob("*.prompt.md"))


def test_two_worktree_runs_of_one_document_get_their_own_branch_and_dir(
    runs: Runs, git_repo: Path
) -> None:
    doc = runs.doc("# Same doc\nFAKE:sleep=1\n", title="Same doc")
    ids = [runs.start(doc, "--worktree", cwd=git_repo) for _ in range(2)]
    rows = [runs.wait_final(i) for i in ids]
    assert all(r.status.value == "completed" for r in rows), rows
    branches = {r.branch for r in rows}
    dirs = {r.working_dir for r in rows}
    assert len(branches) == 2 and len(dirs) == 2
    listed = worktrees(git_repo)
    for r in rows:
        assert listed[str(r.working_dir)] == r.branch
        assert r.branch == f"exec-{r.id}-same-doc"
        assert r.branch.encode() in paths.prompt_path(str(r.run_key)).read_bytes()


# -- cleanup branches ------------------------------------------------------------------------


def _by_target(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["target"]: a for a in payload["actions"]}


def test_cleanup_branches_merged_unmerged_and_in_use(runs: Runs, git_repo: Path) -> None:
    cli = runs.cli
    quick = runs.doc("# Quick\nFAKE:events=1\n", title="Quick")
    # A finished run whose branch has no commits (merged), one whose worktree got a commit
    # (unmerged), and a run still going (in use).
    merged_id = runs.start(quick, "--worktree", cwd=git_repo)
    unmerged_id = runs.start(quick, "--worktree", cwd=git_repo)
    slow = runs.doc("# Slow\nFAKE:sleep=30\n", title="Slow")
    busy_id = runs.start(slow, "--worktree", cwd=git_repo)
    merged_row = runs.wait_final(merged_id)
    unmerged_row = runs.wait_final(unmerged_id)
    busy_row = runs.wait_settled(busy_id)
    assert merged_row.status.value == unmerged_row.status.value == "completed"
    merged_dir = Path(str(merged_row.working_dir))
    unmerged_dir = Path(str(unmerged_row.working_dir))
    busy_dir = Path(str(busy_row.working_dir))
    commit_file(unmerged_dir, "work.txt", "agent work\n", "work on the exec branch")
    # A run's branch merged through a merge commit counts as merged.
    later_id = runs.start(quick, "--worktree", cwd=git_repo)
    later_row = runs.wait_final(later_id)
    later_dir = Path(str(later_row.working_dir))
    commit_file(later_dir, "y.txt", "y\n", "merged work")
    git(git_repo, "merge", "-q", "--no-ff", "-m", "merge later", str(later_row.branch))
    # By hand: exec-looking branches no run of this home created (kept whatever their state,
    # even with --force), and a non-exec branch that cleanup must never look at.
    git(git_repo, "branch", "exec-99-by-hand")
    git(git_repo, "checkout", "-q", "-b", "exec-98-unmerged")
    commit_file(git_repo, "x.txt", "x\n", "unmerged work")
    git(git_repo, "checkout", "-q", "main")
    git(git_repo, "branch", "feature-keep")

    merged = {str(merged_row.branch), str(later_row.branch)}
    unmerged = {str(unmerged_row.branch)}
    by_hand = {"exec-99-by-hand", "exec-98-unmerged"}
    busy = str(busy_row.branch)

    before = _snapshot(git_repo)
    dry = cli("cleanup", "branches", "--dry-run", cwd=git_repo)
    assert dry.code == 0, dry
    for name in merged | unmerged | {busy, "exec-98-unmerged"}:
        [line] = [ln for ln in dry.stdout.splitlines() if f" {name} " in ln]
        state = "unmerged" if name in unmerged | {"exec-98-unmerged"} else "merged"
        assert f"{state} into main" in line, line
    assert "feature-keep" not in dry.stdout
    dry_json = cli("cleanup", "branches", "--dry-run", "--json", cwd=git_repo)
    assert dry_json.code == 0, dry_json
    plan = parse_json(dry_json.stdout)
    assert plan["dry_run"] is True
    acts = _by_target(plan)
    assert set(acts) == merged | unmerged | by_hand | {busy}
    assert {n for n, a in acts.items() if a["result"] == "would do"} == merged
    assert all(acts[n]["detail"].startswith("unmerged") for n in unmerged)
    for name in by_hand:
        assert acts[name]["result"] == "kept", acts[name]
        assert "not created by a run of this EMDX_HOME" in acts[name]["detail"]
    assert acts[busy]["result"] == "kept" and "active" in acts[busy]["detail"]
    assert str(merged_dir) in acts[str(merged_row.branch)]["detail"]
    assert_same(before, _snapshot(git_repo))

    # Not a terminal and no --yes: refuses, deletes nothing.
    refused = cli("cleanup", "branches", cwd=git_repo, input=b"y\n")
    assert "--yes" in one_line_error(refused, code=2)  # a usage error
    refused_force = cli("cleanup", "branches", "--force", cwd=git_repo)
    one_line_error(refused_force, code=2)
    assert_same(before, _snapshot(git_repo))

    done = cli("cleanup", "branches", "--yes", "--json", cwd=git_repo)
    assert done.code == 0, done
    acts = _by_target(parse_json(done.stdout))
    assert {n for n, a in acts.items() if a["result"] == "done"} == merged
    for name in merged:
        assert not branch_exists(git_repo, name), name
    for name in [*unmerged, *by_hand, busy, "feature-keep", "main"]:
        assert branch_exists(git_repo, name), name
    assert not merged_dir.exists() and not later_dir.exists()
    listed = worktrees(git_repo)
    assert str(merged_dir) not in listed
    assert listed[str(unmerged_dir)] == unmerged_row.branch
    assert listed[str(busy_dir)] == busy
    assert git(git_repo, "rev-parse", "HEAD") == git(git_repo, "rev-parse", "main")

    # --force deletes unmerged ones (worktree first) but never the branch of a running run.
    forced = cli("cleanup", "branches", "--force", "--yes", "--json", cwd=git_repo)
    assert forced.code == 0, forced
    acts = _by_target(parse_json(forced.stdout))
    assert {n for n, a in acts.items() if a["result"] == "done"} == unmerged
    assert acts[busy]["result"] == "kept"
    for name in unmerged:
        assert not branch_exists(git_repo, name), name
    assert not unmerged_dir.exists()
    assert set(worktrees(git_repo)) == {str(git_repo), str(busy_dir)}
    assert branch_exists(git_repo, busy) and busy_dir.is_dir()
    for name in by_hand:
        assert branch_exists(git_repo, name), name
    row = runs.get(busy_id)
    assert row.status.value == "running" and runs.service.runner_alive(row)

    # Once the run is over its branch is an ordinary merged exec branch.
    killed = cli("exec", "kill", str(busy_id))
    assert killed.code == 0, killed
    runs.wait_final(busy_id)
    wait_until(lambda: not runs.service.runner_alive(runs.get(busy_id)), 15)
    last = cli("cleanup", "branches", "--yes", "--json", cwd=git_repo)
    assert last.code == 0, last
    assert _by_target(parse_json(last.stdout))[busy]["result"] == "done"
    assert not branch_exists(git_repo, busy) and not busy_dir.exists()
    assert set(worktrees(git_repo)) == {str(git_repo)}
    remaining = git(git_repo, "branch", "--list", "--format=%(refname:short)", "exec-*")
    assert set(remaining.split()) == by_hand


def test_cleanup_branches_nothing_to_do_and_outside_a_repo(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    empty = runs.cli("cleanup", "branches", "--json", cwd=git_repo)
    assert empty.code == 0, empty
    assert parse_json(empty.stdout) == {"dry_run": False, "actions": []}
    # Only unmerged branches: nothing would be deleted, so no confirmation is needed.
    doc = runs.doc("# Wip\nFAKE:events=1\n", title="Wip")
    row = runs.wait_final(runs.start(doc, "--worktree", cwd=git_repo))
    commit_file(Path(str(row.working_dir)), "wip.txt", "wip\n", "wip")
    before = _snapshot(git_repo)
    kept = runs.cli("cleanup", "branches", cwd=git_repo)
    assert kept.code == 0, kept
    assert str(row.branch) in kept.stdout and "unmerged" in kept.stdout
    assert_same(before, _snapshot(git_repo))

    plain = tmp_path / "elsewhere"
    plain.mkdir()
    for extra in ([], ["--dry-run"], ["--yes", "--json"]):
        done = runs.cli("cleanup", "branches", *extra, cwd=plain)
        assert "git" in one_line_error(done)
        assert done.stdout == ""


def test_cleanup_branches_deletes_merged_branch_when_head_is_not_the_base(
    runs: Runs, git_repo: Path
) -> None:
    """A branch merged into main is deleted even when the checkout is on another branch.

    `git branch -d` checks "merged into HEAD", not into the base emdx reported, so with HEAD on an
    older branch the deletion fails although the plan said "merged into main".
    """
    git(git_repo, "branch", "older")  # at the initial commit
    doc = runs.doc("# Done\nFAKE:events=1\n", title="Done")
    row = runs.wait_final(runs.start(doc, "--worktree", cwd=git_repo))
    branch = str(row.branch)
    commit_file(Path(str(row.working_dir)), "feature.txt", "done\n", "feature")
    git(git_repo, "merge", "-q", "--ff-only", branch)
    git(git_repo, "checkout", "-q", "older")
    done = runs.cli("cleanup", "branches", "--yes", "--json", cwd=git_repo)
    assert done.code == 0, done
    [action] = parse_json(done.stdout)["actions"]
    assert action["target"] == branch
    assert action["result"] == "done", action
    assert not branch_exists(git_repo, branch)


def test_worktree_dir_is_private_under_a_permissive_umask(runs: Runs, git_repo: Path) -> None:
    """The worktree directory is private even under a permissive umask."""
    doc = runs.doc("# Umask\nFAKE:events=1\n", title="Umask")
    old = os.umask(0o002)
    try:
        execution_id = runs.start(doc, "--worktree", cwd=git_repo)
    finally:
        os.umask(old)
    row = runs.wait_final(execution_id)
    assert row.status.value == "completed", row
    assert stat.S_IMODE(Path(str(row.working_dir)).stat().st_mode) == 0o700


def test_cleanup_branches_handles_a_worktree_dir_removed_by_hand(
    runs: Runs, git_repo: Path
) -> None:
    doc = runs.doc("# Gone\nFAKE:events=1\n", title="Gone")
    execution_id = runs.start(doc, "--worktree", cwd=git_repo)
    row = runs.wait_final(execution_id)
    assert row.status.value == "completed", row
    workdir = Path(str(row.working_dir))

    shutil.rmtree(workdir)  # still registered with git ("prunable")
    assert str(workdir) in worktrees(git_repo)
    done = runs.cli("cleanup", "branches", "--yes", "--json", cwd=git_repo)
    assert done.code == 0, done
    [action] = parse_json(done.stdout)["actions"]
    assert (action["target"], action["result"]) == (row.branch, "done"), action
    assert not branch_exists(git_repo, str(row.branch))
    assert set(worktrees(git_repo)) == {str(git_repo)}


def test_cleanup_branches_of_another_home_never_deletes_a_live_runs_worktree(
    runs: Runs, git_repo: Path, tmp_path: Path
) -> None:
    """Two EMDX_HOMEs can run in one repository. The branch of a live run of one home is in use:
    `cleanup branches` run with the other home must not delete it (and its worktree under the
    running agent), not even with --force."""
    doc = runs.doc("# Live elsewhere\nFAKE:sleep=30\n", title="Live elsewhere")
    execution_id = runs.start(doc, "--worktree", cwd=git_repo)
    row = runs.wait_settled(execution_id)
    workdir = Path(str(row.working_dir))
    other = {"EMDX_HOME": str(tmp_path / "other-home")}
    for extra in (["--yes"], ["--force", "--yes"]):
        done = runs.cli("cleanup", "branches", *extra, "--json", cwd=git_repo, env=other)
        assert done.code == 0, done
        assert workdir.is_dir(), f"deleted the worktree of a live run: {done.stdout}"
        assert branch_exists(git_repo, str(row.branch)), done.stdout
        assert worktrees(git_repo).get(str(workdir)) == row.branch
    now = runs.get(execution_id)
    assert now.status.value == "running" and runs.service.runner_alive(now)


def test_cleanup_branches_with_nothing_deletable_is_no_dry_run_and_says_why_in_full(
    runs: Runs, git_repo: Path
) -> None:
    """Issue 11 item 14: without --dry-run and with nothing deletable, `cleanup branches` said
    "(dry run: nothing changed)" and `"dry_run": true`; and at 80 columns the detail was cut,
    hiding why a branch was kept. It wraps now: every word of the reason is printed."""
    git(git_repo, "checkout", "-q", "-b", "exec-7-made-by-hand")
    commit_file(git_repo, "mine.txt", "by hand\n", "work of a person")
    git(git_repo, "checkout", "-q", "main")
    reason = "not created by a run of this EMDX_HOME in this repository"

    as_json = runs.cli("cleanup", "branches", "--json", cwd=git_repo)
    assert as_json.code == 0, as_json
    report = parse_json(as_json.stdout)
    assert report["dry_run"] is False
    [action] = report["actions"]
    assert action["result"] == "kept" and action["detail"].endswith(reason)

    text = runs.cli("cleanup", "branches", cwd=git_repo, env={"COLUMNS": "80"})
    assert text.code == 0, text
    lines = text.stdout.splitlines()
    assert lines[0] == "branches"
    assert "dry run" not in text.stdout
    assert all(len(line) <= 80 for line in lines), lines
    header = lines[1]
    start, end = header.index("detail"), header.index("result")
    column = " ".join(line[start:end].strip() for line in lines[2:])
    assert column == action["detail"], lines
    assert len(lines) > 3  # it did not fit on one line: it was wrapped, not cut
    assert "…" not in text.stdout

    dry = runs.cli("cleanup", "branches", "--dry-run", cwd=git_repo, env={"COLUMNS": "80"})
    assert dry.stdout.splitlines()[0] == "branches (dry run: nothing changed)"
    assert branch_exists(git_repo, "exec-7-made-by-hand")


def _locked(repo: Path) -> set[str]:
    """The worktrees `git worktree list` says are locked."""
    found, path = set(), None
    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree ") :]
        elif line.startswith("locked") and path:
            found.add(path)
    return found


def test_a_namesake_worktree_of_another_home_is_never_unlocked_or_forgotten(
    git_repo: Path, tmp_path: Path
) -> None:
    """Two homes holding a run directory of the same key (a home copied to make a second one)
    in one repository: ending one's worktree unlocks and unregisters that one only, by the
    path git registered; asking for a third home's, where nothing is registered, touches
    nothing."""
    from emdx.system import git as emdx_git

    key = "7-1796000000000000-42-0a1b2c3d"
    ours, theirs = (tmp_path / home / "runs" / key for home in ("home-a", "home-b"))
    for path, branch in ((theirs, "exec-7-theirs"), (ours, "exec-7-ours")):
        path.parent.mkdir(parents=True)
        assert emdx_git.add_worktree(git_repo, path, branch).ok
    assert _locked(git_repo) == {str(ours), str(theirs)}
    nowhere = tmp_path / "home-c" / "runs" / key
    assert not emdx_git.unlock_worktree(git_repo, nowhere)
    assert emdx_git.forget_worktree(git_repo, nowhere) is None
    assert _locked(git_repo) == {str(ours), str(theirs)}

    assert emdx_git.unlock_worktree(git_repo, ours)
    assert _locked(git_repo) == {str(theirs)}
    shutil.rmtree(ours)
    forgotten = emdx_git.forget_worktree(git_repo, ours)
    assert forgotten is not None and forgotten.ok
    assert worktrees(git_repo) == {str(git_repo): "main", str(theirs): "exec-7-theirs"}
    assert _locked(git_repo) == {str(theirs)} and theirs.is_dir()
