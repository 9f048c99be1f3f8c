"""The Standard Webhooks headers of one attempt, signed with the ``standardwebhooks`` library.

``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` under the
endpoint's secret (``whsec_`` + base64). The ``webhook-id`` is the delivery's and stays the
same on every retry; ``webhook-timestamp`` (whole seconds) and the signature are made
afresh for each attempt, so a receiver's 5-minute tolerance never refuses a late retry.
"""

from __future__ import annotations

import datetime
from typing import Final

from standardwebhooks import Webhook

__all__ = ["CONTENT_TYPE", "USER_AGENT", "signed_headers"]

CONTENT_TYPE: Final = "application/json"
USER_AGENT: Final = "paystream-webhooks/1"


def signed_headers(
    *, secret: str, webhook_id: str, body: str, at: datetime.datetime
) -> dict[str, str]:
    """The headers of one attempt sending ``body`` at ``at`` (an aware time)."""
    if at.tzinfo is None:
        raise ValueError("the signing time must be timezone-aware")
    at = at.astimezone(datetime.UTC).replace(microsecond=0)
    signature = Webhook(secret).sign(msg_id=webhook_id, timestamp=at, data=body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
    }
