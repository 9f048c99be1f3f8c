"""SMTP: the server's URL, the message an outbox row becomes, and one session to send it.

Why stdlib ``smtplib`` and not aiosmtplib: the notifier is synchronous like every sink here
(psycopg and confluent-kafka in plain threads); the sender runs in its own thread and sends
one message at a time over one reused session, so an async client would add a dependency
and an event loop for no concurrency we use. Every socket operation is bounded by
``timeout_s``.

Errors come in three kinds, which the sender treats differently:
:class:`Unavailable` (no session: the server is down, refuses the session or the login; no
email is charged an attempt), :class:`Temporary` (4xx, a dropped connection, a timeout:
retried with backoff) and :class:`Permanent` (5xx for this recipient or this message:
dead at once).
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

from paystream.notify.templates import Rendered
from paystream.settings import Settings

__all__ = [
    "LOCAL_HOST",
    "NOTIFICATION_HEADER",
    "Permanent",
    "Session",
    "SmtpServer",
    "Temporary",
    "Unavailable",
    "message",
    "message_id",
    "parse_smtp_url",
    "server_for",
]

LOCAL_HOST: Final = "127.0.0.1"
NOTIFICATION_HEADER: Final = "X-Paystream-Notification-Id"
DEFAULT_PORTS: Final = {"smtp": 25, "smtps": 465}
ERROR_TEXT_LENGTH_MAX = 500
"""What is kept of a server's answer in ``last_error`` (the column holds 2,000)."""
Security = Literal["starttls", "tls"]


class Unavailable(Exception):
    """No session with the server (down, refusing the session, or the login)."""


class Temporary(Exception):
    """This message was not accepted now; worth another attempt later."""


class Permanent(Exception):
    """The server refused this message or its recipient for good (a 5xx answer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpServer:
    host: str
    port: int
    security: Security
    """``starttls`` (``smtp://``): upgraded when the server offers STARTTLS, and required
    when there are credentials; ``tls`` (``smtps://``): TLS from the first byte."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://[user:password@]host[:port]`` or ``smtps://...`` (ValueError otherwise)."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError("an SMTP URL is smtp://[user:password@]host[:port] or smtps://...")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("an SMTP URL has no path, query or fragment")
    return SmtpServer(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],
        security="tls" if parts.scheme == "smtps" else "starttls",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def server_for(settings: Settings) -> SmtpServer:
    """The configured server, else the local mailbox (``paystream mailbox``)."""
    if settings.smtp_url is None:
        return SmtpServer(host=LOCAL_HOST, port=settings.smtp_port, security="starttls")
    return parse_smtp_url(settings.smtp_url.get_secret_value())


def message_id(notification_id: str, sender: str) -> str:
    """The Message-ID of every send of this notification: the same on a resend, so a
    receiver (or a test) recognises a repeat."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "paystream.localhost"
    return f"<{hashlib.sha256(notification_id.encode()).hexdigest()[:40]}@{domain}>"


def message(
    rendered: Rendered, *, notification_id: str, sender: str, recipient: str, now_s: float
) -> EmailMessage:
    """A multipart/alternative email (text, then HTML) with the notification's Message-ID."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = recipient
    email["Subject"] = rendered.subject
    email["Date"] = formatdate(now_s, usegmt=True)
    email["Message-ID"] = message_id(notification_id, sender)
    email[NOTIFICATION_HEADER] = notification_id
    email.set_content(rendered.text)
    email.add_alternative(rendered.html, subtype="html")
    return email


class Session:
    """One SMTP session, opened on demand and reused for consecutive messages."""

    def __init__(self, server: SmtpServer, *, timeout_s: float) -> None:
        self._server = server
        self._timeout_s = timeout_s
        self._client: smtplib.SMTP | None = None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        """Connect, greet, secure and log in (Unavailable on any failure)."""
        if self._client is not None:
            return
        try:
            self._client = self._connect()
        except (OSError, smtplib.SMTPException) as error:
            raise Unavailable(_describe(error)) from error

    def _connect(self) -> smtplib.SMTP:
        server, context = self._server, ssl.create_default_context()
        client: smtplib.SMTP
        if server.security == "tls":
            client = smtplib.SMTP_SSL(
                server.host, server.port, timeout=self._timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=self._timeout_s)
        try:
            client.ehlo()
            if server.security == "starttls" and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            elif server.username is not None and server.security == "starttls":
                raise Unavailable("the server offers no STARTTLS: credentials not sent in clear")
            if server.username is not None and server.password is not None:
                client.login(server.username, server.password)
        except BaseException:
            _quietly_close(client)
            raise
        return client

    def send(self, email: EmailMessage) -> None:
        """Hand ``email`` over (Temporary or Permanent when it was not accepted)."""
        if self._client is None:
            raise Temporary("no SMTP session")
        try:
            refused = self._client.send_message(email)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            kind = Permanent if codes and all(code >= 500 for code in codes) else Temporary
            raise kind(_describe(error)) from error
        except smtplib.SMTPDataError as error:
            raise (Permanent if error.smtp_code >= 500 else Temporary)(_describe(error)) from error
        except smtplib.SMTPResponseException as error:
            self.close()  # MAIL FROM refused, 421 closing, ...: not this email's fault
            raise Temporary(_describe(error)) from error
        except (OSError, smtplib.SMTPException) as error:  # dropped, timed out
            self.close()
            raise Temporary(_describe(error)) from error
        if refused:  # one recipient per message: a partial refusal cannot happen
            raise Temporary(f"recipients refused: {refused}")

    def close(self) -> None:
        if self._client is not None:
            _quietly_close(self._client)
            self._client = None


def _quietly_close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        text = "; ".join(f"{code} {reply!r}" for code, reply in error.recipients.values())
    elif isinstance(error, smtplib.SMTPResponseException):
        text = f"{error.smtp_code} {error.smtp_error!r}"
    else:
        text = f"{type(error).__name__}: {error}"
    return text[:ERROR_TEXT_LENGTH_MAX]
