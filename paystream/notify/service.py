"""``paystream notify``: events into the outbox and the outbox out over SMTP, in one process.

Two loops: the ingest loop (a batching sink on ``events``, consumer group ``notify_group``;
:mod:`paystream.notify.ingest`) in the calling thread, and the sender
(:mod:`paystream.notify.sender`) in a thread of its own. Either failing stops both, and the
error is raised from :meth:`NotifyService.run` (a broken invariant stops the process loudly).
Copies of the service share the group's partitions and the outbox's rows.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from paystream.audit.event_target import RETRIABLE
from paystream.audit.migrate import migrate
from paystream.notify import ingest, smtp
from paystream.notify.sender import DEFAULT_POLICY, Policy, Sender
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.batching import ASSIGN_RETRY_MAX_S, BatchingSink, retry_until
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics, notify_group

__all__ = ["STOP_JOIN_S", "NotifyService"]

STOP_JOIN_S: Final = 60.0
"""How long stopping waits for the sender to finish the email in hand."""
logger = logging.getLogger("paystream.notify")


class NotifyService:
    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str,
        name: str,
        server: smtp.SmtpServer | None = None,
        policy: Policy = DEFAULT_POLICY,
    ) -> None:
        self._dsn = dsn
        topics = Topics.from_settings(settings)
        ensure_topics(settings.kafka, topics)
        serde = AvroSerde(
            registry_from_url(settings.schema_registry_url, settings.data_dir),
            topics=topics.payloads(),
        )
        group = notify_group(settings)
        self._target = ingest.OutboxTarget(dsn, consumer=group, serde=serde)
        self._loop = BatchingSink(
            kafka=settings.kafka, group=group, name=name, topics=[topics.events],
            target=self._target, limits=ingest.LIMITS, observer=ingest.observer(),
        )  # fmt: skip
        self.server = server or smtp.server_for(settings)
        self._sender = Sender(dsn, server=self.server, sender=settings.smtp_from, policy=policy)
        self._failure: BaseException | None = None

    def stop(self) -> None:
        """Finish the batch and the email in hand, then leave."""
        self._loop.stop()
        self._sender.stop()

    def run(self) -> None:
        retry_until(
            lambda: migrate(self._dsn), retriable=RETRIABLE,
            what="migrating the audit store", timeout_s=ASSIGN_RETRY_MAX_S,
        )  # fmt: skip
        thread = threading.Thread(target=self._send, name="notify-sender", daemon=True)
        thread.start()
        try:
            self._loop.run()
        finally:
            self._sender.stop()
            thread.join(STOP_JOIN_S)
            self._target.close()
        if self._failure is not None:
            raise self._failure

    def _send(self) -> None:
        try:
            self._sender.run()
        except BaseException as error:
            logger.exception("the sender stopped")
            self._failure = error
            self._loop.stop()
