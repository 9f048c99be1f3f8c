"""Email templates: Jinja2, a subject, a plain-text body and an HTML body per template.

``templates/<name>.subject.txt``, ``<name>.txt`` and ``<name>.html`` (HTML autoescaped, the
text ones not; undefined names are errors, never blanks). A template renders the context
stored with its outbox row; amounts are stored as integer minor units plus a currency and
shown with the currency's exponent by the ``money`` filter (:func:`paystream.money.format_money`,
exact decimals, never a float). Times are stored as epoch milliseconds (``utc`` filter).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import jinja2

from paystream.money import format_money

__all__ = [
    "REQUIRED_KEYS",
    "SUBJECT_LENGTH_MAX",
    "TEMPLATE_NAMES",
    "Rendered",
    "TemplateError",
    "check_context",
    "render",
]

_TRANSFER_KEYS = (
    "event_id", "payment_id", "account_id", "counterparty_account_id", "amount_minor",
    "currency", "issued_at_ms",
)  # fmt: skip
_PAYOUT_KEYS = (
    "event_id", "payment_id", "account_id", "amount_minor", "currency", "issued_at_ms",
    "batch_id", "beneficiary_name",
)  # fmt: skip
REQUIRED_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "transfer_sent": _TRANSFER_KEYS,
    "transfer_received": _TRANSFER_KEYS,
    "deposit_completed": _PAYOUT_KEYS[:6],
    "withdrawal_completed": _PAYOUT_KEYS[:6],
    "payout_settled": _PAYOUT_KEYS,
    "payout_failed": (*_PAYOUT_KEYS, "code"),
    "webhook_exhausted": (
        "partner_id", "endpoint_url", "delivery_id", "event_id", "event_type", "attempts",
        "last_error",
    ),
}  # fmt: skip
"""Each template's context keys (optional ones, such as ``reference``, may be absent)."""
TEMPLATE_NAMES: Final = frozenset(REQUIRED_KEYS)
SUBJECT_LENGTH_MAX = 200
"""A subject longer than this is cut (with an ellipsis): RFC 5322 asks lines under 998."""


class TemplateError(ValueError):
    """An unknown template, or a context that lacks what the template shows."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


def _utc(epoch_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("paystream.notify", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    environment.filters["money"] = format_money
    environment.filters["utc"] = _utc
    return environment


_ENVIRONMENT: Final = _environment()


def check_context(template: str, context: Mapping[str, object]) -> None:
    """Refuse an unknown template, or a context that lacks one of its keys."""
    required = REQUIRED_KEYS.get(template)
    if required is None:
        raise TemplateError(f"no email template {template!r}; known: {sorted(TEMPLATE_NAMES)}")
    missing = [key for key in required if key not in context]
    if missing:
        raise TemplateError(f"template {template!r} needs context keys {missing}")
    amount_minor = context.get("amount_minor")
    if amount_minor is not None and type(amount_minor) is not int:
        raise TemplateError(f"amount_minor must be an int of minor units, not {amount_minor!r}")


def render(template: str, context: Mapping[str, object]) -> Rendered:
    """The email ``template`` makes of ``context`` (TemplateError if it cannot)."""
    check_context(template, context)
    values = {"reference": None, "reason": None} | dict(context)
    try:
        subject = _ENVIRONMENT.get_template(f"{template}.subject.txt").render(values)
        text = _ENVIRONMENT.get_template(f"{template}.txt").render(values)
        html = _ENVIRONMENT.get_template(f"{template}.html").render(values)
    except (jinja2.TemplateError, KeyError, ValueError, TypeError) as error:
        raise TemplateError(f"template {template!r} could not render: {error}") from error
    return Rendered(subject=_one_line(subject), text=text, html=html)


def _one_line(subject: str) -> str:
    """A header value: whitespace (newlines included) folded to single spaces, bounded."""
    flat = " ".join(subject.split())
    if len(flat) > SUBJECT_LENGTH_MAX:
        return flat[: SUBJECT_LENGTH_MAX - 1] + "…"
    return flat
