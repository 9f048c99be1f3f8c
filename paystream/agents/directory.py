"""Every worker's view of every account: a follower of the ``directory`` topic.

The directory topic is compacted and written (inside the source partition's
transaction) whenever an account opens, freezes, unfreezes or closes. A
background thread reads every partition of it read_committed into a dict, so
the debit step sees only committed facts about any account (a global store,
in Kafka Streams' words).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from paystream.agents import failfast
from paystream.ledger import DirectoryEntry
from paystream.tables import codecs

POLL_TIMEOUT_S = 0.05
POLL_BATCH_MAX = 10_000
METADATA_TIMEOUT_S = 30.0


class DirectoryFollower(Mapping[str, DirectoryEntry]):
    def __init__(self, *, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._entries: dict[str, DirectoryEntry] = {}
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{topic}.follower",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._thread = threading.Thread(target=self._run, name="directory", daemon=True)

    def start(self) -> None:
        metadata = self._consumer.list_topics(self._topic, timeout=METADATA_TIMEOUT_S)
        partitions = metadata.topics[self._topic].partitions
        self._consumer.assign([TopicPartition(self._topic, p, 0) for p in partitions])
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(POLL_BATCH_MAX, POLL_TIMEOUT_S):
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    entry = codecs.decode_directory_entry(message.value() or b"")
                    self._entries[entry.account_id] = entry
        except Exception as error:  # a directory that stops following is a silent liar
            failfast.crash(f"directory follower failed: {error!r}")

    def __getitem__(self, account_id: str) -> DirectoryEntry:
        return self._entries[account_id]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
