"""What ``paystream partners add`` prints for the partner: paste-ready client settings.

A confluent-kafka consumer configuration (with the schema registry for its stock
``AvroDeserializer``), the same as ``kcat`` options, the OAuth client for the REST API and
the webhook signing secret. Pure: a function of the credentials and where things answer.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from paystream.partners.onboarding import Credentials
from paystream.settings import SCRAM_MECHANISM

__all__ = ["consumer_config", "kcat_command", "render"]


def consumer_config(credentials: Credentials, bootstrap: str) -> dict[str, Any]:
    """confluent-kafka's Consumer settings for the partner's own topic and group prefix."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"{credentials.group_prefix}main",
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    }
    if credentials.kafka_username is not None:
        config |= {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": credentials.kafka_username,
            "sasl.password": credentials.kafka_password,
        }
    return config


def kcat_command(credentials: Credentials, bootstrap: str) -> list[str]:
    """kcat reading the partner's topic as a member of a group of its prefix (from the start)."""
    command = ["kcat", "-b", bootstrap, "-X", "isolation.level=read_committed"]
    if credentials.kafka_username is not None:
        command += [
            "-X", "security.protocol=SASL_PLAINTEXT",
            "-X", f"sasl.mechanisms={SCRAM_MECHANISM}",
            "-X", f"sasl.username={credentials.kafka_username}",
            "-X", f"sasl.password={credentials.kafka_password}",
        ]  # fmt: skip
    return [
        *command,
        "-G", f"{credentials.group_prefix}kcat", "-o", "beginning", "-e",
        "-f", "%t [%p] @%o key=%k %S bytes\\n", credentials.topic,
    ]  # fmt: skip


def render(credentials: Credentials, *, bootstrap: str, api_url: str, issuer: str) -> str:
    """The text a partner is handed (it holds secrets: shown once)."""
    lines = [
        f"partner {credentials.partner_id}: shown once, keep it safe",
        "",
        f"Kafka topic: {credentials.topic} (Avro, Confluent wire format)",
        "confluent-kafka Consumer(...) settings:",
        json.dumps(consumer_config(credentials, bootstrap), indent=2),
        "AvroDeserializer's SchemaRegistryClient settings:",
        json.dumps({"url": api_url}, indent=2),
        "kcat:",
        shlex.join(kcat_command(credentials, bootstrap)),
    ]
    if credentials.kafka_username is None:
        lines.append("(the broker is plaintext: no credentials, no ACLs; secure its network)")
    if credentials.oauth_client is not None:
        client = credentials.oauth_client
        lines += [
            "",
            f"REST API {api_url}: OAuth client credentials at {issuer}",
            f"  client_id={client.client_id}",
            f"  client_secret={client.secret}",
        ]
    if credentials.endpoint is not None:
        endpoint = credentials.endpoint
        lines += [
            "",
            f"webhooks to {endpoint.url} (endpoint {endpoint.endpoint_id})",
            f"  signing secret (Standard Webhooks): {endpoint.secret}",
        ]
    return "\n".join(lines)
