"""Ingress v2 pieces on their own: the manifest's route fields (mode, dedupOn, challenge, ackStatus,
maxBodyBytes), the `dedupOn` digest of a request, and the queue's store (bounds per plugin and route,
the dedup window on an injected clock, history kept per plugin)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from plugbox.api.ingress import IngressRefused, dedup_digest
from plugbox.errors import ManifestError
from plugbox.ingress.store import DEAD, DELIVERED, PENDING, DedupKey, IngressStore, NewDelivery
from plugbox.manifest import parse_manifest
from plugbox.storage.db import Database

SCHEMA = {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True},
                                           "verifyToken": {"type": "string", "secret": True},
                                           "plain": {"type": "string"}}}
SIG = {"scheme": "shared-secret", "header": "X-Token"}


def _parse(**route: Any) -> Any:
    doc = {"id": "p", "name": "p", "version": "1.0.0", "type": "extension", "main": "main.py",
           "permissions": ["webhook:ingress"], "configSchema": SCHEMA,
           "ingress": [{"route": "r", "signature": SIG, **route}]}
    return parse_manifest(doc, host_version="1.0.0").ingress[0]


def _refused(**route: Any) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        _parse(**route)
    return info.value


def test_a_route_is_sync_by_default_and_async_when_declared() -> None:
    assert not _parse().is_async
    route = _parse(mode="async", ackStatus=200, maxBodyBytes=4096, dedupOn="header:X-Id", dedupWindowSec=60)
    assert (route.is_async, route.ack_status, route.max_body_bytes) == (True, 200, 4096)
    assert (route.dedup_on, route.dedup_window_sec) == ("header:x-id", 60)


def test_to_json_round_trips_the_v2_fields() -> None:
    route = _parse(mode="async", dedupOn="field:entry.0.id",
                   challenge={"echoParam": "hub.challenge", "tokenParam": "hub.verify_token"})
    again = _parse(**{k: v for k, v in route.to_json().items() if k not in ("route", "signature")})
    assert again == route


@pytest.mark.parametrize(("route", "field"), [
    ({"mode": "later"}, "ingress[0].mode"),
    ({"ackStatus": 202}, "ingress[0].ackStatus"),  # a sync route answers what its handler returns
    ({"mode": "async", "ackStatus": 302}, "ingress[0].ackStatus"),
    ({"maxBodyBytes": 0}, "ingress[0].maxBodyBytes"),
    ({"dedupWindowSec": -1}, "ingress[0].dedupWindowSec"),
    ({"dedupOn": "query:x"}, "ingress[0].dedupOn"),
    ({"dedupOn": "field:a..b"}, "ingress[0].dedupOn"),
    ({"dedupOn": "header:Bad Header"}, "ingress[0].dedupOn"),
    ({"challenge": {"echoParam": "c"}}, "ingress[0].challenge.tokenParam"),
    ({"challenge": {"echoParam": "c", "tokenParam": "c"}}, "ingress[0].challenge.echoParam"),
    ({"challenge": {"echoParam": "c", "tokenParam": "t", "tokenField": "plain"}}, "ingress[0].challenge.tokenField"),
])
def test_bad_v2_fields_are_refused_naming_the_field(route: dict[str, Any], field: str) -> None:
    assert _refused(**route).field == field


def test_dedup_digest_keys_on_the_declared_part_of_the_request() -> None:
    doc = {"entry": [{"id": "e1"}], "n": 7}
    by_field = dedup_digest("field:entry.0.id", {}, b"x", doc)
    assert by_field == dedup_digest("field:entry.0.id", {}, b"other body", {"entry": [{"id": "e1"}]})
    assert by_field != dedup_digest("field:entry.0.id", {}, b"x", {"entry": [{"id": "e2"}]})
    assert dedup_digest("field:n", {}, b"", doc) != dedup_digest("header:x-id", {"x-id": "7"}, b"", None)
    assert dedup_digest("body", {}, b"a", None) != dedup_digest("body", {}, b"b", None)
    assert len(dedup_digest("body", {}, b"z" * 100_000, None)) == 64  # bounded, whatever the sender sent


@pytest.mark.parametrize(("spec", "headers", "doc"), [
    ("header:x-id", {}, None),
    ("field:entry.0.id", {}, {"entry": []}),
    ("field:flag", {}, {"flag": True}),
    ("field:obj", {}, {"obj": {"nested": 1}}),
])
def test_a_request_without_its_dedup_value_is_refused(spec: str, headers: dict[str, str], doc: Any) -> None:
    with pytest.raises(IngressRefused) as info:
        dedup_digest(spec, headers, b"{}", doc)
    assert info.value.status == 400


@pytest.fixture
def store(any_db: Database) -> IngressStore:
    return IngressStore(any_db, history_per_plugin=2, dedup_keys_per_plugin=3)  # once per backend


def _new(n: int, plugin: str = "p", route: str = "r") -> NewDelivery:
    return NewDelivery(id=f"d{plugin}{n}", plugin_id=plugin, instance_id="default", route=route, request=b"\x80")


async def test_bounds_are_per_plugin_and_per_route(store: IngressStore) -> None:
    outcomes = [(await store.enqueue(_new(n, route="r" if n < 3 else "s"), None, 0.0, plugin_max=4, route_max=2,
                                     bytes_max=1 << 20)).outcome for n in range(6)]
    assert outcomes == ["queued", "queued", "route_full", "queued", "queued", "plugin_full"]
    other = await store.enqueue(_new(0, plugin="other"), None, 0.0, plugin_max=4, route_max=2, bytes_max=1 << 20)
    assert other.outcome == "queued"
    assert store.pending_counts() == {"p": 4, "other": 1}


async def test_bytes_held_by_a_plugins_waiting_and_dead_deliveries_are_bounded(store: IngressStore) -> None:
    big = NewDelivery(id="big", plugin_id="p", instance_id="default", route="r", request=b"x" * 600)
    assert (await store.enqueue(big, None, 0.0, plugin_max=10, route_max=10, bytes_max=1000)).outcome == "queued"
    second = msgspec.structs.replace(big, id="big2")
    assert (await store.enqueue(second, None, 0.0, plugin_max=10, route_max=10, bytes_max=1000)).outcome == \
        "plugin_full"
    (delivery,) = store.due(1.0, 10, (), {"p": 1})
    await store.finish(delivery, DELIVERED, 1, 200, None, 2.0)
    assert store.get("p", "big").request == b""  # a delivered row keeps no request
    assert (await store.enqueue(second, None, 3.0, plugin_max=10, route_max=10, bytes_max=1000)).outcome == "queued"


async def test_a_dedup_key_holds_for_its_window_only(store: IngressStore) -> None:
    key = DedupKey("default", "r", "k1", 60.0)
    first = await store.enqueue(_new(1), key, 0.0, plugin_max=10, route_max=10, bytes_max=1 << 20)
    repeat = await store.enqueue(_new(2), key, 59.0, plugin_max=10, route_max=10, bytes_max=1 << 20)
    later = await store.enqueue(_new(3), key, 61.0, plugin_max=10, route_max=10, bytes_max=1 << 20)
    assert (first.outcome, repeat.outcome, later.outcome) == ("queued", "duplicate", "queued")
    assert repeat.delivery_id == "dp1"


async def test_a_refused_delivery_does_not_keep_its_dedup_key(store: IngressStore) -> None:
    key = DedupKey("default", "r", "k1", 60.0)
    full = await store.enqueue(_new(1), key, 0.0, plugin_max=0, route_max=10, bytes_max=1 << 20)
    assert full.outcome == "plugin_full"
    assert (await store.enqueue(_new(2), key, 1.0, plugin_max=10, route_max=10, bytes_max=1 << 20)).outcome == "queued"


async def test_dedup_keys_past_the_plugins_cap_forget_that_plugins_oldest(store: IngressStore) -> None:
    for n in range(5):
        assert await store.claim("p", DedupKey("default", "r", f"k{n}", 100.0 + n), 0.0)
    assert await store.claim("other", DedupKey("default", "r", "k0", 100.0), 0.0)
    assert not await store.claim("p", DedupKey("default", "r", "k4", 100.0), 1.0)  # newest kept
    assert await store.claim("p", DedupKey("default", "r", "k0", 100.0), 1.0)  # oldest forgotten
    assert not await store.claim("other", DedupKey("default", "r", "k0", 100.0), 1.0)  # not charged for p


async def test_due_takes_at_most_each_running_plugins_room(store: IngressStore) -> None:
    for n in range(3):
        await store.enqueue(_new(n, plugin="a"), None, float(n), plugin_max=10, route_max=10, bytes_max=1 << 20)
        await store.enqueue(_new(n, plugin="b"), None, float(n), plugin_max=10, route_max=10, bytes_max=1 << 20)
    await store.enqueue(_new(0, plugin="stopped"), None, 0.0, plugin_max=10, route_max=10, bytes_max=1 << 20)
    due = store.due(10.0, 10, (), {"a": 1, "b": 2})
    # b has the most room (the fewest in flight): its first goes first, then the oldest among equals.
    assert [d.id for d in due] == ["db0", "da0", "db1"]
    assert [d.id for d in store.due(10.0, 10, ("da0",), {"a": 1})] == ["da1"]
    assert store.next_due((), ["stopped"]) == 0.0 and store.next_due((), []) is None


async def test_a_free_slot_goes_to_the_plugin_with_the_fewest_in_flight_not_the_oldest_backlog(
        store: IngressStore) -> None:
    for n in range(5):  # a flooded plugin's backlog, older than anything the quiet one has
        await store.enqueue(_new(n, plugin="busy"), None, float(n), plugin_max=10, route_max=10, bytes_max=1 << 20)
    await store.enqueue(_new(0, plugin="quiet"), None, 9.0, plugin_max=10, route_max=10, bytes_max=1 << 20)
    # busy has one of its two slots in flight, quiet none: the one free host slot is quiet's.
    assert [d.id for d in store.due(10.0, 1, (), {"busy": 1, "quiet": 2})] == ["dquiet0"]
    assert [d.id for d in store.due(10.0, 2, (), {"busy": 1, "quiet": 2})] == ["dquiet0", "dbusy0"]
    # With equal room the oldest goes first, and each plugin's own stay in order.
    assert [d.id for d in store.due(10.0, 3, (), {"busy": 2, "quiet": 2})] == ["dbusy0", "dquiet0", "dbusy1"]


async def test_finished_deliveries_keep_a_bounded_history_per_plugin(store: IngressStore) -> None:
    for n in range(4):
        await store.enqueue(_new(n), None, 0.0, plugin_max=10, route_max=10, bytes_max=1 << 20)
    for delivery in store.due(1.0, 10, (), {"p": 10}):
        await store.finish(delivery, DELIVERED if delivery.id != "dp3" else DEAD, 1, 200, None, 2.0)
    assert [d.id for d in store.deliveries("p", state=DELIVERED, limit=10)] == ["dp2", "dp1"]
    assert await store.replay("p", "dp3", 3.0) and not await store.replay("p", "dp2", 3.0)
    assert [d.id for d in store.deliveries("p", state=PENDING, limit=10)] == ["dp3"]


def _sized(name: str, plugin: str, size: int) -> NewDelivery:
    return NewDelivery(id=name, plugin_id=plugin, instance_id="default", route="r", request=b"x" * size)


async def _fill(store: IngressStore, plugin: str, host_max: int) -> str:
    """Queue 100-byte deliveries for `plugin` until one is refused; the refusal's outcome."""
    for n in range(1000):
        got = await store.enqueue(_sized(f"{plugin}{n}", plugin, 100), None, 0.0, plugin_max=1000, route_max=1000,
                                  bytes_max=1000, host_bytes_max=host_max)
        if got.outcome != "queued":
            return got.outcome
    raise AssertionError("never refused")


def _held(store: IngressStore, plugin: str) -> int:
    return sum(len(d.request) for d in store.deliveries(plugin, state=PENDING, limit=1000))


async def test_plugins_at_their_own_bounds_together_are_held_to_a_fair_share_of_the_host(
        store: IngressStore) -> None:
    # Each plugin may hold 1000 bytes; the host 1600. Two flooded plugins at their own bounds would
    # hold 2000: the second is refused once the host is full and it holds its share (800).
    assert await _fill(store, "a", 1600) == "plugin_full"
    assert await _fill(store, "b", 1600) == "host_full"
    assert (_held(store, "a"), _held(store, "b")) == (1000, 800)
    # A quiet plugin is still admitted: it holds less than its share, whoever filled the host.
    quiet = await store.enqueue(_sized("q0", "quiet", 100), None, 0.0, plugin_max=1000, route_max=1000,
                                bytes_max=1000, host_bytes_max=1600)
    assert quiet.outcome == "queued"
    assert await _fill(store, "quiet", 1600) == "host_full"  # ... up to its share (1600 // 3)
    assert _held(store, "quiet") <= 1600 // 3 + 100
    total = sum(_held(store, p) for p in ("a", "b", "quiet"))
    assert total <= 2 * 1600


def test_response_preflight_session_alive_is_kept() -> None:
    route = _parse(response={"preflight": ["session-alive"]})
    assert route.preflight == ("session-alive",)
    assert route.to_json()["response"] == {"preflight": ["session-alive"]}
    assert _parse().preflight == () and _parse().to_json()["response"] is None


@pytest.mark.parametrize(("response", "field"), [
    ({"preflight": ["session-dead"]}, "ingress[0].response.preflight"),
    ({"preflight": ["session-alive", "session-alive"]}, "ingress[0].response.preflight"),
    ({"preflight": "session-alive"}, "ingress[0].response.preflight"),
    ({"ack": {"status": 200, "body": "ok"}}, "ingress[0].response.ack"),
    ({"deadlineMs": 3000}, "ingress[0].response.deadlineMs"),
    ({"preflights": []}, "ingress[0].response.preflights"),
    ("session-alive", "ingress[0].response"),
])
def test_a_response_contract_plugbox_cannot_honour_is_refused_by_name(response: Any, field: str) -> None:
    assert _refused(response=response).field == field
