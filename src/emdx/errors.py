"""The emdx exception tree: every expected failure is an EmdxError with a one-line message.

EmdxError
├── NotFoundError          an id or document that does not exist
├── InvalidInputError      input the user gave that cannot be used (empty, unreadable, too big)
├── UsageError             a command line that asks for nothing usable (exit 2, like click's)
├── InvalidStateError      an operation that does not fit the object's state
├── EnvironmentProblem     the machine is not ready (no agent, data dir not writable, no git)
│   ├── AgentNotFound      no agent binary (exit 127, as a shell says "command not found")
│   └── AgentNotRunnable   an agent binary that cannot run (exit 126, as a shell says)
├── StoreError             the database cannot be opened, is corrupt, locked or full
│   └── StoreUnavailable   the database server cannot be reached right now (time may cure it)
└── Interrupted            the user interrupted an operation (Ctrl-C), which was undone
"""

from __future__ import annotations


class EmdxError(Exception):
    """Base of every error emdx expects; the CLI prints `str(err)` and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFoundError(EmdxError):
    """A document, execution or file that does not exist."""


class InvalidInputError(EmdxError):
    """Input that cannot be used as given."""


class UsageError(EmdxError):
    """The command line itself is wrong: a required value missing or empty, an unknown choice,
    a confirmation flag needed. Exits 2, like the usage errors typer reports itself."""

    exit_code = 2


class InvalidStateError(EmdxError):
    """The object is not in a state that allows the operation."""


class EnvironmentProblem(EmdxError):
    """The environment is not ready; `fixes` lists what to do about it."""

    def __init__(self, message: str, fixes: list[str] | None = None) -> None:
        super().__init__(message)
        self.fixes = fixes or []


class AgentNotFound(EnvironmentProblem):
    """The agent binary is missing: like a shell, emdx exits 127."""

    exit_code = 127


class AgentNotRunnable(EnvironmentProblem):
    """The agent binary exists but cannot run (a directory, no execute permission, not an
    executable format, `--version` failing): like a shell, emdx exits 126."""

    exit_code = 126


class StoreError(EmdxError):
    """The knowledge base cannot be read or written."""


class RunKeyTaken(StoreError):
    """A new execution's run key is already some row's (the caller draws another)."""


class StoreUnavailable(StoreError):
    """The database server is unreachable, restarting, out of resources or in a lock conflict:
    a retry later may succeed (`store.connection.is_transient`)."""


class Interrupted(EmdxError):
    """Ctrl-C during an operation that was then undone; exits 130 like a shell."""

    exit_code = 130
