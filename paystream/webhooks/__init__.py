"""paystream.webhooks: signed webhooks to partners' endpoints, with a durable delivery queue.

``paystream webhooks`` (:mod:`paystream.webhooks.service`) runs two loops in one process:

- **Ingestion** (:mod:`paystream.webhooks.ingest`, a batching sink on ``events``): each
  event a partner hears about (:mod:`paystream.webhooks.payload`) becomes one delivery row
  per enabled endpoint of its partner, inserted in the Postgres transaction that also
  stores the consumer positions; the delivery's id (the ``webhook-id``) is derived from the
  endpoint and the event, so a re-consumed event inserts nothing twice.
- **Dispatch** (:mod:`paystream.webhooks.dispatcher`): claims due deliveries
  (``FOR UPDATE SKIP LOCKED``, a lease while in flight), signs each attempt per the Standard
  Webhooks spec (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``: HMAC-SHA256
  with the ``standardwebhooks`` library; the id stays, the timestamp and signature are fresh
  per attempt), POSTs it with a timeout, and records the attempt: a 2xx is delivered,
  anything else waits for the next slot of the retry schedule
  (:mod:`paystream.webhooks.schedule`) or, after the last, is dead (the DLQ) and the
  partner's contact is emailed (``paystream.notify``). Each endpoint has a concurrency
  bound and a circuit breaker (:mod:`paystream.webhooks.breaker`).

A receiver verifies with the same library (:mod:`paystream.webhooks.receiver`).
"""
