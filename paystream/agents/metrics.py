"""Prometheus metrics of the worker process family (prometheus_client multiprocess mode).

Every worker and its supervisor write their values to files in one directory,
``PROMETHEUS_MULTIPROC_DIR``; ``serve`` and ``collect_text`` add them up across
processes, living or dead. prometheus_client reads that variable when it is
first imported, so a process that exports must set it before importing this
module: a supervisor calls ``supervisor.export_metrics_to`` first, and passes
the directory to its children (``WorkerProcess(metrics_dir=...)``). A process
imported without it keeps its values in memory, unexported (harmless in tests).

Labels take values from small closed sets (named in each help text), never ids.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.exposition import make_wsgi_app

from paystream.agents.supervisor import METRICS_DIR_ENV, prepare_metrics_dir
from paystream.ledger.errors import ensure

__all__ = [
    "BATCHES",
    "BATCH_SECONDS",
    "CHECKPOINT_SECONDS",
    "DIRECTORY_SKIPPED",
    "DLQ_RECORDS",
    "EVENTS",
    "INPUTS",
    "INTERNAL_ERRORS",
    "JOURNAL_ENTRIES",
    "RESTORED_RECORDS",
    "RESTORE_REMAINING",
    "RESTORE_SECONDS",
    "STORE_OPENS",
    "SUPERVISOR_GAVE_UP",
    "SUPERVISOR_LAST_EXIT_CODE",
    "SUPERVISOR_RESTARTS",
    "MetricsServer",
    "collect_text",
    "prepare_metrics_dir",
    "serve",
]

# A batch is at most a few thousand records in one Kafka transaction.
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Restoring the state stores from their changelogs at start-up.
RESTORE_SECONDS_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

BATCHES = Counter(
    "paystream_worker_batches_total",
    "Batches ended, by outcome: committed | aborted.",
    ["outcome"],
)
INPUTS = Counter(
    "paystream_worker_inputs_total",
    "Input records consumed, by topic kind: commands | legs.",
    ["topic"],
)
EVENTS = Counter(
    "paystream_worker_events_total",
    "Events emitted, by event type and rejection code ('' when none).",
    ["type", "code"],
)
JOURNAL_ENTRIES = Counter(
    "paystream_worker_journal_entries_total",
    "Journal entries produced.",
)
DLQ_RECORDS = Counter(
    "paystream_worker_dlq_records_total",
    "Records sent to the dead-letter topic, by reason.",
    ["reason"],
)
BATCH_SECONDS = Histogram(
    "paystream_worker_batch_seconds",
    "Time to process and commit one batch.",
    buckets=BATCH_SECONDS_BUCKETS,
)
RESTORE_SECONDS = Histogram(
    "paystream_worker_restore_seconds",
    "Time to restore state from changelogs, by stores: directory (the global table, read in"
    " full at start) | tables (the catch-up of gained partitions' balances and idempotency).",
    ["stores"],
    buckets=RESTORE_SECONDS_BUCKETS,
)
RESTORED_RECORDS = Counter(
    "paystream_worker_restored_records_total",
    "Changelog records applied while restoring, by store: directory | balances | idempotency.",
    ["store"],
)
RESTORE_REMAINING = Gauge(
    "paystream_worker_restore_remaining_offsets",
    "Changelog offsets a catch-up of gained partitions still has to read (0 when none runs).",
    multiprocess_mode="livesum",
)
STORE_OPENS = Counter(
    "paystream_worker_store_opens_total",
    "Partition stores opened, by start: checkpoint (only the changelog's tail is read) or the"
    " reason the checkpoint was refused and the store wiped and restored in full: missing |"
    " unreadable | other_partition | other_topic | topic_recreated | ahead_of_changelog |"
    " behind_log_start | too_old.",
    ["start"],
)
CHECKPOINT_SECONDS = Histogram(
    "paystream_worker_checkpoint_seconds",
    "Time to flush a partition's stores and write its checkpoint.",
    buckets=BATCH_SECONDS_BUCKETS,
)
DIRECTORY_SKIPPED = Counter(
    "paystream_worker_directory_skipped_total",
    "Directory records skipped, by reason.",
    ["reason"],
)
INTERNAL_ERRORS = Counter(
    "paystream_worker_internal_errors_total",
    "Internal errors (broken invariants, unexpected exceptions), by kind.",
    ["kind"],
)
SUPERVISOR_RESTARTS = Counter(
    "paystream_supervisor_restarts_total",
    "Times the supervisor restarted a worker that exited on its own.",
    ["worker"],
)
SUPERVISOR_GAVE_UP = Gauge(
    "paystream_supervisor_gave_up",
    "1 once the supervisor spent its restart budget and stopped restarting, else 0.",
    ["worker"],
    multiprocess_mode="max",
)
SUPERVISOR_LAST_EXIT_CODE = Gauge(
    "paystream_supervisor_last_exit_code",
    "Exit code of the worker's last run (negative: killed by that signal).",
    ["worker"],
    multiprocess_mode="mostrecent",
)


def _registry(directory: Path) -> CollectorRegistry:
    ensure(directory.is_dir(), f"metrics directory {directory} does not exist")
    registry = CollectorRegistry()
    # prometheus_client.multiprocess has no annotations
    _multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def _directory_or_env(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from_env = os.environ.get(METRICS_DIR_ENV)
    ensure(from_env is not None, f"no metrics directory given and {METRICS_DIR_ENV} is unset")
    return Path(str(from_env))


def collect_text(directory: Path | None = None) -> str:
    """The metrics of every process that wrote to ``directory``, in Prometheus text format."""
    return generate_latest(_registry(_directory_or_env(directory))).decode("utf-8")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds: not worth a log line each."""


class MetricsServer(ThreadingMixIn, WSGIServer):
    """The /metrics HTTP server in a daemon thread; ``stop()`` ends it."""

    daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve(port: int, *, host: str = "127.0.0.1", directory: Path | None = None) -> MetricsServer:
    """Serve the aggregated metrics of ``directory`` (default: the env's) over HTTP.

    ``port`` 0 picks a free port (read it from ``.port``).
    """
    app = make_wsgi_app(_registry(_directory_or_env(directory)))
    server = make_server(host, port, app, server_class=MetricsServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server
