"""Smart execution plans (emdx.smart): the titles of the documents smart runs save."""

from __future__ import annotations

import pytest

from emdx import smart
from emdx import tags as T
from emdx.models import Document, ExecType


def document(title: str, *tags: str) -> Document:
    return Document(
        id=7,
        title=title,
        content="body",
        project=None,
        created_at=None,
        updated_at=None,
        accessed_at=None,
        access_count=0,
        parent_id=None,
        is_deleted=False,
        deleted_at=None,
        tags=tags,
    )


@pytest.mark.parametrize(
    ("title", "tag", "saved"),
    [
        ("Analysis: Caching", T.ANALYSIS, "Gameplan: Caching"),
        ("Gameplan: Analysis: Caching", T.ANALYSIS, "Gameplan: Caching"),
        ("analysis: Caching", T.NOTE, "Analysis: Caching"),
        ("Caching", T.NOTE, "Analysis: Caching"),
        ("Analysis:", T.ANALYSIS, "Gameplan: Analysis:"),
    ],
)
def test_known_prefixes_are_not_stacked(title: str, tag: str, saved: str) -> None:
    """Issue 11 item 19: the gameplan of "Analysis: X" was titled "Gameplan: Analysis: X"."""
    plan = smart.plan_for(document(title, tag))
    assert plan.exec_type in (ExecType.NOTE, ExecType.ANALYSIS)
    assert plan.output_title == saved
    assert f'titled "{saved}"' in plan.prompt
