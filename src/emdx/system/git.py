"""Every git command emdx runs, with configuration no repository can override (DESIGN §8).

A run's worktree, and the repository it shares its `.git` with, are written by an untrusted agent:
it can plant `core.fsmonitor` or a filter driver (commands git runs on `status` and checkout), a
`.git` file pointing at a directory of its own, or swap its directory for a symbolic link. So:
- every call passes `SAFE_CONFIG` as GIT_CONFIG_KEY_n/VALUE_n (key and value apart: a name
  holding `=` cannot be misread; nested git processes inherit them), runs without a shell, with
  the caller's GIT_* location and config variables removed;
- commands that read work-tree files (`status`, `worktree add`) also switch off every filter
  driver the configuration names;
- git runs inside a worktree only with `--git-dir`/`--work-tree` pinned to the registered
  repository's admin directory, after checking that the worktree's `.git` file points there;
- a worktree is named to git by the unique last component of its path (git matches a suffix of
  the paths it registered), never by a path git would resolve through a link.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

SAFE_CONFIG = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.pager", "cat"),
    ("credential.helper", ""),
)

# Location variables would make git ignore the paths we pass; config variables carry settings
# of whatever process started us.
_DROPPED_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXTERNAL_DIFF",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
)


def available() -> str | None:
    """Where git is, or None when it is not installed."""
    return shutil.which("git")


@dataclass(frozen=True)
class GitResult:
    ok: bool
    out: str
    err: str


def _env(settings: list[tuple[str, str]]) -> dict[str, str]:
    """The caller's environment without its git location and config variables, with
    `settings` given as GIT_CONFIG_KEY_n/VALUE_n: key and value apart, so a key holding `=`
    (a filter driver named `x=y`) cannot be misread as `-c key=value` would be; nested git
    processes (submodules) inherit them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROPPED_ENV and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env["GIT_TERMINAL_PROMPT"] = "0"
    # Untranslated messages: a few are read (`git worktree add` saying a branch name is taken).
    env.pop("LC_ALL", None)
    env["LC_MESSAGES"] = "C"
    # A read (status, a dry run) must not rewrite the index behind the user's back.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    for index, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def run(
    args: list[str],
    repo: Path | str | None = None,
    *,
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    no_filters: bool = False,
    timeout: float = 60,
) -> GitResult:
    """`git <args>` in `repo` (or with `git_dir`/`work_tree` pinned); a missing git, a timeout
    or a failure is a failed result, never a raise."""
    binary = shutil.which("git")
    if binary is None:
        return GitResult(False, "", "git is not installed")
    settings = list(SAFE_CONFIG)
    if no_filters:
        settings += _filter_overrides(repo, git_dir)
    argv = [binary]
    if repo is not None and git_dir is None:
        argv += ["-C", str(repo)]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    if work_tree is not None:
        argv.append(f"--work-tree={work_tree}")
    return _run(argv + args, timeout, settings)


def _run(argv: list[str], timeout: float, settings: list[tuple[str, str]]) -> GitResult:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=_env(settings),
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return GitResult(False, "", str(exc))
    out = done.stdout.decode("utf-8", "replace")
    err = done.stderr.decode("utf-8", "replace")
    return GitResult(done.returncode == 0, out.strip("\n"), err.strip())


def _filter_overrides(repo: Path | str | None, git_dir: Path | None) -> list[tuple[str, str]]:
    """Settings that turn off every filter driver (`filter.<name>.clean/smudge/process`) the
    configuration defines: git runs them on files of the work tree, which the agent wrote."""
    binary = shutil.which("git")
    if binary is None:
        return []
    argv = [binary]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    elif repo is not None:
        argv += ["-C", str(repo)]
    pattern = r"^filter\."
    query = [*argv, "config", "--null", "--name-only", "--get-regexp", pattern]
    listing = _run(query, 30, list(SAFE_CONFIG))
    names = set()
    for key in listing.out.split("\0"):
        # filter.<name>.<variable>: the name is everything between, dots and `=` included.
        head, _, variable = key.rpartition(".")
        if head.startswith("filter.") and variable:
            names.add(head[len("filter.") :])
    settings = []
    for name in sorted(names):
        settings += [(f"filter.{name}.{k}", "") for k in ("clean", "smudge", "process")]
        settings.append((f"filter.{name}.required", "false"))
    return settings


def toplevel(cwd: Path | str | None = None) -> Path | None:
    """The resolved top directory of the repository `cwd` (default: the current one) is in."""
    result = run(["rev-parse", "--show-toplevel"], cwd or Path.cwd(), timeout=30)
    return Path(os.path.realpath(result.out)) if result.ok and result.out else None


def root_commit(repo: Path) -> str | None:
    """The repository's first commit (the smallest of its roots): the same in every clone, so
    that team mode tells two repositories of the same name apart. None before any commit."""
    result = run(["rev-list", "--max-parents=0", "HEAD"], repo, timeout=30)
    roots = sorted(result.out.split()) if result.ok else []
    return roots[0] if roots else None


def common_dir(repo: Path) -> Path | None:
    """The repository's shared `.git` directory, resolved."""
    result = run(["rev-parse", "--git-common-dir"], repo, timeout=30)
    if not result.ok or not result.out:
        return None
    path = Path(result.out)
    return Path(os.path.realpath(path if path.is_absolute() else repo / path))


def branch_exists(repo: Path, name: str) -> bool:
    return run(["rev-parse", "--verify", "--quiet", f"refs/heads/{name}"], repo).ok


def branch_name_taken(repo: Path, name: str) -> bool:
    """Whether a branch `name` cannot be created: it exists, or branches below it do
    (`name/x`: a ref cannot be both a file and a directory)."""
    if branch_exists(repo, name):
        return True
    below = run(["for-each-ref", "--count=1", "--format=%(refname)", f"refs/heads/{name}/"], repo)
    return bool(below.out.strip())


# A branch's config carries the key of the run that created it: deleting the branch (`branch -D`,
# by emdx or by hand) drops it, so a name reused later (another home, a fresh database restarting
# ids) never passes for the old run's branch.
_MARK = "emdxrunkey"


def mark_branch(repo: Path, name: str, run_key: str) -> bool:
    return run(["config", f"branch.{name}.{_MARK}", run_key], repo).ok


def branch_mark(repo: Path, name: str) -> str | None:
    """The run key of the run that created `name`, if emdx created it (see `mark_branch`)."""
    result = run(["config", "--get", f"branch.{name}.{_MARK}"], repo)
    return result.out.strip() if result.ok and result.out.strip() else None


def delete_branch(repo: Path, name: str) -> GitResult:
    # -D: callers decide merged-ness against the default branch; `-d` would check HEAD.
    return run(["branch", "-D", name], repo)


def merged_branches(repo: Path, base: str) -> set[str]:
    result = run(["branch", "--merged", base, "--format=%(refname:short)"], repo)
    return set(result.out.splitlines()) if result.ok else set()


def default_branch(repo: Path) -> str:
    """origin's HEAD, else init.defaultBranch if it exists, else main/master, else current."""
    head = run(["symbolic-ref", "--short", "refs/remotes/origin/HEAD"], repo)
    if head.ok and head.out:
        return head.out
    candidates = []
    configured = run(["config", "--get", "init.defaultBranch"], repo)
    if configured.ok and configured.out:
        candidates.append(configured.out)
    candidates += ["main", "master"]
    for name in candidates:
        if branch_exists(repo, name):
            return name
    current = run(["rev-parse", "--abbrev-ref", "HEAD"], repo)
    return current.out if current.ok else "HEAD"


@dataclass(frozen=True)
class Worktree:
    path: str
    branch: str | None
    locked: bool


def worktrees(repo: Path) -> list[Worktree]:
    """The repository's registered worktrees (`git worktree list --porcelain -z`)."""
    listing = run(["worktree", "list", "--porcelain", "-z"], repo)
    found = []
    path: str | None = None
    branch: str | None = None
    locked = False
    for field in [*listing.out.split("\0"), ""]:
        if field == "":
            if path is not None:
                found.append(Worktree(path, branch, locked))
            path, branch, locked = None, None, False
        elif field.startswith("worktree "):
            path = field[len("worktree ") :]
        elif field.startswith("branch refs/heads/"):
            branch = field[len("branch refs/heads/") :]
        elif field == "locked" or field.startswith("locked "):
            locked = True
    return found


def add_worktree(repo: Path, path: Path, branch: str) -> GitResult:
    """A new branch `branch` at HEAD checked out in `path`, locked (unlocked when the run ends,
    so that no cleanup, even another EMDX_HOME's, removes a live run's worktree)."""
    argv = ["worktree", "add", "--lock", "-b", branch, str(path), "HEAD"]
    return run(argv, repo, no_filters=True)


def registered_path(repo: Path, path: Path) -> str | None:
    """The path as git registered the worktree at `path` (compared with each parent resolved,
    the last component as is: a link is never followed), or None when none is there."""
    want = os.path.join(os.path.realpath(path.parent), path.name)
    for tree in worktrees(repo):
        there = os.path.join(
            os.path.realpath(os.path.dirname(tree.path)), os.path.basename(tree.path)
        )
        if there == want:
            return tree.path
    return None


def unlock_worktree(repo: Path, path: Path) -> bool:
    """Unlock the worktree registered at `path`, named by the whole path git registered: git
    matches a worktree's name by path suffix first, and a registered absolute path is a suffix
    of itself only — so a link planted at `path` is never followed, and a namesake (the same
    run key in another home) is never taken for it."""
    registered = registered_path(repo, path)
    return registered is not None and run(["worktree", "unlock", registered], repo).ok


def forget_worktree(repo: Path, path: Path) -> GitResult | None:
    """Unregister the worktree at `path` once its directory is gone — that one only: `git
    worktree prune` would also drop every other worktree whose directory is missing right now
    (the user's on a disk that is not mounted). None when the directory is still there (git
    would delete it itself, following its own rules, not `paths.remove_tree`'s) or nothing is
    registered there."""
    if os.path.lexists(path):
        return None
    registered = registered_path(repo, path)
    if registered is None:
        return None
    return run(["worktree", "remove", "--force", registered], repo)


def admin_dir(repo: Path, path: Path) -> Path | None:
    """The admin directory (`<common>/worktrees/<id>`) of the worktree at `path` when its `.git`
    file can be trusted: a regular file whose `gitdir:` points into the registered repository's
    worktrees directory, whose own `gitdir` file points back at `path/.git`. None otherwise."""
    common = common_dir(repo)
    if common is None:
        return None
    dot_git = path / ".git"
    text = _small_file(dot_git)
    if text is None or not text.startswith("gitdir:"):
        return None
    target = Path(text[len("gitdir:") :].strip())
    target = Path(os.path.realpath(target if target.is_absolute() else path / target))
    if target.parent != common / "worktrees":
        return None
    back = _small_file(target / "gitdir")
    if back is None or os.path.realpath(back) != os.path.realpath(dot_git):
        return None
    return target


def _small_file(path: Path) -> str | None:
    """The first 4 KiB of a regular file, stripped; None for anything else (a link, a FIFO
    that would block, a device): both files `admin_dir` reads can be an agent's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def is_dirty(repo: Path, path: Path) -> bool | None:
    """Uncommitted changes in the worktree at `path`; None when its `.git` is not trusted (see
    `admin_dir`) or git cannot tell, so callers treat it as possibly dirty."""
    admin = admin_dir(repo, path)
    if admin is None:
        return None
    status = run(
        ["status", "--porcelain", "--ignore-submodules=all"],
        git_dir=admin,
        work_tree=path,
        no_filters=True,
    )
    return bool(status.out) if status.ok else None
