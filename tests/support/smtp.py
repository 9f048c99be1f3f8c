"""A real SMTP server for the notifier's tests: aiosmtpd on 127.0.0.1, recording each message
it accepts, able to go down and come back on the same port, or to refuse every message."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from paystream.notify import smtp
from paystream.services.process import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    message_id: str
    notification_id: str
    sender: str
    recipient: str
    subject: str
    text: str
    html: str


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return (
        "" if text is None else str(text.get_content()).replace("\r\n", "\n"),
        "" if html is None else str(html.get_content()).replace("\r\n", "\n"),
    )


class Recorder:
    """aiosmtpd's handler: accept and record, or answer ``refuse_data`` / ``refuse_rcpt``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse_rcpt: str | None = None
        self.refuse_data: str | None = None
        self.delay_s = 0.0
        """How long each message's DATA takes to be answered (before it is recorded)."""
        self._lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse_rcpt is not None:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data is not None:
            return self.refuse_data
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        if not isinstance(parsed, EmailMessage):
            return "554 not a message"
        text, html = _parts(parsed)
        with self._lock:
            self.received.append(
                Received(
                    message_id=str(parsed["Message-ID"]),
                    notification_id=str(parsed[smtp.NOTIFICATION_HEADER]),
                    sender=str(parsed["From"]),
                    recipient=",".join(envelope.rcpt_tos),
                    subject=str(parsed["Subject"]),
                    text=text,
                    html=html,
                )
            )
        return "250 Message accepted"

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)


class TestSmtpServer:
    """One port for the test's whole life: ``start``/``stop`` take the server up and down."""

    __test__ = False

    def __init__(self) -> None:
        self.port = free_port(HOST)
        self.recorder = Recorder()
        self._controller: Controller | None = None

    @property
    def server(self) -> smtp.SmtpServer:
        return smtp.SmtpServer(host=HOST, port=self.port, security="starttls")

    def start(self) -> None:
        if self._controller is None:
            self._controller = Controller(self.recorder, hostname=HOST, port=self.port)
            self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> TestSmtpServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
