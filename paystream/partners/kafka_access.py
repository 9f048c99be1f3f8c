"""A partner's access to Kafka: its SCRAM principal, its ACLs and its topic.

A partner's principal ``User:partner.<id>`` may READ and DESCRIBE the topics whose names
start with the partner's prefix (``<topic prefix>.partner.<id>.``) and READ the consumer
groups with the same prefix: nothing else. Writes to ``commands``, ``legs``, ``ledger`` and
the changelogs stay the platform's (a super user); a broker whose authorizer allows nothing
without an ACL refuses the partner everything else. On a ``plaintext`` broker there is no
principal to give access to: only the topic is made, and :func:`secured` says so.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, Final

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from paystream.settings import Settings
from paystream.topology.topics import partner_prefix, partner_topic

__all__ = [
    "PARTNER_TOPIC_RETENTION_MS",
    "SCRAM_ITERATIONS",
    "acl_bindings",
    "create_topic",
    "delete_access",
    "grant",
    "principal",
    "secured",
    "set_password",
]

SCRAM_ITERATIONS: Final = 8192
"""PBKDF2 rounds of a partner's stored SCRAM-SHA-256 credential (Kafka's minimum is 4096)."""
PASSWORD_BYTES: Final = 32
PARTNER_TOPIC_RETENTION_MS: Final = 7 * 24 * 3600 * 1000
"""A partner topic is a feed, not the record (``commands`` and the audit store are): a
partner that is away for a week reads what it missed from the API."""
ADMIN_TIMEOUT_S: Final = 30.0
ANY_HOST: Final = "*"


def principal(partner_id: str) -> str:
    """The Kafka user name of a partner (its principal is ``User:<this>``)."""
    return f"partner.{partner_id}"


def secured(settings: Settings) -> bool:
    """Whether the broker authenticates clients (principals and ACLs mean something)."""
    return settings.kafka_security == "scram"


def acl_bindings(settings: Settings, partner_id: str) -> list[AclBinding]:
    """READ + DESCRIBE on the partner's topic prefix, READ on its group prefix."""
    prefix = partner_prefix(settings, partner_id)
    user = f"User:{principal(partner_id)}"
    allow = AclPermissionType.ALLOW
    return [
        AclBinding(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, user, ANY_HOST,
                   AclOperation.READ, allow),
        AclBinding(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, user, ANY_HOST,
                   AclOperation.DESCRIBE, allow),
        AclBinding(ResourceType.GROUP, prefix, ResourcePatternType.PREFIXED, user, ANY_HOST,
                   AclOperation.READ, allow),
    ]  # fmt: skip


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka.config())


def _wait(futures: Any) -> None:
    """Every future of an admin call done; the first error raised."""
    values = futures.values() if isinstance(futures, dict) else futures
    for future in values:
        future.result(timeout=ADMIN_TIMEOUT_S)


def set_password(settings: Settings, partner_id: str) -> str:
    """A new random password for the partner's principal (created or replaced); returned
    once: the broker keeps only its salted SCRAM hash."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    upsert = UserScramCredentialUpsertion(
        principal(partner_id),
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, SCRAM_ITERATIONS),
        password.encode(),
        secrets.token_bytes(PASSWORD_BYTES),
    )
    admin = _admin(settings)  # held until the futures are done: its handle serves them
    _wait(admin.alter_user_scram_credentials([upsert]))
    return password


def grant(settings: Settings, partner_id: str) -> None:
    """Create the partner's ACLs (creating an existing binding again changes nothing)."""
    admin = _admin(settings)
    _wait(admin.create_acls(acl_bindings(settings, partner_id)))


def create_topic(settings: Settings, partner_id: str) -> bool:
    """The partner's topic; False when it existed already."""
    name = partner_topic(settings, partner_id)
    admin = _admin(settings)
    if name in admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics:
        return False
    config = {"retention.ms": str(PARTNER_TOPIC_RETENTION_MS), "cleanup.policy": "delete"}
    topic = NewTopic(name, num_partitions=settings.partitions, replication_factor=1, config=config)
    _wait(admin.create_topics([topic]))
    return True


def delete_access(settings: Settings, partner_id: str, *, topic: bool) -> None:
    """Remove the partner's ACLs and credential (when secured) and, if asked, its topic."""
    admin = _admin(settings)
    if secured(settings):
        filters = [_filter(b) for b in acl_bindings(settings, partner_id)]
        _wait(admin.delete_acls(filters))
        deletion = UserScramCredentialDeletion(principal(partner_id), ScramMechanism.SCRAM_SHA_256)
        _ignore_missing(admin.alter_user_scram_credentials([deletion]).values())
    if topic:
        _ignore_missing(admin.delete_topics([partner_topic(settings, partner_id)]).values())


def _filter(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
        binding.host, binding.operation, binding.permission_type,
    )  # fmt: skip


def _ignore_missing(futures: Sequence[Any] | Any) -> None:
    """Wait for deletions; a thing already gone is what was wanted."""
    for future in futures:
        try:
            future.result(timeout=ADMIN_TIMEOUT_S)
        except Exception as error:  # the admin API's errors carry the Kafka error name
            if not any(code in str(error) for code in ("UNKNOWN_TOPIC", "RESOURCE_NOT_FOUND")):
                raise
