"""Emails rendered from their templates, the SMTP message around them, the SMTP URL, the
backoff: pure pieces of paystream.notify."""

from __future__ import annotations

import random
from email.message import EmailMessage
from importlib import resources

import pytest

from paystream.ledger.models import AMOUNT_MAX_MINOR
from paystream.notify import smtp, templates
from paystream.notify.sender import ATTEMPTS_MAX, DEFAULT_POLICY, Policy, retry_delay_s
from paystream.notify.templates import REQUIRED_KEYS, TEMPLATE_NAMES, TemplateError, render

T_MS = 1_764_500_000_000  # 2025-11-30 10:53:20 UTC


def transfer(**changes: object) -> dict[str, object]:
    context: dict[str, object] = {
        "event_id": "pay-1:completed", "event_type": "Completed", "payment_id": "pay-1",
        "partner_id": "p1", "account_id": "acc-src", "counterparty_account_id": "acc-dst",
        "amount_minor": 123_456, "currency": "EUR", "reference": None, "issued_at_ms": T_MS,
    }  # fmt: skip
    return context | changes


def minimal(template: str) -> dict[str, object]:
    """Every key ``template`` needs, with a plausible value."""
    values: dict[str, object] = transfer() | {
        "batch_id": "batch-1", "beneficiary_name": "Ada Lovelace", "code": "AC04",
        "endpoint_url": "https://partner.example/hooks", "delivery_id": "msg_" + "0" * 32,
        "attempts": 8, "last_error": "503 from the endpoint",
    }  # fmt: skip
    return {key: values[key] for key in REQUIRED_KEYS[template]}


@pytest.mark.parametrize(
    ("amount_minor", "currency", "shown"),
    [
        (123_456, "EUR", "1,234.56 EUR"),
        (5, "EUR", "0.05 EUR"),
        (123_456, "JPY", "123,456 JPY"),
        (1_234, "KWD", "1.234 KWD"),
        (10_001, "CLF", "1.0001 CLF"),
        (AMOUNT_MAX_MINOR, "EUR", "92,233,720,368,547,758.07 EUR"),
        (10**16 + 1, "USD", "100,000,000,000,000.01 USD"),  # a float would say .00
    ],
)
def test_amounts_are_shown_with_the_currency_exponent_exactly(
    amount_minor: int, currency: str, shown: str
) -> None:
    email = render("transfer_sent", transfer(amount_minor=amount_minor, currency=currency))
    assert email.subject == f"You sent {shown} to acc-dst"
    assert f"Amount:      {shown}\n" in email.text
    assert f"<td>{shown}</td>" in email.html


def test_a_transfer_email_carries_its_ids_reference_and_time() -> None:
    sent = render("transfer_sent", transfer(reference="invoice 42"))
    received = render("transfer_received", transfer(reference="invoice 42"))
    for email in (sent, received):
        for needle in ("pay-1", "acc-src", "acc-dst", "invoice 42", "pay-1:completed",
                       "2025-11-30 10:53:20 UTC"):  # fmt: skip
            assert needle in email.text and needle in email.html
    assert received.subject == "You received 1,234.56 EUR from acc-src"
    assert "Reference" not in render("transfer_sent", transfer()).text


def test_html_is_escaped_and_text_is_not() -> None:
    email = render("transfer_sent", transfer(reference="<script>x</script> & co"))
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in email.html and "<script>" not in email.html
    assert "<script>x</script> & co" in email.text


def test_a_subject_is_one_bounded_line_whatever_the_context_holds() -> None:
    name = "Eve\r\nBcc: everyone@example.com\n" + "x" * 400
    context = minimal("payout_settled") | {"beneficiary_name": name}
    subject = render("payout_settled", context).subject
    assert "\n" not in subject and "\r" not in subject
    assert subject.startswith("Your payout of 1,234.56 EUR to Eve Bcc: everyone@example.com x")
    assert len(subject) == templates.SUBJECT_LENGTH_MAX and subject.endswith("…")


@pytest.mark.parametrize("template", sorted(TEMPLATE_NAMES))
def test_every_template_has_its_three_files_and_renders_its_required_keys(template: str) -> None:
    files = {entry.name for entry in resources.files("paystream.notify").joinpath(
        "templates").iterdir()}  # fmt: skip
    assert {f"{template}.subject.txt", f"{template}.txt", f"{template}.html"} <= files
    email = render(template, minimal(template))
    assert email.subject and email.text.strip() and email.html.startswith("<!DOCTYPE html>")
    for key in REQUIRED_KEYS[template]:
        if key not in ("amount_minor", "currency", "issued_at_ms", "event_type"):
            assert str(minimal(template)[key]) in email.text, key


def test_a_webhook_exhausted_email_tells_the_partner_what_failed() -> None:
    email = render("webhook_exhausted", minimal("webhook_exhausted"))
    assert email.subject == (
        "Webhook delivery to https://partner.example/hooks gave up after 8 attempts"
    )
    assert "503 from the endpoint" in email.html and "pay-1:completed" in email.text


@pytest.mark.parametrize(
    ("template", "context", "says"),
    [
        ("no_such_template", {}, "no email template 'no_such_template'"),
        ("transfer_sent", {"amount_minor": 1}, "needs context keys"),
        ("transfer_sent", transfer(amount_minor=12.5), "must be an int of minor units"),
        ("transfer_sent", transfer(amount_minor=True), "must be an int of minor units"),
        ("transfer_sent", transfer(currency="XYZ"), "could not render"),
    ],
)
def test_a_context_that_cannot_render_is_refused(
    template: str, context: dict[str, object], says: str
) -> None:
    with pytest.raises(TemplateError, match=says):
        render(template, context)


def test_a_message_has_both_bodies_and_the_same_message_id_on_every_send() -> None:
    rendered = render("transfer_sent", transfer())
    sender = "paystream <notifications@pay.example>"

    def build(notification_id: str, now_s: float) -> EmailMessage:
        return smtp.message(rendered, notification_id=notification_id, sender=sender,
                            recipient="holder@example.com", now_s=now_s)  # fmt: skip

    first, again, other = build("n-1", 1.0), build("n-1", 99.0), build("n-2", 1.0)
    assert first["Message-ID"] == again["Message-ID"] != other["Message-ID"]
    assert str(first["Message-ID"]).endswith("@pay.example>")
    assert first[smtp.NOTIFICATION_HEADER] == "n-1" and first["To"] == "holder@example.com"
    assert first["Subject"] == rendered.subject and first.get_content_type() == (
        "multipart/alternative"
    )
    kinds = [part.get_content_type() for part in first.iter_parts()]
    assert kinds == ["text/plain", "text/html"]


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("smtp://mail.example:2525", smtp.SmtpServer(host="mail.example", port=2525,
                                                     security="starttls")),
        ("smtps://u%40x:p%3Aw@mail.example", smtp.SmtpServer(
            host="mail.example", port=465, security="tls", username="u@x", password="p:w")),
        ("smtp://127.0.0.1", smtp.SmtpServer(host="127.0.0.1", port=25, security="starttls")),
    ],
)  # fmt: skip
def test_smtp_urls(url: str, server: smtp.SmtpServer) -> None:
    assert smtp.parse_smtp_url(url) == server
    assert "p:w" not in repr(smtp.parse_smtp_url(url))


@pytest.mark.parametrize("url", ["http://mail.example", "smtp://", "smtp://h/path", "smtp://h?x=1"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="SMTP URL"):
        smtp.parse_smtp_url(url)


def test_the_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    policy = Policy(backoff_initial_s=2.0, backoff_max_s=60.0)
    rng = random.Random(7)
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (500, 60.0)):
        delays = [retry_delay_s(attempts, policy, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, min(delays))
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


def test_the_default_policy_bounds_attempts_and_leases_beyond_a_claimed_batch() -> None:
    assert DEFAULT_POLICY.attempts_max == ATTEMPTS_MAX
    worst_s = DEFAULT_POLICY.claim_max * 5 * DEFAULT_POLICY.send_timeout_s
    assert DEFAULT_POLICY.lease_s > worst_s
    spent_s = sum(
        min(DEFAULT_POLICY.backoff_max_s, DEFAULT_POLICY.backoff_initial_s * 2 ** (n - 1)) / 2
        for n in range(1, ATTEMPTS_MAX)
    )
    assert 3_600 < spent_s < 4 * 3_600  # at least an hour of refusals before the DLQ
    with pytest.raises(Exception, match="sends nothing"):
        Policy(attempts_max=0)
