"""`emdx gui`: the terminal UI (Textual is imported only here, only when asked for)."""

import typer


def gui() -> None:
    """Open the terminal UI: browse documents, execute them, watch and kill runs."""
    from emdx.tui.app import run

    run()


def register(app: typer.Typer) -> None:
    app.command("gui")(gui)
