"""``paystream webhooks``: one copy of the delivery service (ingestion + dispatch).

The ingestion loop (a batching sink, blocking librdkafka calls) runs in a thread of its own;
the dispatcher's asyncio loop runs in the calling thread. Either one failing stops both and
the process exits with the error: a broken invariant is never logged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Final

from paystream.audit.event_target import RETRIABLE
from paystream.audit.migrate import migrate
from paystream.settings import Settings
from paystream.topology.batching import ASSIGN_RETRY_MAX_S, retry_until
from paystream.webhooks.dispatcher import CONCURRENCY_MAX_DEFAULT, Dispatcher, DispatchOptions
from paystream.webhooks.ingest import ingestion

__all__ = ["WebhookService"]

JOIN_TIMEOUT_S: Final = 60.0
logger = logging.getLogger("paystream.webhooks")


class WebhookService:
    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str,
        name: str,
        concurrency_max: int = CONCURRENCY_MAX_DEFAULT,
    ) -> None:
        self._dsn = dsn
        self._ingest_loop, self._target = ingestion(settings, dsn=dsn, name=name)
        options = DispatchOptions.from_settings(settings, concurrency_max=concurrency_max)
        self._dispatcher = Dispatcher(dsn, options)
        self._failure: BaseException | None = None

    def stop(self) -> None:
        """Finish the batch in hand and the requests in flight (bounded), then leave."""
        self._ingest_loop.stop()
        self._dispatcher.stop()

    def run(self) -> None:
        retry_until(
            lambda: migrate(self._dsn), retriable=RETRIABLE, what="migrating the store",
            timeout_s=ASSIGN_RETRY_MAX_S,
        )  # fmt: skip
        thread = threading.Thread(target=self._ingest, name="webhooks-ingest", daemon=True)
        thread.start()
        try:
            asyncio.run(self._dispatcher.run())
        finally:
            self._ingest_loop.stop()
            thread.join(JOIN_TIMEOUT_S)
        if self._failure is not None:
            raise self._failure

    def _ingest(self) -> None:
        try:
            self._ingest_loop.run()
        except BaseException as error:  # handed to run(), which raises it in the main thread
            logger.error("webhook ingestion stopped: %s", error)
            self._failure = error
            self._dispatcher.stop()
        finally:
            self._target.close()
