"""Outbound webhook pieces that need no network: backoff, signatures, the queue's bounds."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from plugbox.errors import ConfigError
from plugbox.storage.db import Database
from plugbox.storage.sqlite import SqliteDatabase
from plugbox.webhooks import Backoff, parse_spec
from plugbox.webhooks.signing import check_secret, headers, new_secret
from plugbox.webhooks.store import DEAD, DELIVERED, PENDING, NewDelivery, WebhookStore
from plugbox.webhooks.subscriptions import Subscription


def test_backoff_doubles_within_its_jitter_and_stops_at_the_maximum() -> None:
    backoff, rng = Backoff(initial_s=1.0, max_s=8.0), random.Random(7)
    for failed, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (60, 8.0), (500, 8.0)):
        delays = [backoff.delay(failed, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays), failed
        assert max(delays) - min(delays) > base / 4  # jittered, not a fixed step


def test_signature_headers_verify_with_the_reference_implementation() -> None:
    secret = new_secret()
    body = b'{"id":"msg_1","event":"session:ready"}'
    now = time.time()  # the reference verifier checks the timestamp against its own clock
    sent = headers(secret, "msg_1", now, body)
    assert sent["webhook-id"] == "msg_1" and sent["webhook-timestamp"] == str(int(now))
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, sent) == {"id": "msg_1", "event": "session:ready"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", sent)


@pytest.mark.parametrize("secret", ["plain", "whsec_not base64!", "whsec_" + "QUFB", ""])
def test_a_weak_or_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(ConfigError, match="secret"):
        check_secret(secret)


def test_webhook_events_cannot_be_subscribed_to() -> None:
    with pytest.raises(ConfigError, match="deliveries fire it"):
        parse_spec({"url": "https://x.example/", "events": ["webhook:error"]})
    sub = Subscription(id="w", url="https://x.example/", events=("*",), secret=new_secret(), enabled=True,
                       description="", created_at=0.0)
    assert sub.wants("message:received") and not sub.wants("webhook:delivered")


async def test_the_queue_refuses_past_its_cap_and_keeps_bounded_history(any_db: Database) -> None:
    db = any_db
    store = WebhookStore(db, history_max=2)
    sub = Subscription(id="w", url="https://x.example/", events=("*",), secret=new_secret(), enabled=True,
                       description="", created_at=0.0)
    await store.insert(sub)
    batch = [NewDelivery(f"msg_{i}", "w", "session:ready", None, b"{}") for i in range(5)]
    assert await store.enqueue(batch, now=1.0, queue_max=3, per_cause=10) == ["msg_0", "msg_1", "msg_2"]
    for i in range(3):
        assert await store.finish(f"msg_{i}", DELIVERED, 1, 200, None, now=2.0)
    assert [d.id for d in store.deliveries(subscription_id="w", state=DELIVERED, limit=10)] == ["msg_2", "msg_1"]
    assert await store.enqueue(batch[3:], now=3.0, queue_max=3, per_cause=10) == ["msg_3", "msg_4"]
    assert await store.finish("msg_3", DEAD, 8, 500, "HTTP 500", now=4.0)
    assert await store.replay("msg_3", now=5.0) and not await store.replay("msg_4", now=5.0)
    assert [d.id for d in store.due(now=5.0, limit=10, skip=["msg_4"])] == ["msg_3"]
    await store.delete("w")
    assert store.deliveries(subscription_id=None, state=None, limit=10) == []  # cascaded
    await db.close()


async def test_finished_deliveries_keep_a_history_bounded_in_bytes_too(any_db: Database) -> None:
    """Ten rows of history would allow ten full bodies: the bytes bound keeps only the newest that
    fit (here 2,500 bytes: two 1,000-byte bodies), whatever the row bound allows."""
    store = WebhookStore(any_db, history_max=10, history_max_bytes=2500)
    await store.insert(Subscription(id="w", url="https://x.example/", events=("*",), secret=new_secret(),
                                    enabled=True, description="", created_at=0.0))
    big = b'"' + b"x" * 998 + b'"'
    batch = [NewDelivery(f"msg_{i}", "w", "message:sent", None, big, "flooder") for i in range(6)]
    assert len(await store.enqueue(batch, now=1.0, queue_max=10, per_cause=10)) == 6
    for i in range(5):
        assert await store.finish(f"msg_{i}", DELIVERED, 1, 200, None, now=2.0)
    kept = [d.id for d in store.deliveries(subscription_id="w", state=DELIVERED, limit=10)]
    assert kept == ["msg_4", "msg_3"]
    assert [d.id for d in store.deliveries(subscription_id="w", state=PENDING, limit=10)] == ["msg_5"]  # untouched
    await any_db.close()


async def test_each_cause_has_a_share_of_the_queue_and_causeless_events_only_the_whole(any_db: Database) -> None:
    db = any_db
    store = WebhookStore(db, history_max=10)
    await store.insert(Subscription(id="w", url="https://x.example/", events=("*",), secret=new_secret(),
                                    enabled=True, description="", created_at=0.0))

    def batch(cause: str | None, n: int) -> list[NewDelivery]:
        return [NewDelivery(f"{cause}_{i}", "w", "message:sent", None, b"{}", cause) for i in range(n)]

    assert len(await store.enqueue(batch("flood", 5), now=1.0, queue_max=6, per_cause=2)) == 2
    assert await store.enqueue(batch("flood", 1), now=1.0, queue_max=6, per_cause=2) == []  # at its share
    assert store.pending_of("flood") == 2 and store.pending_of("quiet") == 0
    assert await store.enqueue(batch("quiet", 1), now=1.0, queue_max=6, per_cause=2) == ["quiet_0"]
    assert len(await store.enqueue(batch(None, 5), now=1.0, queue_max=6, per_cause=2)) == 3  # the whole bound
    # A delivery that ends frees its cause's share.
    assert await store.finish("flood_0", DELIVERED, 1, 200, None, now=2.0)
    assert await store.enqueue([NewDelivery("again", "w", "message:sent", None, b"{}", "flood")], now=2.0,
                               queue_max=7, per_cause=2) == ["again"]
    await db.close()


async def test_a_queue_made_before_causes_were_recorded_gains_the_column(tmp_path: Path) -> None:
    """A database of the first release (no migrations table, no cause column) opens and counts causes."""
    path = tmp_path / "plugbox.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE webhook_deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
            "subscription_id TEXT NOT NULL, event TEXT NOT NULL, session_id TEXT, body BLOB NOT NULL, "
            "state TEXT NOT NULL, attempts INTEGER NOT NULL, next_at REAL NOT NULL, last_status INTEGER, "
            "last_error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL)")
    old.close()
    db = SqliteDatabase(path)
    store = WebhookStore(db, history_max=10)
    await store.insert(Subscription(id="w", url="https://x.example/", events=("*",), secret=new_secret(),
                                    enabled=True, description="", created_at=0.0))
    new = NewDelivery("d", "w", "message:sent", None, b"{}", "p")
    assert await store.enqueue([new], now=1.0, queue_max=5, per_cause=5) == ["d"]
    assert store.pending_of("p") == 1
    await db.close()
