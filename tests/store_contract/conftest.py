"""Fixtures of the store contract suite (defined in contract_helpers, importable by tests)."""

from contract_helpers import (
    backend,
    fresh_location,
    location,
    open_another,
    pg_databases,
    pg_url,
    sql,
    store,
)

__all__ = [
    "backend",
    "fresh_location",
    "location",
    "open_another",
    "pg_databases",
    "pg_url",
    "sql",
    "store",
]
