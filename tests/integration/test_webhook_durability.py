"""A host killed mid-queue loses no outbound webhook delivery (SPEC §9 "outbound webhooks with a
durable queue").

A real `plugbox serve` subprocess gets a subscription and 20 inbound messages over its API while the
receiver answers 503, so every delivery is queued and being retried when the host is SIGKILLed. A
new `plugbox serve` on the same data dir, with the receiver healthy, delivers every one of them with
the id it was queued under. The guarantee is at-least-once with a stable `webhook-id`; here, where no
attempt succeeded before the kill, each delivery is accepted exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ..serving import serving
from ..webhook_receiver import receiving

pytestmark = pytest.mark.timeout(120)

KEY = "admin-key"
HEADERS = {"X-API-Key": KEY}
MESSAGES = 20
SETTINGS = {
    "PLUGBOX_FETCH_EXEMPT_HOSTS": "127.0.0.1",
    "PLUGBOX_WEBHOOK_BACKOFF_INITIAL_MS": "50",
    "PLUGBOX_WEBHOOK_BACKOFF_MAX_MS": "200",
    "PLUGBOX_WEBHOOK_MAX_ATTEMPTS": "1000",
}


def _until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_host_killed_mid_queue_delivers_every_queued_delivery_after_restart(tmp_path: Path) -> None:
    healthy = threading.Event()
    with receiving(lambda _id, _nth: 200 if healthy.is_set() else 503) as receiver:
        with serving(tmp_path, KEY, settings=SETTINGS) as (proc, url, _log):
            r = httpx.post(f"{url}/api/webhooks", headers=HEADERS,
                           json={"url": receiver.url, "events": ["message:received"]})
            assert r.status_code == 201, r.text
            for i in range(MESSAGES):
                r = httpx.post(f"{url}/api/sessions/default/messages", headers=HEADERS,
                               json={"chatId": "15550109999@c.us", "body": f"m{i}"})
                assert r.status_code == 200, r.text
            queued = httpx.get(f"{url}/api/webhooks/deliveries", headers=HEADERS,
                               params={"state": "pending", "limit": 1000}).json()["deliveries"]
            assert len(queued) == MESSAGES
            _until(lambda: len({r.delivery_id for r in receiver.requests}) >= 2, "attempts under way")
            proc.kill()  # SIGKILL: no shutdown, no flush
            proc.wait()
        refused_before_kill = len(receiver.requests)
        assert receiver.accepted() == [] and refused_before_kill >= 2

        healthy.set()
        with serving(tmp_path, KEY, settings=SETTINGS) as (_proc, url, _log):
            _until(lambda: len(receiver.accepted()) >= MESSAGES, "every delivery after the restart")
            delivered = httpx.get(f"{url}/api/webhooks/deliveries", headers=HEADERS,
                                  params={"state": "delivered", "limit": 1000}).json()["deliveries"]
            pending = httpx.get(f"{url}/api/webhooks/deliveries", headers=HEADERS,
                                params={"state": "pending"}).json()["deliveries"]

    accepted = Counter(r.delivery_id for r in receiver.accepted())
    assert set(accepted) == {d["id"] for d in queued}  # nothing lost, nothing invented
    assert set(accepted.values()) == {1}
    assert {d["id"] for d in delivered} == set(accepted) and pending == []
    texts = sorted(json.loads(r.body)["data"]["body"] for r in receiver.accepted())
    assert texts == sorted(f"m{i}" for i in range(MESSAGES))
