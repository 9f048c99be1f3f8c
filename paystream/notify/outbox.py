"""The ``notifications`` outbox (migration 0007): enqueue an email in the caller's transaction.

A row is the email's template name, its recipient and the context the template renders;
its id is deterministic (the source's id plus the recipient's role), so enqueueing the
same email twice inserts one row (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from collections.abc import Mapping

from psycopg.types.json import Jsonb

from paystream.audit import db
from paystream.notify import templates

__all__ = ["NOTIFICATION_ID_LENGTH_MAX", "RECIPIENT_LENGTH_MAX", "enqueue"]

NOTIFICATION_ID_LENGTH_MAX = 200
RECIPIENT_LENGTH_MAX = 254
"""RFC 5321's limit on a forward path; the table checks both too."""


def enqueue(
    conn: db.Connection,
    *,
    notification_id: str,
    template: str,
    recipient: str,
    context: Mapping[str, object],
) -> bool:
    """Put one email in the outbox, in ``conn``'s current transaction; False if it was there.

    ``template`` is one of :data:`paystream.notify.templates.TEMPLATE_NAMES` and ``context``
    holds every key it needs (JSON values): both are checked here, so a caller's mistake
    fails its own transaction rather than becoming a dead email later.
    """
    if not 0 < len(notification_id) <= NOTIFICATION_ID_LENGTH_MAX:
        raise ValueError(f"notification_id must be 1..{NOTIFICATION_ID_LENGTH_MAX} characters")
    if not 3 <= len(recipient) <= RECIPIENT_LENGTH_MAX or "@" not in recipient:
        raise ValueError(f"not an email address: {recipient!r}")
    templates.check_context(template, context)
    cursor = conn.execute(
        "INSERT INTO notifications (notification_id, template, recipient, context)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (notification_id) DO NOTHING",
        (notification_id, template, recipient, Jsonb(dict(context))),
    )
    return cursor.rowcount == 1
