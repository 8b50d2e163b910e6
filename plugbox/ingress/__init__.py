"""Ingress v2's durable side (SPEC §9, issue 13): the queue of async ingress deliveries, their
retries and dead-letter list, and the `dedupOn` keys.

    store   the tables (SQL only)
    dedup   the `dedupOn` keys: their table, per-plugin counts, the plugin's bound and the host's total
    queue   the service: submit with bounds and dedup, the runner, list and replay
    instances  the instances an operator creates, each with its own secrets (table and checks)

Verifying a request is `plugbox.api.ingress`; finding a route and running a handler is
`plugbox.lifecycle.ingress`; the HTTP routes are `plugbox.api.routes.ingress`.
"""

from plugbox.ingress.queue import IngressQueue
from plugbox.ingress.store import DedupKey, Delivery, Enqueued

__all__ = ["DedupKey", "Delivery", "Enqueued", "IngressQueue"]
