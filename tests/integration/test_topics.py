"""paystream's topics are created once, with the settings' partition count, and checked after."""

from __future__ import annotations

import pytest

from paystream.settings import KafkaConnection, Settings
from paystream.topology.topics import TopicLayoutError, Topics, ensure_topics
from tests.integration.kafka_util import create_topic

pytestmark = pytest.mark.integration


def test_creates_every_topic_once(kafka: KafkaConnection, unique_topic: str) -> None:
    topics = Topics.from_settings(Settings(topic_prefix=unique_topic, partitions=4))
    assert sorted(ensure_topics(kafka, topics)) == sorted(topics.configs())
    assert ensure_topics(kafka, topics) == []


def test_refuses_an_existing_topic_with_another_partition_count(
    kafka: KafkaConnection, unique_topic: str
) -> None:
    topics = Topics.from_settings(Settings(topic_prefix=unique_topic, partitions=8))
    create_topic(kafka.bootstrap, topics.legs, partitions=3)
    with pytest.raises(TopicLayoutError, match=r"need 8 partitions .* found \{'.*legs': 3\}"):
        ensure_topics(kafka, topics)
