"""Set the screening rules: one ``ConfigureScreening`` per partition, on Kafka.

Rules live in each partition's worker state (``ledger.screening``), so replay applies the
same rules at the same place in the log. A partition's rules are set by a command keyed by
``@screening:<n>`` where ``n`` is the first number whose key murmur2-hashes to that
partition: every partition gets the rules, in one command each, from the operators' own
partner (``@ops``). The answers are awaited: ``Completed`` per partition, or the refusal.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Final

from paystream.ledger import OPS_PARTNER_ID, ConfigureScreening, mint_command_id
from paystream.ledger.accounts import SCREENING_KEY_PREFIX
from paystream.ledger.ids import ULID_RANDOM_BYTES
from paystream.ledger.screening import ScreeningRules, rules_to_json
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.partitioner import partition_for
from paystream.topology.publisher import CommandPublisher
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics
from paystream.topology.watch import EventWatcher

__all__ = ["Applied", "publish_rules", "screening_commands", "screening_keys"]

KEY_SEARCH_MAX: Final = 1_000_000
"""Numbers tried for one key per partition (a few times the partition count suffice)."""
ANSWER_TIMEOUT_S: Final = 60.0


def screening_keys(partitions: int) -> list[str]:
    """One ``@screening:<n>`` key per partition, in partition order."""
    keys: dict[int, str] = {}
    for n in range(KEY_SEARCH_MAX):
        key = f"{SCREENING_KEY_PREFIX}{n}"
        keys.setdefault(partition_for(key.encode(), partitions), key)
        if len(keys) == partitions:
            return [keys[p] for p in range(partitions)]
    raise RuntimeError(f"no screening key found for every one of {partitions} partitions")


def screening_commands(
    rules: ScreeningRules, *, partitions: int, now_ms: int
) -> list[ConfigureScreening]:
    """The commands that set ``rules`` on every partition (ids minted for each partition)."""
    text = rules_to_json(rules)
    commands = []
    for partition, key in enumerate(screening_keys(partitions)):
        command_id = mint_command_id(
            partition=partition, at_ms=now_ms, random_bytes=os.urandom(ULID_RANDOM_BYTES)
        )
        command = ConfigureScreening(
            command_id=command_id, request_id=command_id, partner_id=OPS_PARTNER_ID,
            issued_at_ms=now_ms, account_id=key, rules_json=text,
        )  # fmt: skip
        commands.append(command)
    return commands


@dataclass(frozen=True, slots=True)
class Applied:
    """What the workers answered, per partition (``None``: no answer within the timeout)."""

    answers: dict[int, str | None]

    @property
    def ok(self) -> bool:
        return all(answer == "Completed" for answer in self.answers.values())


def publish_rules(settings: Settings, rules: ScreeningRules) -> Applied:
    """Put the rules on every partition and wait for each worker's answer."""
    topics = Topics.from_settings(settings)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    commands = screening_commands(
        rules, partitions=topics.partitions, now_ms=int(time.time() * 1000)
    )
    kafka = settings.kafka
    publisher = CommandPublisher(kafka=kafka, topic=topics.commands, serde=serde)
    publisher.publish_all(commands)
    publisher.flush()
    watcher = EventWatcher(
        kafka=kafka, topic=topics.events, serde=serde, partitions=topics.partitions
    )
    try:
        watcher.wait([c.command_id for c in commands], timeout_s=ANSWER_TIMEOUT_S)
        answers = {}
        for partition, command in enumerate(commands):
            event = watcher.terminal(command.command_id)
            answers[partition] = None if event is None else _outcome(event.type, event.code)
    finally:
        watcher.close()
    return Applied(answers)


def _outcome(event_type: str, code: str | None) -> str:
    return event_type if code is None else f"{event_type} ({code})"
