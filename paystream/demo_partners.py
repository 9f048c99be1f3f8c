"""The demo's partner side: partner ``demo-1`` onboarded, a webhook receiver in this process,
email addresses for a few account holders, then what the partner and the holders heard.

:func:`onboarded` onboards ``demo-1`` (``paystream partners add``: Kafka principal and ACLs,
its topic, its OAuth client, its webhook endpoint) with the URL of a
:class:`~paystream.webhooks.receiver.ReceiverServer` it serves on 127.0.0.1, and notes where
``events`` and the partner's topic end. A data dir kept from an earlier run has ``demo-1``
onboarded already: its endpoint is reused (the receiver serves its URL's port, or, when
that port is taken or not local, a free one whose URL is recorded as the endpoint's), and
its topic is read as the platform, its Kafka password having been shown once, to that run.

:func:`wait_heard`, after the payments and payouts, reads this run's ``demo-1`` events from
``events`` (the platform's log: what the partner must hear), then waits, bounded, until the
partner's topic holds each of them, the receiver has verified a webhook for each one that
makes a webhook (deduplicated by ``webhook-id``), and the mailbox holds each email the
notifier's rules ask for to the holders given an address.
"""

from __future__ import annotations

import contextlib
import mailbox
import shlex
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.progress import Progress

from paystream import services
from paystream.audit import db
from paystream.demo_api import nearest_rank
from paystream.ledger import Event
from paystream.notify import rules
from paystream.notify.mailbox import mailbox_dir
from paystream.notify.smtp import NOTIFICATION_HEADER
from paystream.partners import client_config, kafka_access, onboarding, registry
from paystream.partners.onboarding import Credentials, OnboardingError
from paystream.partners.registry import Endpoint
from paystream.services.process import ServiceError, free_port, port_open, wait_until
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.reader import drain
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics, partner_prefix, partner_topic
from paystream.webhooks.payload import webhook_type
from paystream.webhooks.receiver import ReceiverServer, serving

__all__ = ["HOLDER_EMAILS", "PARTNER_ID", "Heard", "Partner", "onboarded", "report", "wait_heard"]

PARTNER_ID: Final = "demo-1"
"""The API part's partner: the Keycloak client ``partner-demo-1`` carries this claim."""
PARTNER_NAME: Final = "Demo partner 1"
PARTNER_EMAIL: Final = "ops@demo-1.example"
HOLDER_EMAILS: Final = tuple(f"holder-{n}@demo-1.example" for n in range(1, 4))
"""Given to the first accounts the API part opens, before they are funded: every email the
rules make about them reaches the mailbox."""
RECEIVER_HOST: Final = "127.0.0.1"
RECEIVER_PORT_DEFAULT: Final = 18090
"""The receiver's port when free (a URL that stays the endpoint's from run to run)."""
RECEIVER_PATH: Final = "/webhooks"
LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})
HEARD_TIMEOUT_S: Final = 120.0
"""How long the partner's topic, the webhooks and the emails may take to catch up."""
POLL_S: Final = 0.5
CONSUME_BATCH_MAX: Final = 1_000
CONSUME_TIMEOUT_S: Final = 0.2
CONSUME_BATCHES_MAX: Final = 20
"""Batches the partner-topic reader takes per look (the rest comes at the next)."""
KAFKA_TIMEOUT_S: Final = 10.0
ENDS_TIMEOUT_S: Final = 60.0
"""How long asking where a topic ends may be refused (a new topic's leaders elected)."""
SECRET_SHOWN_CHARS: Final = 10
"""A secret is printed cut to this many characters (enough to tell which one it is)."""
PASSWORD_PLACEHOLDER: Final = "<its password>"
PLATFORM_GROUP: Final = "paystream-demo-partner"
"""The group id of the demo's own readers (they assign partitions and commit nothing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Partner:
    """``demo-1`` as this run holds it, with its receiver and where its logs stood."""

    credentials: Credentials
    """From ``add`` when this run onboarded it; else without a password or OAuth client."""
    onboarded: bool
    endpoint: Endpoint
    receiver: ReceiverServer
    events_from: dict[int, int]
    """``events``: partition -> its end offset before this run's partner traffic."""
    topic_from: dict[int, int]
    """The partner's topic: partition -> its end offset before this run's partner traffic."""


@dataclass(slots=True, kw_only=True)
class Heard:
    """What the partner and the holders heard of this run's ``demo-1`` events."""

    events_expected: int = 0
    topic_messages: int = 0
    """Messages read from the partner's topic since the run began (copies included)."""
    topic_found: int = 0
    webhooks_expected: int = 0
    webhooks: int = 0
    """Verified webhooks of this run's events, one per ``webhook-id``."""
    refused: int = 0
    repeats: int = 0
    first_attempt_ms: list[float] = field(default_factory=list)
    """Per webhook: from the event's time to the receiver's first request of it."""
    emails_expected: int = 0
    emails: int = 0
    templates: Counter[str] = field(default_factory=Counter)
    mailbox: Path | None = None
    waited_s: float = 0.0
    complete: bool = False

    def first_attempt_percentile_ms(self, q: float) -> float | None:
        return nearest_rank(self.first_attempt_ms, q) if self.first_attempt_ms else None


# --- onboarding ----------------------------------------------------------------------------


@contextlib.contextmanager
def onboarded(settings: Settings) -> Iterator[Partner]:
    """``demo-1`` onboarded (or reused) with its webhook receiver serving until exit."""
    topics = Topics.from_settings(settings)
    ensure_topics(settings.kafka, topics)  # idempotent: the workers would make them next
    keycloak = services.managed_keycloak(settings)
    url = _receiver_url(RECEIVER_PORT_DEFAULT)
    try:
        credentials = onboarding.add(
            settings, keycloak, partner_id=PARTNER_ID, name=PARTNER_NAME,
            contact_email=PARTNER_EMAIL, webhook_url=url,
        )  # fmt: skip
    except OnboardingError:
        if not _active(settings):
            raise  # refused for another reason than "onboarded already"
        credentials, endpoint, fresh = _reused(settings), _served_endpoint(settings), False
    else:
        endpoint, fresh = _endpoint_of(credentials), True
        print(_onboarded_line(credentials, endpoint))
    port = urlsplit(endpoint.url).port or RECEIVER_PORT_DEFAULT
    platform = _platform_config(settings)  # where the logs end is the platform's to ask
    with serving(endpoint.secret, port=port) as receiver:
        yield Partner(
            credentials=credentials, onboarded=fresh, endpoint=endpoint, receiver=receiver,
            events_from=_ends(platform, topics.events),
            topic_from=_ends(platform, credentials.topic),
        )  # fmt: skip


def _receiver_url(port_wanted: int) -> str:
    port = port_wanted if not port_open(RECEIVER_HOST, port_wanted) else free_port()
    return f"http://{RECEIVER_HOST}:{port}{RECEIVER_PATH}"


def _endpoint_of(credentials: Credentials) -> Endpoint:
    if credentials.endpoint is None:
        raise RuntimeError(f"partner {PARTNER_ID} was onboarded without its webhook endpoint")
    return credentials.endpoint


def _active(settings: Settings) -> bool:
    with db.connect(services.postgres_dsn(settings), autocommit=True) as conn:
        return registry.active_partner(conn, PARTNER_ID) is not None


def _reused(settings: Settings) -> Credentials:
    """``demo-1``'s credentials without their secrets (shown once, to the run that made them)."""
    kafka_access.create_topic(settings, PARTNER_ID)  # converges: made already, unless deleted
    return Credentials(
        partner_id=PARTNER_ID,
        topic=partner_topic(settings, PARTNER_ID),
        group_prefix=partner_prefix(settings, PARTNER_ID),
        kafka_username=(
            kafka_access.principal(PARTNER_ID) if kafka_access.secured(settings) else None
        ),
        kafka_password=None,
        oauth_client=None,
        endpoint=None,
    )


def _served_endpoint(settings: Settings) -> Endpoint:
    """The reused partner's newest enabled endpoint, at a URL this process can serve.

    Its URL is kept when it is on this machine and its port is free; otherwise (the port
    taken, say by another data dir's demo, or a URL elsewhere) the receiver takes a free
    port and that URL is recorded as the endpoint's, so its deliveries come here."""
    print(f"partner {PARTNER_ID} is onboarded already (a data dir kept from an earlier run): "
          "reusing it")  # fmt: skip
    with db.connect(services.postgres_dsn(settings), autocommit=True) as conn:
        enabled = [e for e in registry.endpoints(conn, PARTNER_ID) if e.enabled]
        if not enabled:
            return _added_endpoint(conn)
        endpoint = enabled[-1]
        address = urlsplit(endpoint.url)
        local = address.hostname in LOCAL_HOSTS and address.port is not None
        if local and not port_open(RECEIVER_HOST, address.port or 0):
            print(f"  its endpoint {endpoint.endpoint_id}: {endpoint.url}, served by this process")
            return endpoint
        url = _receiver_url(RECEIVER_PORT_DEFAULT)
        registry.set_endpoint_url(conn, endpoint.endpoint_id, url)
        print(f"  its endpoint {endpoint.endpoint_id}: {endpoint.url} cannot be served here "
              f"(port taken or not local); recorded {url} instead")  # fmt: skip
        return replace(endpoint, url=url)


def _added_endpoint(conn: db.Connection) -> Endpoint:
    """A new endpoint for the active partner that has none (onboarded without a URL)."""
    partner = registry.active_partner(conn, PARTNER_ID)
    if partner is None:
        raise RuntimeError(f"partner {PARTNER_ID} is no longer active")
    made = registry.add(conn, partner, webhook_url=_receiver_url(RECEIVER_PORT_DEFAULT))
    if made is None:
        raise RuntimeError(f"no webhook endpoint was made for partner {PARTNER_ID}")
    print(f"  it had no webhook endpoint: added {made.endpoint_id} at {made.url}")
    return made


def _onboarded_line(credentials: Credentials, endpoint: Endpoint) -> str:
    kafka = (
        f"Kafka principal {credentials.kafka_username} (SASL/SCRAM)"
        if credentials.kafka_username
        else "no Kafka principal (a plaintext broker)"
    )
    client = "" if credentials.oauth_client is None else (
        f", OAuth client {credentials.oauth_client.client_id}"
    )  # fmt: skip
    return (
        f"partner {PARTNER_ID} onboarded: topic {credentials.topic}, {kafka}{client}; webhooks "
        f"to {endpoint.url} (endpoint {endpoint.endpoint_id}, signing secret "
        f"{_cut(endpoint.secret)}), served by this process"
    )


def _cut(secret: str) -> str:
    return f"{secret[:SECRET_SHOWN_CHARS]}…"


# --- reading the logs ----------------------------------------------------------------------


def _platform_config(settings: Settings) -> dict[str, Any]:
    """The demo's own reader: the platform's principal, read_committed, commits nothing."""
    return settings.kafka.config() | {
        "group.id": PLATFORM_GROUP, "isolation.level": "read_committed",
        "enable.auto.commit": False,
    }  # fmt: skip


def _reader_config(settings: Settings, partner: Partner) -> dict[str, Any]:
    """As the partner (its consumer settings) when this run holds its password, else as the
    platform. Either way the demo assigns partitions itself and commits nothing, so the
    partner's groups stay the partner's."""
    if not partner.onboarded:
        return _platform_config(settings)
    config = client_config.consumer_config(partner.credentials, settings.bootstrap)
    return config | {"isolation.level": "read_committed", "enable.auto.commit": False}


def _ends(config: dict[str, Any], topic: str) -> dict[int, int]:
    """Partition -> end offset (the last stable offset for read_committed) of ``topic``,
    once every partition has a leader (a topic made a moment ago gets them within seconds)."""
    found: list[dict[int, int]] = []

    def answered() -> bool:
        try:
            found.append(_ends_now(config, topic))
        except KafkaException:
            return False
        return True

    if not wait_until(answered, timeout_s=ENDS_TIMEOUT_S):
        raise ServiceError(f"Kafka did not say where {topic} ends in {ENDS_TIMEOUT_S:.0f}s")
    return found[0]


def _ends_now(config: dict[str, Any], topic: str) -> dict[int, int]:
    consumer = Consumer(config)
    try:
        metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), KAFKA_TIMEOUT_S)[1])
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def _partner_events(settings: Settings, partner: Partner, serde: AvroSerde) -> list[Event]:
    """This run's ``demo-1`` events on ``events``, each once, up to where it ends now."""
    config = _platform_config(settings)
    topic = Topics.from_settings(settings).events
    ends = _ends(config, topic)
    consumer = Consumer(config)
    wanted = {p: end for p, end in ends.items() if end > partner.events_from.get(p, 0)}
    found: dict[str, Event] = {}
    try:
        consumer.assign([TopicPartition(topic, p, partner.events_from.get(p, 0)) for p in wanted])
        for message in drain(consumer, {(topic, p): end for p, end in wanted.items()}):
            event = serde.decode_event(message.value() or b"")
            if event.partner_id == PARTNER_ID:
                found.setdefault(event.event_id, event)
    finally:
        consumer.close()
    return list(found.values())


class _TopicFeed:
    """The partner's topic from where it stood when the run began, read as it comes."""

    def __init__(self, settings: Settings, partner: Partner, serde: AvroSerde) -> None:
        self._serde = serde
        self._consumer = Consumer(_reader_config(settings, partner))
        topic = partner.credentials.topic
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in partner.topic_from.items()])
        self.messages = 0
        self.event_ids: set[str] = set()

    def take(self) -> None:
        """What has come since the last call (``CONSUME_BATCHES_MAX`` batches at most)."""
        for _ in range(CONSUME_BATCHES_MAX):
            messages = self._consumer.consume(CONSUME_BATCH_MAX, CONSUME_TIMEOUT_S)
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
                self.messages += 1
                self.event_ids.add(self._serde.decode_event(message.value() or b"").event_id)
            if len(messages) < CONSUME_BATCH_MAX:
                return

    def close(self) -> None:
        self._consumer.close()


class _Mailbox:
    """The notification ids of the emails in the local mailbox's Maildir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[str, str | None] = {}

    def ids(self) -> set[str]:
        if not (self.directory / "new").is_dir():
            return set()  # the mailbox makes its Maildir when it starts
        box = mailbox.Maildir(self.directory, create=False)
        parser = BytesHeaderParser()
        for key in box.iterkeys():
            if key not in self._seen:
                with contextlib.closing(box.get_file(key)) as data:
                    self._seen[key] = parser.parse(data).get(NOTIFICATION_HEADER)  # type: ignore[arg-type]
        return {found for found in self._seen.values() if found is not None}


# --- waiting -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Expected:
    event_ids: set[str]
    webhook_event_ids: set[str]
    emails: dict[str, str]
    """notification id -> its template."""


def _expected(events: Sequence[Event], contacts: Mapping[str, str]) -> _Expected:
    """What the partner's topic, its webhook endpoint and the mailbox must end up holding."""
    emails = {
        wanted.notification_id: wanted.template
        for event in events
        for wanted in rules.wanted(event)
        if wanted.account_id in contacts
    }
    return _Expected(
        event_ids={e.event_id for e in events},
        webhook_event_ids={e.event_id for e in events if webhook_type(e) is not None},
        emails=emails,
    )


def _webhooks_heard(receiver: ReceiverServer, expected: set[str]) -> dict[str, float]:
    """Event id -> ms from its time to the first request of its webhook, for each event of
    ``expected`` whose webhook was verified (a repeat of a ``webhook-id`` counts once)."""
    first_s: dict[str, float] = {}
    for request in receiver.requests():
        first_s[request.webhook_id] = min(first_s.get(request.webhook_id, request.at_s),
                                          request.at_s)  # fmt: skip
    heard: dict[str, float] = {}
    for webhook_id, body in receiver.events().items():
        data = body.get("data", {}) if isinstance(body, dict) else {}
        event_id, at_ms = data.get("event_id"), data.get("occurred_at_ms")
        first = first_s.get(webhook_id)  # None: its request is being recorded now
        if event_id in expected and isinstance(at_ms, int) and first is not None:
            heard[event_id] = first * 1000 - at_ms
    return heard


def wait_heard(
    settings: Settings, partner: Partner, contacts: Mapping[str, str], *, local_mailbox: bool
) -> Heard:
    """Wait (``HEARD_TIMEOUT_S`` at most, a progress bar meanwhile) until the partner's topic,
    the receiver and the mailbox hold what this run's events ask for; their figures."""
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=Topics.from_settings(settings).payloads(),
    )
    expected = _expected(_partner_events(settings, partner, serde), contacts)
    box = _Mailbox(mailbox_dir(settings)) if local_mailbox else None
    feed = _TopicFeed(settings, partner, serde)
    began = time.monotonic()
    try:
        heard = _poll(partner.receiver, expected, feed, box)
    finally:
        feed.close()
    heard.waited_s = time.monotonic() - began
    return heard


def _poll(
    receiver: ReceiverServer, expected: _Expected, feed: _TopicFeed, box: _Mailbox | None
) -> Heard:
    wanted_emails = set(expected.emails) if box is not None else set()
    deadline = time.monotonic() + HEARD_TIMEOUT_S
    with Progress(transient=True) as progress:
        bars = {
            "topic": progress.add_task("partner topic", total=len(expected.event_ids)),
            "webhooks": progress.add_task("webhooks", total=len(expected.webhook_event_ids)),
            "emails": progress.add_task("emails", total=len(wanted_emails)),
        }
        while True:
            feed.take()
            webhooks = _webhooks_heard(receiver, expected.webhook_event_ids)
            emails = wanted_emails & (box.ids() if box is not None else set())
            found = expected.event_ids & feed.event_ids
            for name, done in (("topic", found), ("webhooks", webhooks), ("emails", emails)):
                progress.update(bars[name], completed=len(done))
            complete = (
                found == expected.event_ids
                and len(webhooks) == len(expected.webhook_event_ids)
                and emails == wanted_emails
            )
            if complete or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
    return _figures(receiver, expected, feed, webhooks, emails, box, complete=complete)


def _figures(
    receiver: ReceiverServer, expected: _Expected, feed: _TopicFeed,
    webhooks: dict[str, float], emails: set[str], box: _Mailbox | None, *, complete: bool,
) -> Heard:  # fmt: skip
    requests = receiver.requests()
    return Heard(
        events_expected=len(expected.event_ids),
        topic_messages=feed.messages,
        topic_found=len(expected.event_ids & feed.event_ids),
        webhooks_expected=len(expected.webhook_event_ids),
        webhooks=len(webhooks),
        refused=sum(1 for r in requests if r.status == 400),
        repeats=receiver.duplicates,
        first_attempt_ms=list(webhooks.values()),
        emails_expected=len(expected.emails) if box is not None else 0,
        emails=len(emails),
        templates=Counter(expected.emails[n] for n in emails),
        mailbox=None if box is None else box.directory,
        complete=complete,
    )


# --- the summary ---------------------------------------------------------------------------


def report(settings: Settings, partner: Partner, heard: Heard) -> list[str]:
    """The demo's partner block (lines to print)."""
    topic = partner.credentials.topic
    p50, p95 = heard.first_attempt_percentile_ms(50), heard.first_attempt_percentile_ms(95)
    latency = "" if p50 is None or p95 is None else (
        f"; first attempt P50 {p50:.0f} ms, P95 {p95:.0f} ms from the event's time"
    )  # fmt: skip
    lines = [
        f"partner {PARTNER_ID} ({'onboarded by this run' if partner.onboarded else 'reused'};"
        f" {heard.waited_s:.1f}s until all was heard):",
        f"  {heard.topic_messages:,} events on {topic} ({_read_as(partner)}): "
        f"{heard.topic_found:,} of the {heard.events_expected:,} of this run on "
        f"{Topics.from_settings(settings).events}",
        f"  {heard.webhooks:,} of {heard.webhooks_expected:,} webhooks verified at "
        f"{partner.endpoint.url} ({heard.refused} refused, {heard.repeats} repeats "
        f"ignored){latency}",
        _emails_line(settings, heard),
        f"  read it as the partner: {_kcat(settings, partner)}",
    ]
    if partner.credentials.kafka_username is not None:
        lines.append(f"  ({PASSWORD_PLACEHOLDER}: shown once by `paystream partners add`; "
                     "paystream keeps only the broker's salted hash)")  # fmt: skip
    return lines


def _read_as(partner: Partner) -> str:
    if not partner.onboarded:
        return "read as the platform: its password was shown once, to the run that onboarded it"
    if partner.credentials.kafka_username is None:
        return "read as the partner; a plaintext broker asks for no credentials"
    return f"read as the partner: principal {partner.credentials.kafka_username}, SASL/SCRAM"


def _emails_line(settings: Settings, heard: Heard) -> str:
    if heard.mailbox is None:
        return "  emails: sent to the configured SMTP server (PAYSTREAM_SMTP_URL), not counted"
    kinds = ", ".join(f"{name} {n}" for name, n in heard.templates.most_common())
    return (
        f"  {heard.emails:,} of {heard.emails_expected:,} emails to {len(HOLDER_EMAILS)} holders "
        f"in {heard.mailbox} ({kinds or 'none'})"
    )


def _kcat(settings: Settings, partner: Partner) -> str:
    command = client_config.kcat_command(partner.credentials, settings.bootstrap)
    shown = [
        f"sasl.password={PASSWORD_PLACEHOLDER}" if part.startswith("sasl.password=") else part
        for part in command
    ]
    return shlex.join(shown)
