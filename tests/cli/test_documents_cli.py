"""Document commands through the real `python -m emdx` entry point (exit codes, stdout, stderr)."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import Cli, CliResult, one_line_error

from emdx import __version__
from emdx.service import Service

SAVED = re.compile(r"^saved #(\d+): (.*?)(?:  tags: (.*))?$")


# -- helpers -------------------------------------------------------------------------------------


def saved_id(result: CliResult) -> int:
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    match = SAVED.match(result.stdout.strip())
    assert match, result.stdout
    return int(match.group(1))


def db_file(home: Path) -> Path:
    return home / "knowledge.db"


def dump(home: Path) -> list[str]:
    conn = sqlite3.connect(str(db_file(home)))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def seed(content: str = "# Seed doc\n\nseeded body", tags: str | None = "note") -> int:
    """A document saved in process (fast), in the EMDX_HOME the subprocesses will use."""
    with Service() as service:
        return service.save_document(content, tags=tags, detect=False).id


def json_out(result: CliResult) -> Any:
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


# -- save ----------------------------------------------------------------------------------------


def test_save_from_file_takes_title_from_first_heading(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "plan.md"
    content = "\n\n## Déploiement 🚀 plan\n\nשלום 世界 body\n"
    source.write_text(content, encoding="utf-8")
    result = cli("save", str(source), "--tags", "plan,note,Notes", "--project", "proj")
    doc_id = saved_id(result)
    saved = SAVED.match(result.stdout.strip())
    assert saved is not None and saved.groups()[1:] == ("Déploiement 🚀 plan", "🎯, 📝")
    view = json_out(cli("view", str(doc_id), "--json"))
    assert view["content"] == content
    assert view["title"] == "Déploiement 🚀 plan"
    assert view["project"] == "proj"
    assert sorted(view["tags"]) == sorted(["🎯", "📝"])


def test_save_from_stdin_with_title_option(cli: Cli) -> None:
    result = cli("save", "--title", "  Given   title ", input="# Heading\n\nbody ✨\n")
    doc_id = saved_id(result)
    assert result.stdout.strip() == f"saved #{doc_id}: Given title"
    view = json_out(cli("view", str(doc_id), "--json"))
    assert view["title"] == "Given title"
    assert view["content"] == "# Heading\n\nbody ✨\n"
    assert view["tags"] == []
    # `-` means stdin too.
    assert saved_id(cli("save", "-", input="dash input")) == doc_id + 1


def test_save_strips_a_utf8_bom(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "bom.md"
    source.write_bytes("\ufeff# Bom title\nx".encode())
    doc_id = saved_id(cli("save", str(source)))
    assert json_out(cli("view", str(doc_id), "--json"))["content"] == "# Bom title\nx"


def _git_init(path: Path) -> None:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True, capture_output=True)


def test_save_detects_project_from_git_repository(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "my-repo"
    _git_init(repo)
    (repo / "sub" / "dir").mkdir(parents=True)
    in_repo = saved_id(cli("save", input="in repo", cwd=repo / "sub" / "dir"))
    outside_dir = tmp_path / "plain"
    outside_dir.mkdir()
    outside = saved_id(
        cli(
            "save", input="outside", cwd=outside_dir, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)}
        )
    )
    explicit = saved_id(cli("save", "--project", "chosen", input="explicit", cwd=repo))
    docs = {d["id"]: d for d in json_out(cli("list", "--json"))}
    assert docs[in_repo]["project"] == "my-repo"
    assert docs[outside]["project"] is None
    assert docs[explicit]["project"] == "chosen"


# -- list / view / find --------------------------------------------------------------------------


def test_list_human_json_and_filters(cli: Cli) -> None:
    a = saved_id(cli("save", "--project", "p1", "--tags", "bug", input="# Alpha doc\nx"))
    b = saved_id(cli("save", "--project", "p2", "--tags", "note", input="# Beta doc\ny"))
    c = saved_id(cli("save", "--project", "p1", input="# Gamma doc\nz"))

    human = cli("list")
    assert human.code == 0 and human.stderr == ""
    assert human.stdout.index("Gamma doc") < human.stdout.index("Beta doc")
    assert human.stdout.index("Beta doc") < human.stdout.index("Alpha doc")

    listed = json_out(cli("list", "--json"))
    assert [d["id"] for d in listed] == [c, b, a]
    assert all("content" not in d for d in listed)
    assert listed[1]["tags"] == ["📝"]
    assert [d["id"] for d in json_out(cli("list", "--json", "--project", "p1"))] == [c, a]
    assert [d["id"] for d in json_out(cli("list", "--json", "--tags", "fix"))] == [a]
    assert [d["id"] for d in json_out(cli("list", "--json", "--limit", "1"))] == [c]
    assert json_out(cli("list", "--json", "--project", "none-such")) == []
    empty = cli("list", "--project", "none-such")
    assert (empty.code, empty.stdout.strip()) == (0, "no documents")


def test_list_prints_titles_tags_and_projects_literally(cli: Cli) -> None:
    """Square brackets in user text are text, not rich markup (`- [x] done`, `[/]`)."""
    with Service() as service:
        service.save_document("a", title="- [x] ship it", detect=False)
        service.save_document("b", title="[bold]loud[/bold]", detect=False)
        service.save_document("c", title="closing [/] tag", tags="[/]", project="[p]", detect=False)
    result = cli("list")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    for text in ("- [x] ship it", "[bold]loud[/bold]", "closing [/] tag", "[p]"):
        assert text in result.stdout, (text, result.stdout)


def test_view_raw_json_and_access_count(cli: Cli) -> None:
    doc_id = seed("# Viewed 📖\n\nline one\nline two")
    plain = cli("view", str(doc_id))
    assert (plain.code, plain.stderr) == (0, "")
    assert plain.stdout == "# Viewed 📖\n\nline one\nline two\n"
    raw = cli("view", str(doc_id), "--raw")
    assert raw.stdout == "# Viewed 📖\n\nline one\nline two"  # byte-exact: no newline added
    data = json_out(cli("view", str(doc_id), "--json"))
    assert data["id"] == doc_id
    assert data["title"] == "Viewed 📖"
    assert data["tags"] == ["📝"]
    assert data["access_count"] == 2  # the two views before this one
    assert json_out(cli("view", str(doc_id), "--json"))["access_count"] == 3


def test_find_text_tags_and_json(cli: Cli) -> None:
    title_hit = seed("# Pangolin guide\n\nscales", tags="note")
    body_hit = seed("# Other\n\nA pangolin appears here.", tags="bug")
    unrelated = seed("# Unrelated\n\nnothing", tags="note")
    hits = json_out(cli("find", "pangolin", "--json"))
    assert [h["id"] for h in hits] == [title_hit, body_hit]
    assert all({"rank", "snippet", "title", "tags"} <= set(h) for h in hits)
    assert [h["id"] for h in json_out(cli("find", "pangolin", "--tags", "bug", "--json"))] == [
        body_hit
    ]
    human = cli("find", "pangolin")
    assert human.code == 0
    assert human.stdout.splitlines()[0].startswith(f"#{title_hit}  Pangolin guide")
    assert f"#{body_hit}  Other" in human.stdout
    tagged_only = json_out(cli("find", "--tags", "note", "--json"))
    assert {h["id"] for h in tagged_only} == {title_hit, unrelated}
    none = cli("find", "no-such-word-anywhere")
    assert (none.code, none.stdout.strip()) == (0, "no matches")
    odd = cli("find", 'NEAR( "unbalanced * foo-bar')
    assert odd.code == 0 and "Traceback" not in odd.stderr


# -- tags ----------------------------------------------------------------------------------------


def test_tag_untag_and_tags(cli: Cli) -> None:
    doc_id = seed(tags=None)
    added = cli("tag", str(doc_id), "note", "plan", "Python")
    assert added.code == 0, added.stderr
    assert added.stdout.strip().startswith(f"#{doc_id}: added 📝, 🎯, python")
    again = cli("tag", str(doc_id), "notes")
    assert "no new tags" in again.stdout
    removed = cli("untag", str(doc_id), "plan", "bug")
    assert removed.code == 0
    assert f"#{doc_id}: removed 🎯" in removed.stdout
    assert json_out(cli("view", str(doc_id), "--json"))["tags"] == sorted(["📝", "python"])

    seed("second", tags="note")
    counts = json_out(cli("tags", "--json"))
    assert counts == [{"name": "📝", "count": 2}, {"name": "python", "count": 1}]
    human = cli("tags")
    assert human.code == 0
    assert human.stdout.splitlines()[0].split() == ["2", "📝", "note"]


# -- delete / restore ----------------------------------------------------------------------------


def test_delete_and_restore(cli: Cli) -> None:
    keep = seed("# Keep me\n\nmarmot")
    gone = seed("# Trash me\n\nmarmot")
    deleted = cli("delete", str(gone))
    assert (deleted.code, deleted.stderr) == (0, "")
    assert f"#{gone}" in deleted.stdout and "Trash me" in deleted.stdout
    assert [d["id"] for d in json_out(cli("list", "--json"))] == [keep]
    assert [d["id"] for d in json_out(cli("list", "--json", "--deleted"))] == [gone]
    assert [h["id"] for h in json_out(cli("find", "marmot", "--json"))] == [keep]
    one_line_error(cli("view", str(gone)), f"document {gone} not found", "restore")
    one_line_error(cli("delete", str(gone)))
    restored = cli("restore", str(gone))
    assert (restored.code, restored.stdout.strip()) == (0, f"restored #{gone}: Trash me")
    assert {d["id"] for d in json_out(cli("list", "--json"))} == {keep, gone}
    one_line_error(cli("restore", str(gone)), "not deleted")


# -- error paths: exit 1, one line, no traceback, nothing written --------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("view", "999"),
        ("view", "999", "--json"),
        ("tag", "999", "note"),
        ("untag", "999", "note"),
        ("delete", "999"),
        ("restore", "999"),
    ],
)
def test_unknown_document_id(cli: Cli, isolated_env: Path, args: tuple[str, ...]) -> None:
    seed()
    before = dump(isolated_env)
    one_line_error(cli(*args), "999", "not found")
    assert dump(isolated_env) == before


def _write_whitespace(tmp: Path) -> str:
    (tmp / "blank.md").write_text("  \n\t\n   \n")
    return str(tmp / "blank.md")


def _write_binary(tmp: Path) -> str:
    (tmp / "blob.bin").write_bytes(b"PK\x03\x04\x00\x00binary\x00data")
    return str(tmp / "blob.bin")


def _write_bad_utf8(tmp: Path) -> str:
    (tmp / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    return str(tmp / "latin1.txt")


def _write_too_big(tmp: Path) -> str:
    with (tmp / "huge.md").open("wb") as handle:
        handle.write(b"# big\n")
        handle.write(b"x" * (17 * 1024 * 1024))
    return str(tmp / "huge.md")


def _missing(tmp: Path) -> str:
    return str(tmp / "does-not-exist.md")


def _directory(tmp: Path) -> str:
    (tmp / "a-dir").mkdir()
    return str(tmp / "a-dir")


def _under_a_file(tmp: Path) -> str:
    # Root can read a chmod 000 file, so "unreadable" is a path whose parent is a regular file.
    (tmp / "plain.txt").write_text("x")
    return str(tmp / "plain.txt" / "child.md")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_write_whitespace, "empty"),
        (_write_binary, "binary"),
        (_write_bad_utf8, "UTF-8"),
        (_write_too_big, "MiB"),
        (_missing, "no such file"),
        (_directory, "directory"),
        (_under_a_file, "cannot read"),
    ],
    ids=["whitespace", "binary", "bad-utf8", "too-big", "missing", "directory", "under-a-file"],
)
def test_save_refuses_unusable_files(
    cli: Cli, isolated_env: Path, tmp_path: Path, make: Callable[[Path], str], needle: str
) -> None:
    seed()
    before = dump(isolated_env)
    source = make(tmp_path)
    line = one_line_error(cli("save", source), needle)
    assert Path(source).name in line
    assert dump(isolated_env) == before


@pytest.mark.parametrize(
    "data", [b"", b"  \n\n\t ", b"\x00\x01\x02"], ids=["empty", "blank", "nul"]
)
def test_save_refuses_unusable_stdin(cli: Cli, isolated_env: Path, data: bytes) -> None:
    seed()
    before = dump(isolated_env)
    one_line_error(cli("save", input=data), "stdin")
    assert dump(isolated_env) == before


def test_command_lines_that_ask_for_nothing_are_usage_errors(cli: Cli, isolated_env: Path) -> None:
    """Issue 11 item 17: these exited 1 (an emdx error); a command line that asks for nothing
    usable is a usage error, exit 2, still one line and nothing written."""
    doc_id = seed()
    before = dump(isolated_env)
    one_line_error(cli("find"), "--tags", code=2)
    one_line_error(cli("find", "--tags", ""), "--tags", code=2)
    one_line_error(cli("tag", str(doc_id), ""), "tag", code=2)
    one_line_error(cli("tag", str(doc_id), ","), "tag", code=2)
    one_line_error(cli("untag", str(doc_id), " "), "tag", code=2)
    one_line_error(cli("exec", "list", "--status", "bogus"), "'bogus'", "running", code=2)
    one_line_error(cli("exec", "list", "--status", ","), "--status", code=2)
    one_line_error(cli("claude", "execute", str(doc_id), "--tools", " , "), "--tools", code=2)
    assert dump(isolated_env) == before


def test_database_that_is_not_a_database(cli: Cli, isolated_env: Path) -> None:
    isolated_env.mkdir(mode=0o700)
    target = db_file(isolated_env)
    garbage = random.Random(42).randbytes(32 * 1024)
    target.write_bytes(garbage)
    for args in (("list",), ("save",), ("view", "1"), ("find", "x")):
        line = one_line_error(cli(*args, input="some content"), str(target))
        assert "not a usable emdx database" in line
        assert target.read_bytes() == garbage


def test_emdx_home_that_cannot_be_created(cli: Cli, tmp_path: Path) -> None:
    """As root, chmod cannot make a directory read-only; a path under a regular file can't exist."""
    blocker = tmp_path / "blocker"
    blocker.write_text("i am a file")
    home = blocker / "emdx-home"
    result = cli("save", input="content", env={"EMDX_HOME": str(home)})
    assert result.code == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("emdx: error: ")]
    assert len(errors) == 1 and lines[0] == errors[0], result.stderr
    assert str(home) in errors[0]
    # Anything after the error line is a suggested fix (EnvironmentProblem), never more errors.
    assert all(line.startswith("  fix: ") for line in lines[1:]), result.stderr
    assert blocker.read_text() == "i am a file"
    assert not home.exists()


# -- usage errors and the entry point ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("view", "abc"),
        ("view", "1.5"),
        ("tag", "x", "note"),
        ("untag", "one", "note"),
        ("delete", "-"),
        ("restore", "1e3"),
        ("tag", "1"),
        ("no-such-command",),
        ("list", "--no-such-option"),
        ("list", "--limit", "0"),
    ],
)
def test_usage_errors_exit_2(cli: Cli, isolated_env: Path, args: tuple[str, ...]) -> None:
    seed()
    before = dump(isolated_env)
    result = cli(*args)
    assert result.code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert dump(isolated_env) == before


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert (result.code, result.stdout.strip(), result.stderr) == (0, f"emdx {__version__}", "")


def test_help_exits_0(cli: Cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("save", "list", "view", "find", "tag", "untag", "tags", "delete", "restore"):
        assert command in result.stdout


def test_importing_the_cli_does_not_import_textual() -> None:
    code = (
        "import sys, emdx.cli, emdx.cli.documents, emdx.cli.render, emdx.service; "
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
