"""Poison input of each kind lands in `dlq` with its reason; the partition keeps flowing."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from paystream.ledger import Deposit, OpenAccount, mint_command_id
from paystream.settings import Settings
from paystream.topology import records
from paystream.topology.avro import SCHEMA_DIR
from paystream.topology.partitioner import partition_for
from paystream.topology.reader import read_to_end
from paystream.topology.registry import registry_from_url
from tests.e2e.harness import platform

pytestmark = pytest.mark.integration

ACCOUNT = "poison-acct"
DLQ_WAIT_S = 60.0


def _frame(schema_id: int, schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


def _newer_command(subject: str, registry_dir: Path, command: Deposit) -> bytes:
    """A command of a type this version does not know, from a newer writer schema."""
    schema = json.loads((SCHEMA_DIR / "command.avsc").read_text())
    body = next(f for f in schema["fields"] if f["name"] == "body")
    body["type"].append(
        {"type": "record", "name": "Payout", "fields": [{"name": "iban", "type": "string"}]}
    )
    schema_id = registry_from_url(None, registry_dir).register(subject, json.dumps(schema))
    record = {**records.command_to_record(command), "body": ("paystream.v1.Payout", {"iban": "X"})}
    return _frame(schema_id, schema, record)


def test_each_kind_of_poison_goes_to_dlq_and_processing_continues(
    settings: Settings, tmp_path: Path
) -> None:
    with platform(settings, tmp_path, workers=1) as running:
        serde, key = running.serde, ACCOUNT.encode()
        now_ms = int(time.time() * 1000)
        partition = partition_for(key, running.settings.partitions)

        def cid() -> str:
            return mint_command_id(partition=partition, at_ms=now_ms, random_bytes=os.urandom(10))

        open_ = OpenAccount(cid(), "p-open", "demo", now_ms, ACCOUNT, "EUR")
        deposit = Deposit(cid(), "p-dep", "demo", now_ms, ACCOUNT, 500, "EUR")
        bad_field = Deposit(cid(), "p-bad", "demo", now_ms, ACCOUNT, 500, "ZZZ")
        poison = {
            "undecodable": b"\x07not avro at all",
            "unknown_schema_id": b"\x00\x00\x0f\x42\x40" + b"\x02",
            "unknown_command": _newer_command(
                serde.subject("command"),
                running.settings.data_dir,
                dataclasses.replace(deposit, command_id=cid()),
            ),
            "invalid_field": serde.encode_command(bad_field),
        }
        running.publisher.publish(open_)
        for value in poison.values():
            running.publisher.publish_raw(key, value)
        running.publisher.publish(deposit)  # after the poison, on the same partition
        running.publisher.flush()
        left = running.watcher.wait([open_.command_id, deposit.command_id], timeout_s=DLQ_WAIT_S)
        assert not left, f"processing stopped behind poison{running.logs()}"
        dead = list(read_to_end(running.kafka, running.topics.dlq))
    reasons = {}
    for message in dead:
        headers = dict(message.headers() or [])
        reasons[headers["dlq.reason"].decode()] = (message, headers)
    assert set(reasons) == set(poison)
    for reason, (message, headers) in reasons.items():
        assert message.value() == poison[reason], "the original bytes are kept"
        assert message.key() == key
        assert headers["dlq.topic"].decode() == running.topics.commands
        assert int(headers["dlq.partition"]) >= 0 and int(headers["dlq.offset"]) >= 0
        assert headers["dlq.detail"]
    completed = running.watcher.terminal(deposit.command_id)
    assert completed is not None and completed.type == "Completed"
