"""Partners' pure parts: names, ACLs, the printout, the OAuth client template, the registry
endpoint's choice of subjects, and onboarding's checks."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    ResourcePatternType,
    ResourceType,
)

from paystream.api.routes.schemas import SchemaService
from paystream.partners import client_config, kafka_access, oidc_clients, onboarding
from paystream.partners.fanout import _next_offsets, partner_of_topic
from paystream.partners.onboarding import Credentials, OnboardingError
from paystream.services.keycloak import Client
from paystream.settings import Settings

SETTINGS = Settings(topic_prefix="ps-x1", kafka_security="plaintext")


def credentials(*, secured: bool) -> Credentials:
    return Credentials(
        partner_id="acme",
        topic="ps-x1.partner.acme.events",
        group_prefix="ps-x1.partner.acme.",
        kafka_username="partner.acme" if secured else None,
        kafka_password="pw-1" if secured else None,
        oauth_client=Client(client_id="partner-acme", secret="s3"),
        endpoint=None,
    )


def test_a_partner_topic_names_its_partner_and_nothing_else_does() -> None:
    assert partner_of_topic(SETTINGS, "ps-x1.partner.acme-2.events") == "acme-2"
    others = (
        "ps-x1.events", "ps-x1.partner.acme.events.x", "psXx1.partner.acme.events",
        "ps-x1.partner..events", "other.partner.acme.events", "ps-x1.partner.A.events",
    )  # fmt: skip
    for other in others:
        assert partner_of_topic(SETTINGS, other) is None, other


def test_acls_are_read_and_describe_on_the_prefix_and_read_on_groups_only() -> None:
    bindings = kafka_access.acl_bindings(SETTINGS, "acme")
    seen = {
        (b.restype, b.name, b.resource_pattern_type, b.principal, b.operation) for b in bindings
    }
    prefix, user = "ps-x1.partner.acme.", "User:partner.acme"
    assert seen == {
        (ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, user, AclOperation.READ),
        (ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, user, AclOperation.DESCRIBE),
        (ResourceType.GROUP, prefix, ResourcePatternType.PREFIXED, user, AclOperation.READ),
    }


def test_the_printout_is_a_working_client_configuration() -> None:
    secured = client_config.consumer_config(credentials(secured=True), "127.0.0.1:9")
    assert secured["sasl.username"] == "partner.acme" and secured["sasl.password"] == "pw-1"
    assert secured["security.protocol"] == "SASL_PLAINTEXT"
    assert secured["sasl.mechanism"] == "SCRAM-SHA-256"
    assert secured["group.id"].startswith("ps-x1.partner.acme.")
    assert secured["isolation.level"] == "read_committed"
    plain = client_config.consumer_config(credentials(secured=False), "127.0.0.1:9")
    assert not any(key.startswith("sasl") for key in plain)
    kcat = client_config.kcat_command(credentials(secured=True), "127.0.0.1:9")
    assert kcat[-1] == "ps-x1.partner.acme.events" and "sasl.password=pw-1" in kcat
    assert kcat[kcat.index("-G") + 1].startswith("ps-x1.partner.acme.")
    text = client_config.render(credentials(secured=True), bootstrap="127.0.0.1:9",
                                api_url="http://api", issuer="http://idp")  # fmt: skip
    assert json.dumps(secured, indent=2) in text and "client_secret=s3" in text


def test_the_oauth_client_is_the_realm_template_with_this_partners_claim() -> None:
    client = oidc_clients.representation("acme", "Acme")
    assert client["clientId"] == "partner-acme" and "secret" not in client
    claims = [m["config"] for m in client["protocolMappers"] if m["config"].get("claim.name")]
    assert [c["claim.value"] for c in claims if c["claim.name"] == "partner_id"] == ["acme"]
    assert "payments:write" in client["defaultClientScopes"]
    assert client["serviceAccountsEnabled"] is True and client["publicClient"] is False


@pytest.mark.parametrize(
    ("partner_id", "name", "email", "url"),
    [
        ("Acme", "Acme", "ops@acme.example", None),
        ("-acme", "Acme", "ops@acme.example", None),
        ("a" * 41, "Acme", "ops@acme.example", None),
        ("acme", "", "ops@acme.example", None),
        ("acme", "Acme", "not-an-address", None),
        ("acme", "Acme", "ops@acme.example", "ftp://acme.example/hook"),
        ("acme", "Acme", "ops@acme.example", "https://acme.example/a b"),
    ],
)
def test_onboarding_refuses_what_would_fail_later(
    partner_id: str, name: str, email: str, url: str | None
) -> None:
    with pytest.raises(OnboardingError):
        onboarding.check(partner_id, name, email, url)


def test_onboarding_takes_a_good_partner() -> None:
    onboarding.check("acme-2", "Acme", "ops@acme.example", "https://acme.example/hooks")


class Catalog:
    def subject_versions(self, subject: str) -> list[tuple[int, int]]:
        return [(1, 4), (2, 9)] if subject == "ps-x1.events-value" else [(1, 2)]

    def schema_for_id(self, schema_id: int) -> str:
        return f"schema {schema_id}"


def test_the_registry_endpoint_serves_event_schemas_only() -> None:
    service = SchemaService(SETTINGS, Catalog())
    assert service.subjects == ["ps-x1.events-value"]
    assert service.versions("ps-x1.partner.acme.events-value") == [(1, 4), (2, 9)]
    assert service.versions("ps-x1.commands-value") == []
    assert service.versions("ps-x1.partner.acme.events-valueX") == []
    assert service.schema(9) == "schema 9"
    assert service.schema(2) is None  # a command schema's id is not served


class Message:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return "ps-x1.events"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def test_offsets_committed_are_after_each_partitions_last_message() -> None:
    batch = [Message(0, 5), Message(1, 7), Message(0, 6), Message(1, 8)]
    found = {(tp.partition, tp.offset) for tp in _next_offsets(batch)}  # type: ignore[arg-type]
    assert found == {(0, 7), (1, 9)}
