"""The Cloud API engine against Meta's documented payloads (tests/fixtures/cloudapi), with a fake
Graph API on 127.0.0.1: the webhook route's handshake and signature check, notifications turned into
plugbox events, sends posted as Meta documents them, and Graph errors and timeouts as EngineError."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.engines.cloudapi import CloudApiEngine
from plugbox.errors import ConfigError, EngineError
from plugbox.host import Host
from plugbox.payloads import problem
from plugbox.settings import load_settings
from tests.fake_graph import FakeGraph, fake_graph, fixture, signed

PNID = "106540352242922"
TOKEN = "EAAG-test-access-token"
APP_SECRET = "test-app-secret"
VERIFY = "test-verify-token"
WEBHOOK = "/webhooks/cloudapi"
CUSTOMER = "16505551234@c.us"
ADMIN_KEY = "contract-admin-key"


class Recorder:
    def __init__(self) -> None:
        self.inbound: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    async def on_inbound(self, session_id: str, message: dict[str, Any]) -> None:
        assert problem("message:received", message) is None, problem("message:received", message)
        self.inbound.append((session_id, message))

    async def on_event(self, event: str, session_id: str, data: dict[str, Any]) -> None:
        assert problem(event, data) is None, problem(event, data)  # the hook payload contract
        self.events.append((event, session_id, data))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [data for name, _, data in self.events if name == event]


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with fake_graph() as g:
        yield g


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def engine(graph: FakeGraph, recorder: Recorder) -> AsyncIterator[CloudApiEngine]:
    e = CloudApiEngine(access_token=TOKEN, phone_number_ids=(PNID,), base_url=graph.url, api_version="v21.0",
                       timeout_ms=500, clock=lambda: 1750000000.0,
                       on_inbound=recorder.on_inbound, on_session_event=recorder.on_event)
    await e.start()
    yield e
    await e.aclose()


@pytest.fixture
async def client(tmp_path: Path, graph: FakeGraph, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    """The real API app on a host running the Cloud API engine; the engine's callbacks recorded."""
    settings = load_settings(environ={}, data_dir=str(tmp_path / "data"), engine="cloudapi",
                             cloudapi_access_token=TOKEN, cloudapi_app_secret=APP_SECRET,
                             cloudapi_verify_token=VERIFY, cloudapi_phone_number_ids=(PNID,),
                             cloudapi_base_url=graph.url, cloudapi_webhook_body_max_bytes=64 << 10)
    host = Host(settings, bundled=False)
    assert isinstance(host.engine, CloudApiEngine)
    host.engine.on_inbound = recorder.on_inbound
    host.engine.on_session_event = recorder.on_event
    await host.start(restore=False)
    app = create_app(host, extra_admin_keys=(ADMIN_KEY,))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c
    await host.stop()


# -- the webhook route ---------------------------------------------------------------------------------

async def test_handshake_echoes_the_challenge_when_the_verify_token_matches(client: httpx.AsyncClient) -> None:
    r = await client.get(WEBHOOK, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                          "hub.challenge": "1158201444"})
    assert r.status_code == 200 and r.text == "1158201444"
    assert r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"},
    {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"},
    {"hub.challenge": "1158201444"},
])
async def test_handshake_refuses_a_wrong_token_or_mode(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    r = await client.get(WEBHOOK, params=params)
    assert r.status_code == 403 and "1158201444" not in r.text


async def test_signed_text_notification_becomes_message_received(
        client: httpx.AsyncClient, recorder: Recorder) -> None:
    body = fixture("notification_text.json")
    r = await client.post(WEBHOOK, content=body, headers=signed(APP_SECRET, body))
    assert r.status_code == 200, r.text
    assert recorder.inbound == [(PNID, {
        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "chatId": CUSTOMER, "from": CUSTOMER, "to": "15550783881@c.us",
        "body": "Does it come in another color?", "fromMe": False, "timestamp": 1749416383,
        "quotedId": None, "hasMedia": False,
    })]


async def test_unsigned_notification_is_refused_401_and_nothing_runs(
        client: httpx.AsyncClient, recorder: Recorder) -> None:
    body = fixture("notification_text.json")
    r = await client.post(WEBHOOK, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert recorder.inbound == []


@pytest.mark.parametrize("attack", ["other-secret", "tampered-body", "sha1-scheme"])
async def test_wrongly_signed_notification_is_refused_403_and_nothing_runs(
        client: httpx.AsyncClient, recorder: Recorder, attack: str) -> None:
    body = fixture("notification_text.json")
    headers = signed("other-secret" if attack == "other-secret" else APP_SECRET, body)
    if attack == "tampered-body":
        body = body.replace(b"another color", b"a free sample")
    if attack == "sha1-scheme":
        headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"].replace("sha256=", "sha1=")
    r = await client.post(WEBHOOK, content=body, headers=headers)
    assert r.status_code == 403
    assert recorder.inbound == []
    # and the same body, rightly signed, is still taken: the refusal was the signature's doing
    good = fixture("notification_text.json")
    assert (await client.post(WEBHOOK, content=good, headers=signed(APP_SECRET, good))).status_code == 200
    assert len(recorder.inbound) == 1


async def test_a_body_over_the_cap_is_refused_before_its_signature_is_computed(
        client: httpx.AsyncClient, recorder: Recorder) -> None:
    body = b'{"object": "whatsapp_business_account", "pad": "' + b"x" * (64 << 10) + b'"}'
    r = await client.post(WEBHOOK, content=body, headers=signed(APP_SECRET, body))
    assert r.status_code == 413 and recorder.inbound == []


async def test_a_signed_body_that_is_not_a_notification_is_400(client: httpx.AsyncClient) -> None:
    body = b'{"entry": "not a list"}'
    assert (await client.post(WEBHOOK, content=body, headers=signed(APP_SECRET, body))).status_code == 400


# -- notifications into events -------------------------------------------------------------------------

async def test_statuses_become_ack_events_with_whatsapp_ack_levels(
        engine: CloudApiEngine, recorder: Recorder) -> None:
    await engine.handle_notification(fixture("notification_statuses.json"))
    acked = recorder.named("message:ack")
    assert [(a["status"], a["ack"]) for a in acked] == [("sent", 1), ("delivered", 2), ("read", 3), ("failed", -1)]
    assert acked[2] == {"messageId": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
                        "status": "read", "ack": 3}
    assert recorder.named("message:failed") == []  # not one of our sends: its input is unknown


async def test_a_failed_status_of_our_send_fires_message_failed_with_its_input(
        engine: CloudApiEngine, recorder: Recorder, graph: FakeGraph) -> None:
    failing_id = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJCRjg1QTg0RDFGNTc0MDA1QjUA"  # the failed status's id
    graph.replies.append((200, json.dumps({"messages": [{"id": failing_id}]}).encode()))
    await engine.reply(PNID, CUSTOMER, "wamid.earlier", "are you still there?")
    await engine.handle_notification(fixture("notification_statuses.json"))
    assert recorder.named("message:failed") == [{
        "sessionId": PNID, "error": "code 131047: Re-engagement message", "type": "reply",
        "input": {"chatId": CUSTOMER, "text": "are you still there?", "quotedMessageId": "wamid.earlier"},
    }]


async def test_unknown_message_types_are_skipped_and_counted_and_text_still_arrives(
        engine: CloudApiEngine, recorder: Recorder) -> None:
    await engine.handle_notification(fixture("notification_mixed.json"))
    assert [m["body"] for _, m in recorder.inbound] == ["and the price?"]
    assert engine.skipped["type:image"] == 1
    assert engine.skipped["type:reaction"] == 1
    assert engine.skipped["type:unsupported"] == 1


async def test_a_malformed_message_is_skipped_without_losing_its_neighbours(
        engine: CloudApiEngine, recorder: Recorder) -> None:
    doc = json.loads(fixture("notification_mixed.json"))
    doc["entry"][0]["changes"][0]["value"]["messages"].insert(0, {"type": "text", "text": {"body": 5}})
    await engine.handle_notification(json.dumps(doc).encode())
    assert engine.skipped["malformed_message"] == 1
    assert [m["body"] for _, m in recorder.inbound] == ["and the price?"]


async def test_a_redelivered_notification_fires_once(engine: CloudApiEngine, recorder: Recorder) -> None:
    for _ in range(3):  # Meta redelivers until it gets a 200
        await engine.handle_notification(fixture("notification_text.json"))
    assert len(recorder.inbound) == 1 and engine.skipped["duplicate"] == 2


async def test_a_quoting_message_carries_the_quoted_id(engine: CloudApiEngine, recorder: Recorder) -> None:
    await engine.handle_notification(fixture("notification_reply.json"))
    [(_, message)] = recorder.inbound
    assert message["quotedId"] == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


async def test_a_notification_for_another_phone_number_is_ignored(
        engine: CloudApiEngine, recorder: Recorder) -> None:
    body = fixture("notification_text.json").replace(PNID.encode(), b"999999999999999")
    await engine.handle_notification(body)
    assert recorder.inbound == [] and engine.skipped["unknown_phone_number_id"] == 1


async def test_start_reports_each_phone_number_as_a_ready_session(engine: CloudApiEngine, recorder: Recorder) -> None:
    assert [(e, s) for e, s, _ in recorder.events] == [("session:created", PNID), ("session:ready", PNID)]
    assert engine.sessions() == [{"id": PNID, "status": "ready", "live": True, "me": None}]
    assert engine.is_live(PNID) and not engine.is_live("other")


# -- sending -------------------------------------------------------------------------------------------

async def test_send_text_posts_the_documented_json_with_the_token_and_maps_the_id(
        engine: CloudApiEngine, graph: FakeGraph) -> None:
    graph.replies.append((200, fixture("send_response.json")))
    sent = await engine.send_text(PNID, "+1 650-555-1234", "It comes in blue and green.")
    [request] = graph.requests
    assert request.path == f"/v21.0/{PNID}/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == json.loads(fixture("send_text_request.json"))
    assert sent["id"] == "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    assert sent["chatId"] == CUSTOMER and sent["fromMe"] is True and sent["timestamp"] == 1750000000
    assert await engine.get_chat_history(PNID, CUSTOMER) == [sent]


async def test_reply_sends_the_quoted_message_as_context(engine: CloudApiEngine, graph: FakeGraph) -> None:
    sent = await engine.reply(PNID, CUSTOMER, "wamid.quoted", "yes")
    assert graph.requests[0].body["context"] == {"message_id": "wamid.quoted"}
    assert sent["quotedId"] == "wamid.quoted"


async def test_a_graph_error_becomes_an_engine_error_naming_session_and_meta_code(
        engine: CloudApiEngine, graph: FakeGraph, caplog: pytest.LogCaptureFixture) -> None:
    graph.replies.append((400, fixture("graph_error.json")))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EngineError) as info:
        await engine.send_text(PNID, CUSTOMER, "hello")
    text = str(info.value)
    assert PNID in text and "131030" in text and "Recipient phone number not in allowed list" in text
    assert TOKEN not in text and TOKEN not in caplog.text
    assert await engine.get_chat_history(PNID, CUSTOMER) == []  # nothing recorded as sent


async def test_a_graph_answer_that_is_not_json_is_still_an_engine_error(
        engine: CloudApiEngine, graph: FakeGraph) -> None:
    graph.replies.append((502, b"<html>bad gateway</html>"))
    with pytest.raises(EngineError, match="HTTP 502"):
        await engine.send_text(PNID, CUSTOMER, "hello")


async def test_a_slow_graph_api_is_a_bounded_engine_error(engine: CloudApiEngine, graph: FakeGraph) -> None:
    graph.delay_s = 1.5  # the engine's timeout is 0.5 s
    with pytest.raises(EngineError, match=r"did not answer within 0\.5 s"):
        await engine.send_text(PNID, CUSTOMER, "hello")


async def test_sends_on_an_unknown_session_or_to_a_group_are_refused_before_any_request(
        engine: CloudApiEngine, graph: FakeGraph) -> None:
    with pytest.raises(EngineError, match="unknown session 'nope'"):
        await engine.send_text("nope", CUSTOMER, "hi")
    with pytest.raises(EngineError, match="phone numbers"):
        await engine.send_text(PNID, "120363025246125486@g.us", "hi")
    assert graph.requests == []


# -- verbs Meta has no endpoint for --------------------------------------------------------------------

async def test_contacts_and_chats_come_from_what_was_seen(engine: CloudApiEngine) -> None:
    await engine.handle_notification(fixture("notification_text.json"))
    contact = {"id": CUSTOMER, "name": "Sheena Nelson", "number": "16505551234", "isGroup": False}
    assert await engine.get_contacts(PNID) == [contact]
    assert await engine.get_contact_by_id(PNID, "16505551234") == contact
    assert await engine.get_chats(PNID) == [{"id": CUSTOMER, "name": "Sheena Nelson", "isGroup": False,
                                             "timestamp": 1749416383}]
    assert engine.sessions()[0]["me"] == "15550783881@c.us"


async def test_memory_of_seen_messages_is_bounded(graph: FakeGraph) -> None:
    e = CloudApiEngine(access_token=TOKEN, phone_number_ids=(PNID,), base_url=graph.url, seen_per_session=3)
    await e.start()
    try:
        for i in range(5):
            await e.send_text(PNID, CUSTOMER, f"m{i}")
        assert [m["body"] for m in await e.get_chat_history(PNID, CUSTOMER)] == ["m2", "m3", "m4"]
    finally:
        await e.aclose()


async def test_memory_of_seen_text_is_bounded_in_bytes(graph: FakeGraph) -> None:
    e = CloudApiEngine(access_token=TOKEN, phone_number_ids=(PNID,), base_url=graph.url,
                       seen_bytes_per_session=10_000)
    await e.start()
    try:
        for i in range(4):
            await e.send_text(PNID, CUSTOMER, str(i) * 4000)
        assert [m["body"][0] for m in await e.get_chat_history(PNID, CUSTOMER)] == ["2", "3"]
    finally:
        await e.aclose()


async def test_number_lookup_and_group_info_say_the_cloud_api_does_not_provide_them(
        engine: CloudApiEngine) -> None:
    with pytest.raises(EngineError, match="Cloud API does not provide a number lookup"):
        await engine.check_number_exists(PNID, CUSTOMER)
    with pytest.raises(EngineError, match="does not provide group info"):
        await engine.get_group_info(PNID, "120363025246125486@g.us")


# -- settings ------------------------------------------------------------------------------------------

def test_the_cloud_engine_refuses_to_start_without_its_secrets() -> None:
    with pytest.raises(ConfigError, match="cloudapi_app_secret is required"):
        load_settings(environ={"PLUGBOX_ENGINE": "cloudapi", "PLUGBOX_CLOUDAPI_ACCESS_TOKEN": TOKEN,
                               "PLUGBOX_CLOUDAPI_VERIFY_TOKEN": VERIFY,
                               "PLUGBOX_CLOUDAPI_PHONE_NUMBER_IDS": PNID})


def test_loopback_stays_the_default_engine() -> None:
    assert load_settings(environ={}).engine == "loopback"
    settings = load_settings(environ={"PLUGBOX_ENGINE": "cloudapi", "PLUGBOX_CLOUDAPI_ACCESS_TOKEN": TOKEN,
                                      "PLUGBOX_CLOUDAPI_APP_SECRET": APP_SECRET,
                                      "PLUGBOX_CLOUDAPI_VERIFY_TOKEN": VERIFY,
                                      "PLUGBOX_CLOUDAPI_PHONE_NUMBER_IDS": f"{PNID},2222"})
    assert settings.cloudapi_phone_number_ids == (PNID, "2222")
    assert TOKEN not in repr(CloudApiEngine.from_settings(settings))


async def test_the_loopback_only_routes_refuse_clearly_with_the_cloud_engine(client: httpx.AsyncClient) -> None:
    key = {"X-API-Key": ADMIN_KEY}
    assert (await client.get("/api/sessions", headers=key)).json()["sessions"][0]["id"] == PNID
    r = await client.get("/api/sent", headers=key)
    assert r.status_code == 422 and "needs the loopback engine" in r.text


async def test_a_failing_event_callback_is_counted_and_the_batch_goes_on(graph: FakeGraph) -> None:
    seen: list[str] = []

    def on_inbound(session_id: str, message: dict[str, Any]) -> None:
        seen.append(message["body"])
        if len(seen) == 1:
            raise RuntimeError("a hook chain blew up")

    e = CloudApiEngine(access_token=TOKEN, phone_number_ids=(PNID,), base_url=graph.url, on_inbound=on_inbound)
    await e.start()
    try:
        doc = json.loads(fixture("notification_mixed.json"))
        value = doc["entry"][0]["changes"][0]["value"]
        value["messages"] = [dict(value["messages"][3], id=f"wamid.{i}", text={"body": f"m{i}"}) for i in range(2)]
        await e.handle_notification(json.dumps(doc).encode())
        assert seen == ["m0", "m1"] and e.skipped["callback_error"] == 1
    finally:
        await e.aclose()
