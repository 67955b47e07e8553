"""Documents: save, read, search, tag, trash — the knowledge base half of the service."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emdx import tags as tagvocab
from emdx.errors import InvalidInputError, UsageError
from emdx.models import Document, SearchHit, TagCount
from emdx.store import Store
from emdx.system import git

# Documents are prompts; beyond this they are surely a mistake (a log file, a binary) and would
# make every list and search slow.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
TITLE_MAX = 200


def title_from_content(content: str, fallback: str) -> str:
    """The first non-empty line (a markdown heading without its `#`s), else `fallback`."""
    for line in content.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:TITLE_MAX]
    return fallback[:TITLE_MAX]


def decode_document(data: bytes, source: str) -> str:
    """Bytes from a file or stdin as document text, or a clear error for what cannot be one."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidInputError(
            f"{source} is {len(data) / 1048576:.1f} MiB; documents are limited to "
            f"{MAX_DOCUMENT_BYTES // 1048576} MiB"
        )
    if b"\x00" in data:
        raise InvalidInputError(f"{source} looks binary (contains NUL bytes); emdx stores text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{source} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise InvalidInputError(f"{source} is empty; nothing to save")
    return text


def detect_project(cwd: Path | None = None) -> str | None:
    top = git.toplevel(cwd or Path.cwd())
    return top.name if top else None


@dataclass(frozen=True)
class SavedDocument:
    id: int
    title: str
    project: str | None
    tags: tuple[str, ...]


class Documents:
    """The document operations, over one open store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def save(
        self,
        content: str,
        title: str | None = None,
        tags: Sequence[str] | str | None = None,
        project: str | None = None,
        detect: bool = True,
        parent_id: int | None = None,
        source: str = "input",
    ) -> SavedDocument:
        if not content.strip():
            raise InvalidInputError(f"{source} is empty; nothing to save")
        if len(content.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
            raise InvalidInputError(
                f"{source} is larger than {MAX_DOCUMENT_BYTES // 1048576} MiB; not saved"
            )
        clean_title = (title or "").strip() or title_from_content(content, source)
        clean_title = re.sub(r"\s+", " ", clean_title)[:TITLE_MAX]
        tag_list = tagvocab.parse_list(tags)
        if project is None and detect:
            project = detect_project()
        doc_id = self.store.documents.save(clean_title, content, project, tag_list, parent_id)
        return SavedDocument(doc_id, clean_title, project, tuple(tag_list))

    def get(self, doc_id: int, touch: bool = False) -> Document:
        doc = self.store.documents.get(doc_id)
        if touch:
            self.store.documents.touch(doc_id)
        return doc

    def listing(
        self,
        project: str | None = None,
        limit: int | None = 50,
        deleted: bool = False,
        tags: Sequence[str] | str | None = None,
    ) -> list[Document]:
        return self.store.documents.list_documents(
            project=project, limit=limit, deleted=deleted, tags=tagvocab.parse_list(tags)
        )

    def find(
        self,
        query: str,
        tags: Sequence[str] | str | None = None,
        project: str | None = None,
        limit: int = 20,
        snippets: bool = True,
    ) -> list[SearchHit]:
        tag_list = tagvocab.parse_list(tags)
        if not query.strip():
            if not tag_list:
                raise UsageError("give a search query or --tags")
            docs = self.store.documents.list_documents(project=project, limit=limit, tags=tag_list)
            return [SearchHit(doc, 0.0, "") for doc in docs]
        return self.store.documents.search(query, tag_list, project, limit, snippets)

    def tag(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        tag_list = tagvocab.parse_list(list(tags))
        if not tag_list:
            raise UsageError("give at least one tag")
        return self.store.documents.add_tags(doc_id, tag_list)

    def untag(self, doc_id: int, tags: Sequence[str]) -> list[str]:
        tag_list = tagvocab.parse_list(list(tags))
        if not tag_list:
            raise UsageError("give at least one tag")
        return self.store.documents.remove_tags(doc_id, tag_list)

    def tag_counts(self) -> list[TagCount]:
        return self.store.documents.tag_counts()

    def delete(self, doc_id: int) -> Document:
        doc = self.store.documents.get(doc_id)
        self.store.documents.set_deleted(doc_id, True)
        return doc

    def restore(self, doc_id: int) -> Document:
        self.store.documents.set_deleted(doc_id, False)
        return self.store.documents.get(doc_id)
