"""paystream.notify: email notifications to account holders and partner contacts.

Events become rows of the ``notifications`` outbox (:mod:`paystream.notify.ingest`,
a batching sink); a sender (:mod:`paystream.notify.sender`) renders each due row from
its template and sends it over SMTP, with backoff, until it is ``sent`` or ``dead``
(the DLQ). Other services put an email in the outbox with :func:`outbox.enqueue`.
"""
