"""Versioned, forward-only migrations of the audit store: numbered SQL files, applied in order.

``paystream/audit/migrations/NNNN_name.sql`` files run in version order, each
in its own transaction together with its row in ``schema_migrations``
(version, name, the file's sha256). A transaction-scoped advisory lock makes
concurrent starters (several sinks, ``paystream db migrate``) apply each file
once. A file whose recorded sha256 differs from the one on disk is refused:
an applied migration is never edited, a new one is added.

Why not a migration library: yoyo-migrations and alembic were considered.
alembic brings SQLAlchemy for what is plain SQL here; yoyo speaks its own
URL dialect, which does not carry the Unix-socket DSNs of the embedded
server, and keeps its own lock table. Applying numbered files with psycopg
takes the few lines below, in the same transaction as the version row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from paystream.audit import db
from paystream.ledger.errors import ensure

MIGRATIONS_PACKAGE = "paystream.audit.migrations"
MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
ADVISORY_LOCK_KEY = 0x7061797374726D  # "paystrm": one migrator at a time per database


class MigrationError(RuntimeError):
    """An applied migration was changed, or the files are not numbered 1, 2, 3, ..."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with the package, in version order (1, 2, 3, ... with no gap)."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n: {[m.version for m in found]}")
    return found


def migrate(dsn: str) -> list[Migration]:
    """Apply every migration not applied yet; return the ones this call applied."""
    applied_now = []
    with db.connect(dsn, autocommit=True) as conn:
        # Under the lock too: two sinks starting together raced on CREATE TABLE IF NOT
        # EXISTS (a unique violation in pg_type) and one of them died.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for migration in available():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                if _apply(conn, migration):
                    applied_now.append(migration)
    return applied_now


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> bool:
    row = conn.execute(
        "SELECT sha256 FROM schema_migrations WHERE version = %s", (migration.version,)
    ).fetchone()
    if row is not None:
        if row[0] != migration.sha256:
            raise MigrationError(
                f"migration {migration.version} ({migration.name}) was applied with sha256 "
                f"{row[0]}, the file now has {migration.sha256}: add a new migration instead"
            )
        return False
    conn.execute(migration.sql.encode("utf-8"))
    conn.execute(
        "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
        (migration.version, migration.name, migration.sha256),
    )
    return True


def applied_version(dsn: str) -> int:
    """The highest applied migration (0 when none is)."""
    with db.connect(dsn, autocommit=False) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        ensure(exists is not None, "no answer from Postgres")
        if not (exists and exists[0]):
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0
