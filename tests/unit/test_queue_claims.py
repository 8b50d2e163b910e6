"""Hosts sharing one PostgreSQL database claim queued deliveries (docs/postgres.md): each outbound
webhook or async ingress delivery is handed to one host at a time, a claim whose host died lapses
and is taken by another, and only the claim's holder records the outcome.

Each store below is one host's: its own database handle (own connections, own writer thread) on
the same database. Clocks are the `now` the callers pass, so lapses need no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from plugbox.ingress.store import DELIVERED as INGRESS_DELIVERED
from plugbox.ingress.store import IngressStore
from plugbox.ingress.store import NewDelivery as NewIngress
from plugbox.storage.db import Database
from plugbox.storage.postgres import PostgresDatabase
from plugbox.webhooks.signing import new_secret
from plugbox.webhooks.store import DELIVERED, PENDING, NewDelivery, WebhookStore
from plugbox.webhooks.subscriptions import Subscription

CLAIM_S = 10.0


@pytest.fixture
def hosts(make_postgres_url: Callable[[], str]) -> Iterator[list[PostgresDatabase]]:
    """Three handles on one fresh PostgreSQL database: three hosts."""
    url = make_postgres_url()
    dbs = [PostgresDatabase(url) for _ in range(3)]
    yield dbs
    for db in dbs:
        db.close_sync()


@pytest.fixture
async def webhooks(hosts: list[PostgresDatabase]) -> AsyncIterator[list[WebhookStore]]:
    stores = [WebhookStore(db, history_max=1000, claim_s=CLAIM_S) for db in hosts]
    await stores[0].insert(Subscription(id="w", url="https://x.example/", events=("*",), secret=new_secret(),
                                        enabled=True, description="", created_at=0.0))
    yield stores


async def _queue_webhooks(store: WebhookStore, n: int) -> list[str]:
    batch = [NewDelivery(f"msg_{i:03}", "w", "message:received", None, b"{}") for i in range(n)]
    return await store.enqueue(batch, now=0.0, queue_max=10_000, per_cause=10_000)


async def test_hosts_claiming_at_once_each_get_other_webhook_deliveries(webhooks: list[WebhookStore]) -> None:
    queued = await _queue_webhooks(webhooks[0], 60)
    taken: list[list[str]] = [[] for _ in webhooks]

    async def drain(host: int) -> None:
        for _ in range(60):  # bounded: a claim that marked nothing would hand out the same rows forever
            batch = await webhooks[host].claim_due(now=1.0, limit=4, skip=())
            if not batch:
                return
            taken[host] += [d.id for d in batch]

    await asyncio.gather(*(drain(h) for h in range(len(webhooks))))
    every = [i for ids in taken for i in ids]
    assert sorted(every) == queued  # each delivery went to exactly one host, none was left
    assert all(taken), [len(ids) for ids in taken]  # and the hosts shared the work


async def test_a_dead_hosts_webhook_claim_lapses_and_only_the_new_holder_records(
    webhooks: list[WebhookStore],
) -> None:
    a, b, _ = webhooks
    await _queue_webhooks(a, 1)
    assert [d.id for d in await a.claim_due(now=1.0, limit=10, skip=())] == ["msg_000"]
    assert await b.claim_due(now=1.0 + CLAIM_S - 0.5, limit=10, skip=()) == []  # a still holds it
    assert b.next_due(()) == 1.0 + CLAIM_S  # when a's claim lapses
    # a stops renewing (it died): past the claim, b takes the delivery.
    assert [d.id for d in await b.claim_due(now=1.0 + CLAIM_S, limit=10, skip=())] == ["msg_000"]
    assert not await a.finish("msg_000", DELIVERED, 1, 200, None, now=12.0)  # no longer a's to record
    assert await b.finish("msg_000", DELIVERED, 1, 200, None, now=12.0)
    assert a.get("msg_000") is not None and a.get("msg_000").state == DELIVERED  # type: ignore[union-attr]


async def test_a_renewed_webhook_claim_outlives_its_first_term(webhooks: list[WebhookStore]) -> None:
    a, b, _ = webhooks
    await _queue_webhooks(a, 1)
    await a.claim_due(now=0.0, limit=10, skip=())
    await a.renew_claims(["msg_000"], now=8.0)  # the attempt is still running
    assert await b.claim_due(now=CLAIM_S + 2, limit=10, skip=()) == []
    assert [d.id for d in await b.claim_due(now=8.0 + CLAIM_S, limit=10, skip=())] == ["msg_000"]


async def test_a_retry_ends_the_claim_so_any_host_may_take_it_when_due(webhooks: list[WebhookStore]) -> None:
    a, b, _ = webhooks
    await _queue_webhooks(a, 1)
    await a.claim_due(now=0.0, limit=10, skip=())
    assert await a.finish("msg_000", PENDING, 1, 503, "receiver answered HTTP 503", now=1.0, next_at=3.0)
    assert await b.claim_due(now=2.0, limit=10, skip=()) == []  # not due yet
    assert [d.attempts for d in await b.claim_due(now=3.0, limit=10, skip=())] == [1]


async def test_a_stopping_host_gives_its_webhook_claims_back_at_once(webhooks: list[WebhookStore]) -> None:
    a, b, _ = webhooks
    await _queue_webhooks(a, 3)
    assert len(await a.claim_due(now=0.0, limit=10, skip=())) == 3
    await a.release_claims()
    assert len(await b.claim_due(now=0.1, limit=10, skip=())) == 3


async def test_hosts_claiming_at_once_each_get_other_ingress_deliveries(hosts: list[PostgresDatabase]) -> None:
    stores = [IngressStore(db, history_per_plugin=1000, dedup_keys_per_plugin=10, claim_s=CLAIM_S) for db in hosts]
    queued = []
    for n in range(40):
        plugin = "a" if n % 2 else "b"
        new = NewIngress(id=f"d{n:03}", plugin_id=plugin, instance_id="default", route="r", request=b"\x80")
        await stores[0].enqueue(new, None, 0.0, plugin_max=1000, route_max=1000, bytes_max=1 << 20)
        queued.append(new.id)
    taken: list[list[str]] = [[] for _ in stores]

    async def drain(host: int) -> None:
        for _ in range(40):  # bounded, as above
            batch = await stores[host].claim_due(1.0, 8, (), {"a": 2, "b": 2})
            if not batch:
                return
            taken[host] += [d.id for d in batch]

    await asyncio.gather(*(drain(h) for h in range(len(stores))))
    assert sorted(i for ids in taken for i in ids) == sorted(queued)
    assert all(taken), [len(ids) for ids in taken]


async def test_a_dead_hosts_ingress_claim_lapses_and_only_the_new_holder_records(
    hosts: list[PostgresDatabase],
) -> None:
    a, b = (IngressStore(db, history_per_plugin=10, dedup_keys_per_plugin=10, claim_s=CLAIM_S) for db in hosts[:2])
    new = NewIngress(id="d1", plugin_id="p", instance_id="default", route="r", request=b"\x80")
    await a.enqueue(new, None, 0.0, plugin_max=10, route_max=10, bytes_max=1 << 20)
    (mine,) = await a.claim_due(1.0, 10, (), {"p": 2})
    assert await b.claim_due(2.0, 10, (), {"p": 2}) == []
    assert b.next_due((), ["p"]) == 1.0 + CLAIM_S
    (theirs,) = await b.claim_due(1.0 + CLAIM_S, 10, (), {"p": 2})
    assert not await a.finish(mine, INGRESS_DELIVERED, 1, 200, None, 12.0)
    assert await b.finish(theirs, INGRESS_DELIVERED, 1, 200, None, 12.0)


async def test_one_host_on_its_own_file_claims_nothing_on_disk(make_database: Callable[[], Database]) -> None:
    """SQLite is one host: `claim_due` is the plain read, so a restarted host finds every pending
    row free at once (no lapse to wait for). On PostgreSQL the same call marks the rows."""
    db = make_database()
    store = WebhookStore(db, history_max=10, claim_s=CLAIM_S)
    await store.insert(Subscription(id="w", url="https://x.example/", events=("*",), secret=new_secret(),
                                    enabled=True, description="", created_at=0.0))
    await _queue_webhooks(store, 2)
    assert len(await store.claim_due(now=1.0, limit=10, skip=())) == 2
    restarted = WebhookStore(make_database(), history_max=10, claim_s=CLAIM_S)
    free_again = await restarted.claim_due(now=2.0, limit=10, skip=())
    assert len(free_again) == (0 if db.shared else 2)
