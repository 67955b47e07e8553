"""The layer rules of DESIGN §1, read from the source's import statements and calls (AST):
imports point down, no shell imports the other, nothing below the service imports typer, rich or
textual, SQL and database drivers stay in store/, signals and subprocesses in system/ (and the
runner's agent process)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "emdx"

# Each top-level unit of the package and its layer (higher may import lower, never the reverse).
LAYERS: dict[str, int] = {
    "__main__": 60,
    "cli": 50,
    "tui": 50,
    "format": 40,
    "service": 30,
    "runner": 25,
    "store": 20,
    "system": 20,
    "testing": 20,
    "runlog": 15,
    "smart": 14,
    "agent": 12,
    "masking": 11,
    "tags": 10,
    "paths": 6,
    "models": 5,
    "reasons": 4,
    "settings": 5,
    "jsonio": 3,
    "errors": 3,
    "__init__": 0,
}
SHELLS = ("cli", "tui")
# What a shell may import: it parses, calls the service, renders (format) and maps errors.
SHELL_MAY_IMPORT = frozenset({"service", "format", "models", "errors", "settings", "__init__"})
# Deliberate exceptions, each with its reason.
ALLOWED_EDGES = {
    # `emdx gui` starts the TUI (imported when the command runs, never for --help).
    ("cli/gui.py", "tui"),
    # The supervisor entry point drives the queue and repairs after itself: the service's
    # scheduler and sweep are the one start path and the one repair.
    ("runner/__main__.py", "service"),
    # Given the team's database URL, the command starts again as itself with the URL out of its
    # /proc/PID/cmdline and environ, before anything else runs (`system.spawn`).
    ("cli/__init__.py", "system"),
}
UI_LIBRARIES = ("typer", "rich", "textual", "click")
DATABASE_DRIVERS = ("sqlite3", "psycopg", "psycopg_pool", "procrastinate")
PROCESS_CALLS = {("os", "kill"), ("os", "killpg"), ("os", "fork"), ("os", "execv"),
                 ("os", "execve"), ("os", "execvp"), ("os", "system"), ("os", "popen"),
                 ("os", "spawnv")}  # fmt: skip
PROCESS_HOMES = ("system/", "runner/agent_process.py")
SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE FROM", "CREATE TABLE", "CREATE INDEX",
             "ALTER TABLE", "DROP TABLE", "PRAGMA ")  # fmt: skip
# Driver-level helpers that live outside store/ on purpose.
DRIVER_HOMES = ("store/", "testing/")


@dataclass(frozen=True)
class Import:
    file: str  # relative to src/emdx
    line: int
    module: str  # absolute dotted name
    lazy: bool  # inside a function


def _files() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield str(path.relative_to(SRC)), ast.parse(path.read_text(), str(path))


def _unit(relative: str) -> str:
    first = relative.split("/", 1)[0]
    return first[:-3] if first.endswith(".py") else first


def _imports(relative: str, tree: ast.Module) -> Iterator[Import]:
    package = ["emdx", *relative[:-3].split("/")][:-1]  # the package a module is in
    lazy_lines = {
        node.lineno
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Import | ast.ImportFrom)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(relative, node.lineno, alias.name, node.lineno in lazy_lines)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            lazy = node.lineno in lazy_lines
            yield Import(relative, node.lineno, module, lazy)
            if module == "emdx":  # `from emdx import paths, runlog`
                for alias in node.names:
                    yield Import(relative, node.lineno, f"emdx.{alias.name}", lazy)


def _target_unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "emdx":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1] if parts[1] in LAYERS else "__init__"


ALL = list(_files())


def test_every_unit_has_a_layer() -> None:
    units = {_unit(relative) for relative, _ in ALL}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


def test_imports_point_down() -> None:
    wrong = []
    for relative, tree in ALL:
        source = _unit(relative)
        for found in _imports(relative, tree):
            target = _target_unit(found.module)
            if target is None or target == source:
                continue
            if (relative, target) in ALLOWED_EDGES:
                continue
            if LAYERS[target] >= LAYERS[source] and not (
                source in SHELLS and target in SHELL_MAY_IMPORT
            ):
                wrong.append(f"{relative}:{found.line} ({source}) imports {found.module}")
    assert wrong == []


def test_shells_only_call_the_service_and_render() -> None:
    """A shell never imports the other shell, nor reaches past the service (store, runner,
    system, run logs, paths)."""
    wrong = []
    for relative, tree in ALL:
        source = _unit(relative)
        if source not in SHELLS:
            continue
        for found in _imports(relative, tree):
            target = _target_unit(found.module)
            if target is None or target == source or (relative, target) in ALLOWED_EDGES:
                continue
            if target not in SHELL_MAY_IMPORT:
                wrong.append(f"{relative}:{found.line} imports {found.module}")
    assert wrong == []


def test_nothing_below_the_shells_imports_a_ui_library() -> None:
    """(`format`, which only the shells import, may use rich's markup escaping.)"""
    wrong = [
        f"{relative}:{found.line} imports {found.module}"
        for relative, tree in ALL
        if _unit(relative) not in (*SHELLS, "__main__", "format")
        for found in _imports(relative, tree)
        if found.module.split(".")[0] in UI_LIBRARIES
    ]
    assert wrong == []


def test_the_cli_imports_textual_only_lazily() -> None:
    """`emdx --help` and `exec list` never load the TUI's libraries."""
    wrong = [
        f"{relative}:{found.line} imports {found.module}"
        for relative, tree in ALL
        if _unit(relative) in ("cli", "__main__")
        for found in _imports(relative, tree)
        if not found.lazy
        and (found.module.split(".")[0] == "textual" or _target_unit(found.module) == "tui")
    ]
    assert wrong == []


def test_database_drivers_and_sql_stay_in_the_store() -> None:
    wrong = []
    for relative, tree in ALL:
        if relative.startswith(DRIVER_HOMES):
            continue
        for found in _imports(relative, tree):
            if found.module.split(".")[0] in DATABASE_DRIVERS:
                wrong.append(f"{relative}:{found.line} imports {found.module}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.lstrip().upper()
                if text.startswith(SQL_WORDS) and ("?" in text or " FROM " in text or
                                                   " SET " in text or "(" in text):  # fmt: skip
                    wrong.append(f"{relative}:{node.lineno} SQL: {node.value[:40]!r}")
    assert wrong == []


def test_signals_and_subprocesses_stay_in_system() -> None:
    wrong = []
    for relative, tree in ALL:
        if relative.startswith(PROCESS_HOMES):
            continue
        for found in _imports(relative, tree):
            if found.module.split(".")[0] in ("subprocess", "multiprocessing", "pty"):
                wrong.append(f"{relative}:{found.line} imports {found.module}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in PROCESS_CALLS
            ):
                wrong.append(f"{relative}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert wrong == []


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """The checks above find a planted breach (a rule that never fires proves nothing)."""
    tree = ast.parse(
        "import subprocess\nimport sqlite3\nfrom emdx.cli import app\nfrom .store import x\n"
        "def f():\n    import textual\n    os.kill(1, 9)\n    q = 'SELECT * FROM t WHERE a = ?'\n"
    )
    found = {i.module: i for i in _imports("service/fake.py", tree)}
    assert set(found) >= {"subprocess", "sqlite3", "emdx.cli", "emdx.service.store", "textual"}
    assert found["textual"].lazy and not found["subprocess"].lazy
    assert _target_unit("emdx.cli") == "cli" and LAYERS["cli"] > LAYERS["service"]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert any(isinstance(n.value, ast.Name) and (n.value.id, n.attr) in PROCESS_CALLS
               for n in calls)  # fmt: skip


def test_shells_never_reach_into_the_store() -> None:
    """`service.store…` from a shell bypasses the service's rules (the sweep, the one status
    writer): the shells call service methods only."""
    wrong = [
        f"{relative}:{node.lineno} uses .store"
        for relative, tree in ALL
        if _unit(relative) in SHELLS
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]
    assert wrong == []
