"""A run's totals across its agent processes (the attempts before a wait and a resume): what the
row shows is the earlier processes' banked counts plus the running one's `Progress`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emdx.agent.progress import Progress, Tokens


@dataclass(frozen=True)
class Banked:
    """The totals of a run's earlier agent processes (attempts before a wait and a resume):
    the row shows them plus the current process's."""

    turns: int = 0
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float = 0.0
    events: int = 0
    malformed: int = 0
    session_id: str | None = None
    model: str | None = None
    claude_code_version: str | None = None

    def plus(self, progress: Progress) -> Banked:
        return Banked(
            turns=self.turns + (progress.num_turns or 0),
            tokens=self.tokens + (progress.tokens or Tokens()),
            cost_usd=self.cost_usd + (progress.cost_usd or 0.0),
            events=self.events + progress.event_count,
            malformed=self.malformed + progress.malformed_count,
            session_id=progress.session_id or self.session_id,
            model=progress.model or self.model,
            claude_code_version=progress.claude_code_version or self.claude_code_version,
        )

    def row_fields(
        self, current: Progress, attempt: int, explained_by: Progress | None = None
    ) -> dict[str, Any]:
        """The row's progress columns: earlier attempts plus the running one; `details` from
        `explained_by` (default: the running one; the last one once none runs)."""
        tokens = current.tokens
        total = self.tokens + (tokens or Tokens())
        known = tokens is not None or self.turns > 0
        cost = current.cost_usd
        turns = current.num_turns
        details = (explained_by or current).details()
        if attempt > 1:
            details["attempt"] = attempt
        return {
            "session_id": current.session_id or self.session_id,
            "model": current.model or self.model,
            "claude_code_version": current.claude_code_version or self.claude_code_version,
            "num_turns": self.turns + (turns or 0) if turns is not None or self.turns else None,
            "cost_usd": self.cost_usd + (cost or 0.0)
            if cost is not None or self.cost_usd
            else None,
            "input_tokens": total.input if known else None,
            "output_tokens": total.output if known else None,
            "cache_read_tokens": total.cache_read if known else None,
            "cache_creation_tokens": total.cache_creation if known else None,
            "event_count": self.events + current.event_count,
            "malformed_count": self.malformed + current.malformed_count,
            "details": details,
        }
