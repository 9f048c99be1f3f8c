"""``paystream replay``: the ledger re-run from its recorded inputs and compared with what was
recorded (:mod:`paystream.audit.replay`); exit 1 on any mismatch."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

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


def replay(
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> int:
    """Re-run the core over the retained commands and recorded legs, batch by batch as the
    batch manifests say, and compare with the ledger, the events and the workers' accounts.
    Prints a digest of the replayed journal; exit 1 on any mismatch."""
    from paystream.audit.replay import replay as run
    from paystream.topology.avro import AvroSerde
    from paystream.topology.registry import registry_from_url
    from paystream.topology.topics import Topics

    settings = Settings()
    topics = Topics.from_settings(settings)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    with _progress(quiet) as progress:
        report = run(settings.bootstrap, topics, serde, progress=progress)
    print(json.dumps(report.to_json(), indent=2) if as_json else report.summary())
    return 0 if report.ok else 1


class _Rate(ProgressColumn):
    """Batches per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} batches/s")


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A bar on stderr: batches done of all, rate, time elapsed and left."""
    if quiet:
        yield None
        return
    columns = (
        TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), _Rate(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=Console(file=sys.stderr), refresh_per_second=2) as bar:
        task = bar.add_task("batches", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
