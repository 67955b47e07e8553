"""Textual is imported only by `emdx gui`: not by `import emdx.cli`, not by `emdx --help`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from testkit import imported_by


def textual_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] == "textual" or m.startswith("emdx.tui"))


def test_import_emdx_cli_does_not_import_textual() -> None:
    code = (
        "import sys, emdx.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual' "
        "or m.startswith('emdx.tui')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"`import emdx.cli` imported {done.stdout.strip()}"


@pytest.mark.parametrize("args", [["--help"], ["gui", "--help"]])
def test_help_does_not_import_textual(args: list[str]) -> None:
    modules, done = imported_by(["-m", "emdx", *args])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gui" in done.stdout
    assert "emdx.cli" in modules
    assert textual_modules(modules) == [], f"`emdx {' '.join(args)}` imported textual"


def test_probe_sees_textual_when_it_is_imported() -> None:
    """The probe itself works: importing the TUI shows up as textual modules."""
    modules, done = imported_by(["-c", "import emdx.tui.app"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "textual" in modules
    assert "emdx.tui.app" in textual_modules(modules)


def test_tui_does_not_import_the_cli() -> None:
    """A shell never imports the other shell (DESIGN §1): what both need is in `emdx.format`."""
    modules, done = imported_by(["-c", "import emdx.tui.app"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "emdx.format" in modules
    assert sorted(m for m in modules if m.split(".")[:2] == ["emdx", "cli"]) == []
