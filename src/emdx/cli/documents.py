"""Document commands: save, list, view, find, tag, untag, tags, delete, restore."""

import sys
from pathlib import Path

import typer

from emdx.cli.render import console, open_service, print_json
from emdx.errors import InvalidInputError, UsageError
from emdx.format import markup_safe, one_line, sanitize, short_time, tag_label, tag_text
from emdx.models import MAX_INT


def _read_source(file: Path | None) -> tuple[bytes, str]:
    if file is None or str(file) == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("give a FILE to save, or pipe the content on stdin")
        return sys.stdin.buffer.read(), "stdin"
    try:
        return file.read_bytes(), str(file)
    except IsADirectoryError as exc:
        raise InvalidInputError(f"{file} is a directory, not a file") from exc
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{file}: no such file") from exc
    except PermissionError as exc:
        raise InvalidInputError(f"{file}: permission denied") from exc
    except OSError as exc:
        raise InvalidInputError(f"{file}: cannot read ({exc.strerror})") from exc


def save(
    file: Path | None = typer.Argument(None, help="File to save; stdin when omitted or '-'."),
    title: str | None = typer.Option(None, "--title", "-t", help="Title (default: first line)."),
    tags: str | None = typer.Option(
        None, "--tags", help="Comma-separated tags or aliases (a tag may contain spaces)."
    ),
    project: str | None = typer.Option(
        None, "--project", "-p", help="Project (default: the current git repository's name)."
    ),
) -> None:
    """Save a document from FILE or stdin."""
    data, source = _read_source(file)
    from emdx.service import decode_document

    content = decode_document(data, source)
    with open_service() as service:
        saved = service.save_document(content, title or None, tags, project, source=source)
    tags = f"  tags: {tag_text(saved.tags)}" if saved.tags else ""
    print(f"saved #{saved.id}: {one_line(saved.title)}{tags}")


def list_documents(
    project: str | None = typer.Option(None, "--project", "-p", help="Only this project."),
    tags: str | None = typer.Option(
        None, "--tags", help="Only documents with all these tags (comma-separated)."
    ),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=MAX_INT, help="At most this many."),
    deleted: bool = typer.Option(False, "--deleted", help="List the trash instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List documents, newest first."""
    with open_service() as service:
        docs = service.list_documents(project, limit, deleted, tags)
    if as_json:
        print_json([d.to_dict(with_content=False) for d in docs])
        return
    if not docs:
        print("no documents" + (" in the trash" if deleted else ""))
        return
    from emdx.cli.table import print_table

    rows = [
        (str(doc.id), doc.title, tag_text(doc.tags), doc.project or "", short_time(doc.created_at))
        for doc in docs
    ]
    print_table(("id", "title", "tags", "project", "created"), rows, right=(0,), flexible=1)


def view(
    doc_id: int = typer.Argument(..., metavar="ID", help="Document id."),
    raw: bool = typer.Option(
        False,
        "--raw",
        "-r",
        help="Print the content exactly as stored (control characters too), unrendered.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a document: rendered on a terminal, else its text; control characters (terminal
    escape sequences) are shown escaped unless --raw."""
    with open_service() as service:
        doc = service.get_document(doc_id, touch=True)
    if as_json:
        print_json(doc.to_dict())
        return
    if raw:
        # Byte-exact, so that `emdx view ID --raw > FILE` gives back what was saved.
        sys.stdout.flush()
        sys.stdout.buffer.write(doc.content.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
        return
    content = sanitize(doc.content)
    if not sys.stdout.isatty():
        sys.stdout.write(content if content.endswith("\n") else content + "\n")
        return
    from rich.markdown import Markdown
    from rich.rule import Rule

    out = console()
    meta = f"#{doc.id} · {doc.project or 'no project'} · {short_time(doc.created_at)}"
    if doc.tags:
        meta += f" · {', '.join(tag_label(t) for t in doc.tags)}"
    out.print(Rule(markup_safe(one_line(doc.title))))
    out.print(markup_safe(one_line(meta)), style="dim")
    # No terminal hyperlinks: a link's text could hide where it points; show the address.
    out.print(Markdown(content, hyperlinks=False))


def find(
    query: str = typer.Argument("", help="Full-text query (FTS5 syntax; plain words work)."),
    tags: str | None = typer.Option(
        None, "--tags", help="Only documents with all these tags (comma-separated)."
    ),
    project: str | None = typer.Option(None, "--project", "-p", help="Only this project."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=MAX_INT, help="At most this many."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Search documents, best match first."""
    with open_service() as service:
        hits = service.find_documents(query, tags, project, limit)
    if as_json:
        print_json(
            [
                {**h.document.to_dict(with_content=False), "rank": h.rank, "snippet": h.snippet}
                for h in hits
            ]
        )
        return
    if not hits:
        print("no matches")
        return
    for hit in hits:
        doc = hit.document
        tags = f"  {tag_text(doc.tags)}" if doc.tags else ""
        print(f"#{doc.id}  {one_line(doc.title)}{tags}")
        if hit.snippet:
            print(f"    {one_line(' '.join(hit.snippet.split()))}")


def tag(
    doc_id: int = typer.Argument(..., metavar="ID"),
    tags: list[str] = typer.Argument(
        ..., metavar="TAG...", help="Tags or aliases (note, done…); quote one with spaces."
    ),
) -> None:
    """Add tags to a document."""
    with open_service() as service:
        added = service.tag_document(doc_id, tags)
        doc = service.get_document(doc_id)
    state = f"added {tag_text(added)}" if added else "no new tags"
    print(f"#{doc_id}: {state}; tags now: {tag_text(doc.tags) or '(none)'}")


def untag(
    doc_id: int = typer.Argument(..., metavar="ID"),
    tags: list[str] = typer.Argument(..., metavar="TAG..."),
) -> None:
    """Remove tags from a document."""
    with open_service() as service:
        removed = service.untag_document(doc_id, tags)
        doc = service.get_document(doc_id)
    state = f"removed {tag_text(removed)}" if removed else "none of those tags were set"
    print(f"#{doc_id}: {state}; tags now: {tag_text(doc.tags) or '(none)'}")


def tags_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List tags with how many documents carry each."""
    with open_service() as service:
        counts = service.tag_counts()
    if as_json:
        print_json([{"name": c.name, "count": c.count} for c in counts])
        return
    if not counts:
        print("no tags")
        return
    for count in counts:
        print(f"{count.count:6d}  {one_line(tag_label(count.name))}")


def delete(doc_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Move a document to the trash (`emdx restore` brings it back)."""
    with open_service() as service:
        doc = service.delete_document(doc_id)
    print(f"moved #{doc.id} to the trash: {one_line(doc.title)}")


def restore(doc_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Bring a document back from the trash."""
    with open_service() as service:
        doc = service.restore_document(doc_id)
    print(f"restored #{doc.id}: {one_line(doc.title)}")


def register(app: typer.Typer) -> None:
    app.command("save")(save)
    app.command("list")(list_documents)
    app.command("view")(view)
    app.command("find")(find)
    app.command("tag")(tag)
    app.command("untag")(untag)
    app.command("tags")(tags_command)
    app.command("delete")(delete)
    app.command("restore")(restore)
