"""emdx: a knowledge base of prompt documents, run through Claude Code as supervised executions."""

__version__ = "0.1.0"
