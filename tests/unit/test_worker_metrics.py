"""Worker metrics in prometheus_client multiprocess mode: written by children, read here."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from paystream.agents import metrics
from paystream.agents.supervisor import METRICS_DIR_ENV, prepare_metrics_dir
from paystream.ledger.errors import InvariantViolation

CHILD_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0

# What a worker does with the metrics (another module wires them in for real).
CHILD_SCRIPT = """
from paystream.agents import metrics
metrics.BATCHES.labels(outcome="committed").inc(3)
metrics.BATCHES.labels(outcome="aborted").inc()
metrics.INPUTS.labels(topic="commands").inc(10)
metrics.INPUTS.labels(topic="legs").inc(4)
metrics.EVENTS.labels(type="TransferCompleted", code="").inc(2)
metrics.EVENTS.labels(type="TransferRejected", code="insufficient_funds").inc()
metrics.JOURNAL_ENTRIES.inc(2)
metrics.DLQ_RECORDS.labels(reason="undecodable").inc()
metrics.BATCH_SECONDS.observe(0.02)
metrics.RESTORE_SECONDS.labels(stores="tables").observe(1.5)
metrics.RESTORED_RECORDS.labels(store="balances").inc(100)
metrics.DIRECTORY_SKIPPED.labels(reason="stale").inc()
metrics.INTERNAL_ERRORS.labels(kind="invariant").inc()
"""


def run_child(directory: Path) -> None:
    env = {**os.environ, METRICS_DIR_ENV: str(directory)}
    subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT], env=env, check=True, timeout=CHILD_TIMEOUT_S
    )


def sample(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels) in Prometheus text."""
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, text
    return float(values[0])


@pytest.fixture
def two_workers_wrote(tmp_path: Path) -> Path:
    directory = prepare_metrics_dir(tmp_path / "metrics")
    run_child(directory)
    run_child(directory)
    return directory


@pytest.fixture
def server(two_workers_wrote: Path) -> Iterator[metrics.MetricsServer]:
    served = metrics.serve(0, directory=two_workers_wrote)
    yield served
    served.stop()


EXPECTED = {
    'paystream_worker_batches_total{outcome="committed"}': 6.0,
    'paystream_worker_batches_total{outcome="aborted"}': 2.0,
    'paystream_worker_inputs_total{topic="commands"}': 20.0,
    'paystream_worker_inputs_total{topic="legs"}': 8.0,
    'paystream_worker_events_total{code="",type="TransferCompleted"}': 4.0,
    'paystream_worker_events_total{code="insufficient_funds",type="TransferRejected"}': 2.0,
    "paystream_worker_journal_entries_total": 4.0,
    'paystream_worker_dlq_records_total{reason="undecodable"}': 2.0,
    "paystream_worker_batch_seconds_count": 2.0,
    'paystream_worker_batch_seconds_bucket{le="0.025"}': 2.0,
    'paystream_worker_batch_seconds_bucket{le="0.01"}': 0.0,
    'paystream_worker_restore_seconds_sum{stores="tables"}': 3.0,
    'paystream_worker_restored_records_total{store="balances"}': 200.0,
    'paystream_worker_directory_skipped_total{reason="stale"}': 2.0,
    'paystream_worker_internal_errors_total{kind="invariant"}': 2.0,
}


def test_collect_text_adds_up_what_every_child_wrote(two_workers_wrote: Path) -> None:
    text = metrics.collect_text(two_workers_wrote)
    assert {name: sample(text, name) for name in EXPECTED} == EXPECTED


def test_collect_text_reads_the_env_directory(
    two_workers_wrote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(METRICS_DIR_ENV, str(two_workers_wrote))
    assert sample(metrics.collect_text(), "paystream_worker_journal_entries_total") == 4.0


def test_serve_exposes_the_directory_over_http(server: metrics.MetricsServer) -> None:
    assert server.server_address[0] == "127.0.0.1"
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
        assert response.status == 200
        text = response.read().decode("utf-8")
    assert {name: sample(text, name) for name in EXPECTED} == EXPECTED


def test_an_empty_directory_has_no_samples(tmp_path: Path) -> None:
    text = metrics.collect_text(prepare_metrics_dir(tmp_path / "empty"))
    assert not [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvariantViolation):
        metrics.collect_text(tmp_path / "nowhere")
