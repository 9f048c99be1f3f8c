"""PostgreSQL: the embedded real server from the ``pgserver`` package, or a URL.

pgserver ships PostgreSQL's own binaries; it initialises ``home`` once and
serves over a unix socket in that directory (no TCP port is opened).
"""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

from paystream.services.process import ServiceError, read_pid, stop_pid, tail
from paystream.services.status import ServiceStatus

CONNECT_TIMEOUT_S = 5


def server_version(dsn: str) -> str | None:
    """The server's version, or ``None`` if it does not answer."""
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def external_status(dsn: str) -> ServiceStatus:
    version = server_version(dsn)
    return ServiceStatus(
        name="postgres",
        address=redact(dsn),
        pid=None,
        version=version,
        healthy=version is not None,
        detail="external",
    )


def redact(dsn: str) -> str:
    """``dsn`` without its password."""
    head, sep, tail_ = dsn.rpartition("@")
    if not sep or "://" not in head:
        return dsn
    scheme, _, userinfo = head.partition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{tail_}"


@dataclass(frozen=True, slots=True)
class EmbeddedPostgres:
    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def dsn_file(self) -> Path:
        return self.home / "postgres.dsn"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "log"

    def dsn(self) -> str:
        try:
            return self.dsn_file.read_text().strip()
        except FileNotFoundError:
            raise ServiceError("embedded Postgres was never started here") from None

    def start(self) -> str:
        """Idempotent; returns the DSN once the server answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            from pgserver.postgres_server import PostgresServer, get_server

            if self.pid() is None:  # pgserver caches a handle per pgdata: stale once stopped
                PostgresServer._instances.pop(self.pgdata.expanduser().resolve(), None)
            server = get_server(self.pgdata, cleanup_mode=None)
        dsn = str(server.get_uri())
        if server_version(dsn) is None:
            raise ServiceError(f"Postgres does not answer:\n{tail(self.log_file, lines=30)}")
        self.dsn_file.write_text(dsn + "\n")
        return dsn

    def pid(self) -> int | None:
        return read_pid(self.pgdata / "postmaster.pid")

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, sig=signal.SIGINT)  # SIGINT is Postgres' "fast" shutdown

    def status(self) -> ServiceStatus:
        pid = self.pid()
        dsn = self.dsn() if self.dsn_file.is_file() else ""
        version = server_version(dsn) if pid is not None and dsn else None
        return ServiceStatus(
            name="postgres",
            address=dsn or str(self.pgdata),
            pid=pid,
            version=version,
            healthy=version is not None,
        )
