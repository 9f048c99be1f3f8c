"""The one way the audit side opens a Postgres connection."""

from __future__ import annotations

from typing import Any

import psycopg

CONNECT_TIMEOUT_S = 10
"""How long opening a connection may take before it counts as Postgres being down."""
Connection = psycopg.Connection[tuple[Any, ...]]


def connect(dsn: str, *, autocommit: bool) -> Connection:
    """A connection to ``dsn``; ``autocommit`` said at every call site."""
    return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
