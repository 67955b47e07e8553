"""Smart execution: the document's tags choose the kind of run, its prompt and its tools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from emdx import tags as T
from emdx.agent import ANALYSIS_TOOLS, FULL_TOOLS
from emdx.models import Document, ExecType

ANALYSIS_PROMPT = """\
You are analysing a note from a knowledge base. Read it carefully, investigate the working
directory and any files it mentions (read-only: do not change anything), and write a thorough
analysis in Markdown: what the note is really asking, the relevant facts you found, risks, open
questions, and concrete options with trade-offs.

Your final message is saved as a new document titled "Analysis: {title}", so make the final message
the complete analysis itself, not a summary of what you did.

--- NOTE #{doc_id}: {title} ---
{content}
"""

GAMEPLAN_PROMPT = """\
You are turning an analysis into an implementation gameplan. Read the analysis below, check the
facts it relies on in the working directory (read-only: do not change anything), and write a
step-by-step gameplan in Markdown: goal, ordered steps small enough to review one by one, the
files each step touches, how each step is tested, and what is explicitly out of scope.

Your final message is saved as a new document titled "Gameplan: {title}", so make the final
message the complete gameplan itself.

--- ANALYSIS #{doc_id}: {title} ---
{content}
"""

IMPLEMENTATION_PROMPT = """\
You are implementing a gameplan. Work in the current directory{branch_note}. Follow the steps in
order, run the tests after each step, and fix what breaks before moving on. Keep changes focused
on the gameplan. When you are done, reply with a short report: what you changed, how you verified
it, and anything left undone.

--- GAMEPLAN #{doc_id}: {title} ---
{content}
"""


@dataclass(frozen=True)
class Plan:
    """What a run of this document will be."""

    exec_type: ExecType
    prompt: str
    tools: tuple[str, ...]
    output_title: str | None
    output_tags: tuple[str, ...]
    source_tags_on_success: tuple[str, ...]
    wants_worktree: bool


def choose_type(tags: Sequence[str], smart: bool = True) -> ExecType:
    """First match wins: note → analysis, analysis → gameplan, gameplan → implementation."""
    if not smart:
        return ExecType.GENERIC
    if T.NOTE in tags:
        return ExecType.NOTE
    if T.ANALYSIS in tags:
        return ExecType.ANALYSIS
    if T.GAMEPLAN in tags:
        return ExecType.GAMEPLAN
    return ExecType.GENERIC


def plan_for(
    doc: Document,
    smart: bool = True,
    tools: Sequence[str] | None = None,
    branch: str | None = None,
) -> Plan:
    """The plan for a run of `doc`: its type from the tags, `tools` overriding the type's list."""
    plan = plan_for_type(doc, choose_type(doc.tags, smart), branch)
    return plan if tools is None else replace(plan, tools=tuple(tools))


def branch_name(execution_id: int, title: str) -> str:
    """`exec-<id>-<slug>`: the id makes it unique, the slug makes it readable."""
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in title.lower())
    slug = "-".join(part for part in slug.split("-") if part)[:40].strip("-")
    return f"exec-{execution_id}-{slug or 'run'}"


def has_post_actions(exec_type: str) -> bool:
    """Does a completed run of this type owe post-actions (a saved result, source tags)?"""
    return exec_type in (ExecType.NOTE.value, ExecType.ANALYSIS.value, ExecType.GAMEPLAN.value)


def plan_for_type(doc: Document, exec_type: ExecType, branch: str | None = None) -> Plan:
    plan = _plan_for_type(doc, exec_type, branch)
    if branch and exec_type is not ExecType.GAMEPLAN:
        note = f"\n\n(You are working in a git worktree on branch `{branch}`.)\n"
        plan = replace(plan, prompt=plan.prompt + note)
    return plan


# Titles smart runs give the documents they save: an analysis of "Analysis: X" is about X.
OUTPUT_PREFIXES = ("Analysis: ", "Gameplan: ")


def base_title(title: str) -> str:
    """`title` without the prefixes smart runs add, however many are stacked."""
    stripped = title
    while True:
        for prefix in OUTPUT_PREFIXES:
            if stripped[: len(prefix)].lower() == prefix.lower():
                stripped = stripped[len(prefix) :].lstrip()
                break
        else:
            return stripped or title


def _plan_for_type(doc: Document, exec_type: ExecType, branch: str | None) -> Plan:
    fields = {"doc_id": doc.id, "title": base_title(doc.title), "content": doc.content}
    if exec_type is ExecType.NOTE:
        return Plan(
            exec_type,
            ANALYSIS_PROMPT.format(**fields),
            ANALYSIS_TOOLS,
            f"Analysis: {fields['title']}",
            (T.ANALYSIS,),
            (),
            False,
        )
    if exec_type is ExecType.ANALYSIS:
        return Plan(
            exec_type,
            GAMEPLAN_PROMPT.format(**fields),
            ANALYSIS_TOOLS,
            f"Gameplan: {fields['title']}",
            (T.GAMEPLAN, T.ACTIVE),
            (),
            False,
        )
    if exec_type is ExecType.GAMEPLAN:
        note = f" (git branch `{branch}`; commit your work there)" if branch else ""
        prompt = IMPLEMENTATION_PROMPT.format(branch_note=note, **fields)
        return Plan(exec_type, prompt, FULL_TOOLS, None, (), (T.DONE, T.SUCCESS), True)
    return Plan(exec_type, doc.content, FULL_TOOLS, None, (), (), False)
