"""``paystream mailbox``: a local SMTP server (aiosmtpd) that keeps every message in a Maildir.

For ``make demo`` and a laptop: the notifier's default server (``smtp_url`` unset) is this
one on ``127.0.0.1:smtp_port``, and each email lands as a file under
``<data_dir>/mailbox/new/`` (read it with any mail reader, or ``mailbox.Maildir``). It
listens on loopback only, takes no TLS or login, and is bounded: a message above
``MESSAGE_BYTES_MAX`` is refused (552), and once ``MESSAGES_MAX`` are kept, more get 452
(a temporary refusal: the notifier retries them later).
"""

from __future__ import annotations

from email.message import Message
from pathlib import Path
from typing import Any, Final

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

from paystream.settings import Settings

__all__ = [
    "MAILBOX_DIR",
    "MESSAGES_MAX",
    "MESSAGE_BYTES_MAX",
    "BoundedMaildir",
    "mailbox_dir",
    "start",
]

MAILBOX_DIR: Final = "mailbox"
MESSAGES_MAX: Final = 100_000
MESSAGE_BYTES_MAX: Final = 1024 * 1024
"""An email of the notifier is a few kB; SMTP's SIZE extension announces this bound."""


def mailbox_dir(settings: Settings) -> Path:
    return settings.data_dir / MAILBOX_DIR


class BoundedMaildir(Mailbox):
    """aiosmtpd's Maildir handler with a bound on the messages kept."""

    def __init__(self, directory: Path, *, messages_max: int = MESSAGES_MAX) -> None:
        directory.parent.mkdir(parents=True, exist_ok=True)  # Maildir makes cur/new/tmp
        super().__init__(directory)
        self._messages_max = messages_max
        self._count = len(self.mailbox)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._count >= self._messages_max:
            return f"452 4.3.1 mailbox full ({self._messages_max} messages)"
        answer: str = await super().handle_DATA(server, session, envelope)
        return answer

    def handle_message(self, message: Message) -> None:
        self.mailbox.add(message)
        self._count += 1


def start(directory: Path, *, host: str, port: int) -> Controller:
    """Serve a Maildir at ``directory`` on ``host:port`` in a background thread; the
    controller's ``stop()`` ends it."""
    controller = Controller(
        BoundedMaildir(directory), hostname=host, port=port, data_size_limit=MESSAGE_BYTES_MAX
    )
    controller.start()
    return controller
