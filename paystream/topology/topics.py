"""paystream's topics: names (behind the configured prefix), keys and settings."""

from __future__ import annotations

from dataclasses import dataclass

from paystream.settings import Settings
from paystream.topology.avro import TopicNames

TOPIC_CREATE_TIMEOUT_S = 30.0
APP_NAME = "ledger"


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the topology reads or writes."""

    commands: str
    legs: str
    ledger: str
    events: str
    dlq: str
    directory: str
    balances_changelog: str
    idempotency_changelog: str
    partitions: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        app_id = app_id_for(settings)
        return cls(
            commands=settings.topic("commands"),
            legs=settings.topic("legs"),
            ledger=settings.topic("ledger"),
            events=settings.topic("events"),
            dlq=settings.topic("dlq"),
            # faust's assignor only finds a GlobalTable's changelog under its default name.
            directory=f"{app_id}-directory-changelog",
            balances_changelog=f"{app_id}-balances-changelog",
            idempotency_changelog=f"{app_id}-idempotency-changelog",
            partitions=settings.partitions,
        )

    def names(self) -> TopicNames:
        """The Avro subjects' topic names."""
        return TopicNames(
            commands=self.commands,
            legs=self.legs,
            ledger=self.ledger,
            events=self.events,
            directory=self.directory,
        )

    def configs(self) -> dict[str, dict[str, str]]:
        """Topic -> configuration. Commands are kept forever: replay reads them."""
        forever = {"retention.ms": "-1", "cleanup.policy": "delete"}
        compact = {"cleanup.policy": "compact"}
        return {
            self.commands: forever,
            self.legs: forever,
            self.ledger: forever,
            self.events: forever,
            self.dlq: forever,
            self.directory: compact,
            self.balances_changelog: compact,
            self.idempotency_changelog: compact,
        }


def app_id_for(settings: Settings) -> str:
    """The Faust app id: consumer group and transactional id prefix."""
    return f"{settings.topic_prefix}-{APP_NAME}"


def ensure_topics(bootstrap: str, topics: Topics) -> list[str]:
    """Create the topics that do not exist yet; return the ones created."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=TOPIC_CREATE_TIMEOUT_S).topics)
    wanted = [
        NewTopic(name, num_partitions=topics.partitions, replication_factor=1, config=config)
        for name, config in topics.configs().items()
        if name not in existing
    ]
    if not wanted:
        return []
    for future in admin.create_topics(wanted).values():
        try:
            future.result(timeout=TOPIC_CREATE_TIMEOUT_S)
        except Exception as error:  # a concurrent creator is fine; anything else is not
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise
    return [topic.topic for topic in wanted]
