"""``paystream mailbox``: a real SMTP server on loopback that keeps each email in a Maildir,
bounded, and the notifier's SMTP session talking to it."""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from paystream.notify import smtp
from paystream.notify.mailbox import BoundedMaildir, start
from paystream.notify.templates import render
from paystream.services.process import free_port, port_open, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HOST = "127.0.0.1"
FROM = "paystream <notifications@pay.example>"
START_S = 30.0
CONTEXT: dict[str, object] = {
    "event_id": "pay-1:completed/holder", "payment_id": "pay-1", "account_id": "acc-1",
    "amount_minor": 1_250, "currency": "EUR", "issued_at_ms": 0,
}  # fmt: skip


def email(n: int) -> EmailMessage:
    return smtp.message(render("deposit_completed", CONTEXT), notification_id=f"n-{n}",
                        sender=FROM, recipient="holder@example.com", now_s=0.0)  # fmt: skip


def test_each_email_lands_in_the_maildir_until_the_bound(tmp_path: Path) -> None:
    port = free_port(HOST)
    controller = Controller(BoundedMaildir(tmp_path / "mail", messages_max=2), hostname=HOST,
                            port=port)  # fmt: skip
    controller.start()
    session = smtp.Session(smtp.SmtpServer(host=HOST, port=port, security="starttls"),
                           timeout_s=5.0)  # fmt: skip
    try:
        session.open()
        session.send(email(1))
        session.send(email(2))
        with pytest.raises(smtp.Temporary, match="452"):
            session.send(email(3))
    finally:
        session.close()
        controller.stop()
    kept = mailbox.Maildir(tmp_path / "mail", create=False)
    messages = sorted(kept, key=lambda m: str(m["X-Paystream-Notification-Id"]))
    assert [m["X-Paystream-Notification-Id"] for m in messages] == ["n-1", "n-2"]
    assert messages[0]["Subject"] == "12.50 EUR deposited into acc-1"
    assert messages[0]["X-RcptTo"] == "holder@example.com"


def test_the_mailbox_command_serves_the_data_dirs_maildir_until_sigterm(tmp_path: Path) -> None:
    port = free_port(HOST)
    env = {**os.environ, "PAYSTREAM_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "paystream.cli", "mailbox", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: port_open(HOST, port), timeout_s=START_S)
        session = smtp.Session(smtp.SmtpServer(host=HOST, port=port, security="starttls"),
                               timeout_s=5.0)  # fmt: skip
        session.open()
        session.send(email(1))
        session.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=START_S)
    assert process.returncode == 0, output
    assert f"mailbox: smtp://{HOST}:{port} -> {tmp_path / 'mailbox'}/new" in output
    [kept] = list(mailbox.Maildir(tmp_path / "mailbox", create=False))
    assert kept["Message-ID"] == smtp.message_id("n-1", FROM)


def test_start_makes_the_directory(tmp_path: Path) -> None:
    port = free_port(HOST)
    controller = start(tmp_path / "deep" / "mailbox", host=HOST, port=port)
    controller.stop()
    assert (tmp_path / "deep" / "mailbox" / "new").is_dir()
