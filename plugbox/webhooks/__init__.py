"""Outbound webhooks (SPEC §9): subscriptions managed by the operator, a durable delivery queue in the
host's database, retries with exponential backoff and jitter, a dead-letter list with replay,
Standard Webhooks signatures, and delivery through the `net.fetch` guard.

    subscriptions  what a subscription is; checking the operator's request
    store          the tables and the queue (SQL only)
    signing        secrets and the Standard Webhooks headers
    delivery       the worker: attempts, backoff, dead-lettering, the guarded sender
    service        the seam into the host's events, CRUD, lists and replay
"""

from plugbox.webhooks.delivery import Backoff, Sender
from plugbox.webhooks.service import WebhookService
from plugbox.webhooks.store import Delivery
from plugbox.webhooks.subscriptions import Subscription, SubscriptionSpec, parse_spec

__all__ = ["Backoff", "Delivery", "Sender", "Subscription", "SubscriptionSpec", "WebhookService", "parse_spec"]
