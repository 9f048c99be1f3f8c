"""ClickHouse through clickhouse-connect: ``chdb://<dir>`` (embedded) or a server URL.

Only one process at a time can open an embedded engine's directory, so the
status check reports "in use" rather than failing when another process (the
analytics sink) holds it.
"""

from __future__ import annotations

from paystream.services.process import ServiceError
from paystream.services.status import ServiceStatus

_IN_USE_MARKERS = ("BAD_ARGUMENTS", "EmbeddedServer")


def probe(dsn: str) -> tuple[str | None, str]:
    """``(version, detail)``: the engine's version, or ``None`` and why not."""
    import clickhouse_connect

    try:
        client = clickhouse_connect.get_client(dsn=dsn)
    except Exception as error:  # clickhouse-connect raises several unrelated types
        return None, _describe(error)
    try:
        return str(client.command("SELECT version()")), ""
    finally:
        client.close()


def _describe(error: Exception) -> str:
    text = str(error)
    if any(marker in text for marker in _IN_USE_MARKERS):
        return "in use by another process"
    return text.splitlines()[0] if text else type(error).__name__


def ensure(dsn: str) -> str:
    """Create the embedded directory if needed and return the engine's version."""
    version, detail = probe(dsn)
    if version is None and detail != "in use by another process":
        raise ServiceError(f"ClickHouse at {dsn} does not answer: {detail}")
    return version or "?"


def status(dsn: str) -> ServiceStatus:
    version, detail = probe(dsn)
    in_use = detail == "in use by another process"
    return ServiceStatus(
        name="clickhouse",
        address=dsn,
        pid=None,
        version=version,
        healthy=version is not None or in_use,
        detail=detail or ("embedded" if dsn.startswith("chdb://") else "external"),
    )
