"""faust-streaming with a RocksDB table works on this broker and keeps state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from tests.integration.kafka_util import consume, create_topic

pytestmark = pytest.mark.integration

KEYS = 20
ROUND_MESSAGES = 200
REPO = Path(__file__).resolve().parents[2]


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.faust_probe", "worker", "-l", "warn"],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _produce_round(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(ROUND_MESSAGES):
        producer.produce(topic, key=f"key{i % KEYS}", value=json.dumps(i))
    assert producer.flush(30) == 0


def test_faust_table_survives_worker_restart(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    source, sink = f"{unique_topic}.in", f"{unique_topic}.out"
    create_topic(kafka_bootstrap, source, partitions=4)
    create_topic(kafka_bootstrap, sink, partitions=4)
    env = {
        "PROBE_APP_ID": unique_topic.replace(".", "-"),
        "PROBE_BOOTSTRAP": kafka_bootstrap,
        "PROBE_DATADIR": str(tmp_path / "faust"),
        "PROBE_SOURCE": source,
        "PROBE_SINK": sink,
    }
    reader = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{unique_topic}.reader",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.subscribe([sink])
    log = tmp_path / "worker.log"
    try:
        worker = _start_worker(env, log)
        _produce_round(kafka_bootstrap, source)
        first = consume(
            reader, count=ROUND_MESSAGES, timeout_s=120, give_up=lambda: worker.poll() is not None
        )
        _stop_worker(worker)
        assert len(first) == ROUND_MESSAGES, log.read_text()[-3000:]

        worker = _start_worker(env, log)
        _produce_round(kafka_bootstrap, source)
        second = consume(
            reader, count=ROUND_MESSAGES, timeout_s=120, give_up=lambda: worker.poll() is not None
        )
        _stop_worker(worker)
    finally:
        reader.close()
    assert len(second) == ROUND_MESSAGES, log.read_text()[-3000:]
    final = {}
    for message in second:
        key, count = json.loads(message.value()).split(":")
        final[key] = max(final.get(key, 0), int(count))
    per_key = 2 * ROUND_MESSAGES // KEYS
    assert final == {f"key{i}": per_key for i in range(KEYS)}
