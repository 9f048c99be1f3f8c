"""``paystream replay``: the ledger re-run from its recorded inputs and compared with what was
recorded (:mod:`paystream.audit.replay`); exit 1 on any mismatch."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from paystream.settings import Settings

if TYPE_CHECKING:
    from paystream.audit.replay import AuditStore, ReplayOptions, ReplayReport
    from paystream.topology.topics import Topics


JsonOption = Annotated[bool, typer.Option("--json", help="print the report as JSON")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="no progress bar")]
AccountOption = Annotated[
    list[str] | None,
    typer.Option("--account", help="replay this account (repeat for more) and every account "
                 "its transfers touched, not the whole ledger"),
]  # fmt: skip
CoreOption = Annotated[
    list[str] | None,
    typer.Option("--core", metavar="RULE=VALUE", help="what-if: run with this rule changed "
                 "(repeat for more; e.g. amount_max_minor=100000) and list the payments that "
                 "would have ended differently"),
]  # fmt: skip
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="stop after the batches written at or before this time "
                 "(ISO 8601, or ms since the epoch)"),
]  # fmt: skip
FromSnapshotOption = Annotated[
    Path | None, typer.Option("--from-snapshot", help="start from this snapshot file")
]
WriteSnapshotOption = Annotated[
    Path | None, typer.Option("--write-snapshot", help="write the state it ends with here")
]
ExportOption = Annotated[
    Path | None,
    typer.Option("--export", help="write the replayed journal to this Avro container file"),
]
PostgresOption = Annotated[
    bool | None,
    typer.Option("--postgres/--no-postgres", help="compare with the Postgres audit store "
                 "(default: when it is reachable, and not for a log file)"),
]  # fmt: skip
LogOption = Annotated[
    Path | None,
    typer.Option("--log", help="replay this log file (--save-log) instead of the broker"),
]
SaveLogOption = Annotated[
    Path | None,
    typer.Option("--save-log", help="save the log read (every record replay reads, with its "
                 "schemas) to this Avro container file, to replay it elsewhere with --log"),
]  # fmt: skip


def replay(
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    account: AccountOption = None,
    core: CoreOption = None,
    until: UntilOption = None,
    from_snapshot: FromSnapshotOption = None,
    write_snapshot: WriteSnapshotOption = None,
    export: ExportOption = None,
    postgres: PostgresOption = None,
    log: LogOption = None,
    save_log: SaveLogOption = None,
) -> int:
    """Re-run the core over the retained commands and recorded legs, batch by batch as the
    batch manifests say, and compare with the ledger, the events, the Postgres audit store
    and the workers' accounts. Prints a digest of the replayed journal; exit 1 on any
    mismatch, 2 when the log or a file cannot be read."""
    import psycopg
    from confluent_kafka import KafkaException

    from paystream.audit.log_file import LogFileError
    from paystream.audit.snapshot import SnapshotError
    from paystream.runtime import fewer_collections
    from paystream.services import ServiceError

    settings = Settings()
    try:
        options = _options(account, core, until, from_snapshot, write_snapshot)
        with fewer_collections():
            report = _run(settings, options, postgres, quiet, (log, save_log))
    except (KafkaException, TimeoutError, SnapshotError, LogFileError, ServiceError,
            psycopg.Error, OSError) as error:  # fmt: skip
        print(f"paystream replay: cannot replay: {error}", file=sys.stderr)
        return 2
    _write_files(report, export, write_snapshot)
    print(json.dumps(report.to_json(), indent=2) if as_json else report.summary())
    return 0 if report.ok else 1


def _options(
    accounts: list[str] | None,
    core: list[str] | None,
    until: str | None,
    from_snapshot: Path | None,
    write_snapshot: Path | None,
) -> ReplayOptions:
    from paystream.audit.replay import ReplayOptions
    from paystream.audit.snapshot import load_snapshot

    return ReplayOptions(
        accounts=frozenset(accounts or ()), what_if=_rules(core or []),
        snapshot=None if from_snapshot is None else load_snapshot(from_snapshot),
        until_ms=None if until is None else _time_ms(until),
        keep_state=write_snapshot is not None,
    )  # fmt: skip


def _run(
    settings: Settings,
    options: ReplayOptions,
    postgres: bool | None,
    quiet: bool,
    files: tuple[Path | None, Path | None],
) -> ReplayReport:
    """Read the log (from the broker, or ``files[0]``, a log file), save it to ``files[1]``
    if asked, and replay it."""
    from paystream.audit.log_file import read_log_file, write_log_file
    from paystream.audit.replay import build_log, read_records, replay_log
    from paystream.topology.avro import AvroSerde
    from paystream.topology.registry import SchemaRegistry, registry_from_url
    from paystream.topology.shell import Shell
    from paystream.topology.topics import Topics

    log_file, save_log = files
    with _progress(quiet) as (reading, progress):
        if log_file is None:
            topics = Topics.from_settings(settings)
            registry: SchemaRegistry = registry_from_url(
                settings.schema_registry_url, settings.data_dir
            )
            records = read_records(settings.kafka, topics, reading=reading)
        else:
            loaded = read_log_file(log_file)
            topics, registry, records = loaded.topics, loaded.registry, loaded.records
            postgres = postgres or False  # a log file is compared with a store only if asked
        if save_log is not None:
            count = write_log_file(records, topics, registry, save_log)
            print(f"saved {count:,} records of the log to {save_log}", file=sys.stderr)
        serde = AvroSerde(registry, topics=topics.payloads())
        stored = _audit_store(settings, topics, postgres)
        return replay_log(build_log(records, serde), Shell(topics=topics, serde=serde),
                          options=options, stored=stored, progress=progress)  # fmt: skip


def _write_files(report: ReplayReport, export: Path | None, snapshot: Path | None) -> None:
    from paystream.audit.journal_file import write_journal_file
    from paystream.audit.snapshot import write_snapshot

    if export is not None:
        count = write_journal_file(
            report.entries, export, metadata={"paystream.journal_sha256": report.journal_sha256}
        )
        print(f"exported {count:,} journal entries to {export}", file=sys.stderr)
    if snapshot is not None and report.end_state is not None:
        digest = write_snapshot(report.end_state, snapshot)
        print(f"snapshot written to {snapshot}: sha256 {digest}", file=sys.stderr)


def _rules(pairs: list[str]) -> dict[str, int]:
    """``RULE=VALUE`` options as ``Rules`` fields (a usage error for anything else)."""
    from paystream.ledger import Rules

    names = {f.name for f in dataclasses.fields(Rules)}
    found: dict[str, int] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in names or not value.strip().lstrip("-").isdigit():
            raise typer.BadParameter(
                f"{pair!r}: expected RULE=INTEGER with RULE one of {', '.join(sorted(names))}",
                param_hint="--core",
            )
        found[name] = int(value)
    try:
        Rules(**found)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--core") from error
    return found


def _time_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise typer.BadParameter(f"{text!r} is not ISO 8601 or ms", param_hint="--until") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _audit_store(settings: Settings, topics: Topics, postgres: bool | None) -> AuditStore | None:
    """The Postgres audit store to compare with: ``--postgres`` requires it, ``--no-postgres``
    skips it, and by default it is compared when it can be read (a note says when not)."""
    import psycopg

    from paystream import services
    from paystream.audit.migrate import applied_version
    from paystream.audit.replay import AuditStore
    from paystream.audit.stored_journal import read_journal
    from paystream.topology.topics import postgres_sink_group

    if postgres is False:
        return None
    try:
        dsn = services.postgres_dsn(settings)
        if applied_version(dsn) == 0:
            raise services.ServiceError("the database holds no audit store (no migration)")
        stored = read_journal(dsn)
    except (services.ServiceError, psycopg.Error) as error:
        if postgres:
            raise
        print(f"paystream replay: no Postgres audit store compared ({error})", file=sys.stderr)
        return None
    return AuditStore.of(stored, group=postgres_sink_group(settings), ledger_topic=topics.ledger)


class _Rate(ProgressColumn):
    """Batches per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} batches/s")


@contextmanager
def _progress(
    quiet: bool,
) -> Iterator[tuple[Callable[[str], None] | None, Callable[[int, int], None] | None]]:
    """A bar on stderr: batches done of all, rate, time elapsed and left (after a line per
    topic read)."""
    if quiet:
        yield None, None
        return
    columns = (
        TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), _Rate(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=Console(file=sys.stderr), refresh_per_second=2) as bar:
        task = bar.add_task("batches", total=None)

        def reading(topic: str) -> None:
            bar.console.print(f"reading {topic}")

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield reading, advance
