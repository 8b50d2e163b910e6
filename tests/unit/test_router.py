"""The capability router (SPEC §3, §6): the verb allowlist, permission, argument and session checks
that run before any host service is touched, timeouts, and per-plugin storage namespaces."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from plugbox.capabilities.messages import MessageService
from plugbox.capabilities.router import CapabilityRouter, Services
from plugbox.capabilities.verbs import FETCH_BODY_MAX_BYTES, VERBS
from plugbox.errors import CapabilityError, CapabilityTimeout, EngineError
from plugbox.hooks import HookBus
from plugbox.permissions import PERMISSIONS, SessionScope
from plugbox.protocol import encoded
from plugbox.sdk import Context
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import Database
from plugbox.storage.kv import PluginStorage
from plugbox.storage.sqlite import SqliteDatabase


class CountingEngine:
    """A fake engine that records every verb call. Sessions in `live` are live; while `hang` is set,
    every verb waits on it; `fail` is raised by every verb when set."""

    def __init__(self, live: tuple[str, ...] = ("main", "other")) -> None:
        self.live = set(live)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.hang: asyncio.Event | None = None
        self.fail: Exception | None = None

    def is_live(self, session_id: str) -> bool:
        return session_id in self.live

    def sessions(self) -> list[dict[str, Any]]:
        return [{"id": s, "status": "ready", "live": True, "me": "1@c.us"} for s in sorted(self.live)]

    async def _verb(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if self.hang is not None:
            await self.hang.wait()
        if self.fail is not None:
            raise self.fail
        return {"id": f"m{len(self.calls)}", "chatId": "15550100001@c.us", "verb": name}

    async def get_group_info(self, session_id: str, group_id: str) -> Any:
        return await self._verb("get_group_info", session_id, group_id)

    async def get_contacts(self, session_id: str) -> Any:
        return await self._verb("get_contacts", session_id)

    async def get_contact_by_id(self, session_id: str, contact_id: str) -> Any:
        return await self._verb("get_contact_by_id", session_id, contact_id)

    async def check_number_exists(self, session_id: str, phone: str) -> Any:
        return await self._verb("check_number_exists", session_id, phone)

    async def get_chats(self, session_id: str) -> Any:
        return await self._verb("get_chats", session_id)

    async def get_chat_history(
        self, session_id: str, chat_id: str, limit: int = 50, include_media: bool = False
    ) -> Any:
        return await self._verb("get_chat_history", session_id, chat_id, limit, include_media)

    async def canonical_chat_id(self, session_id: str, chat_id: str) -> Any:
        return await self._verb("canonical_chat_id", session_id, chat_id)

    async def send_text(self, session_id: str, chat_id: str, text: str) -> Any:
        return await self._verb("send_text", session_id, chat_id, text)

    async def reply(self, session_id: str, chat_id: str, quoted_id: str, text: str) -> Any:
        return await self._verb("reply", session_id, chat_id, quoted_id, text)


@dataclass
class FakeCaller:
    plugin_id: str = "caller"
    permissions: frozenset[str] = PERMISSIONS
    scope: SessionScope = field(default_factory=lambda: SessionScope(["*"], True, ["main", "other"]))


SAMPLE_ARGS = {
    "session_id": "main",
    "chat_id": "15550100001@c.us",
    "quoted_id": "m1",
    "text": "hello",
    "group_id": "team@g.us",
    "contact_id": "15550100002@c.us",
    "phone": "15550100003",
    "limit": 10,
    "include_media": False,
    "key": "k",
    "value": {"n": 1},
    "prefix": "",
    "after": "",
    "url": "https://api.example.com/",
    "method": "GET",
    "headers": {},
    "body": None,
    "timeout_ms": 1000,
    "envelope": {"conversationId": "conv-1", "sessionId": "main", "chatId": "15550100001@c.us", "text": "hello"},
    "ref": "conv-1",
    "state": "human",
    "mapping": {"conversationId": "conv-1", "provider": "crm", "externalId": "42", "sessionId": "main",
                "chatId": "15550100001@c.us"},
    "conversation_id": "conv-1",
    "provider": "crm",
    "external_id": "42",
}


class RecordingFetch:
    """Stands in for plugbox.net.fetch.FetchService (tested against real listeners elsewhere)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def fetch(self, plugin_id: str, url: str, **kwargs: Any) -> Any:
        self.calls.append((plugin_id, url))
        return {"ok": True, "status": 200, "status_text": "OK", "headers": {}, "body": ""}


def valid_args(verb: str) -> dict[str, Any]:
    return {name: SAMPLE_ARGS[name] for name in VERBS[verb].args.__struct_fields__}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = SqliteDatabase(tmp_path / "plugbox.db")
    yield database
    await database.close()


@pytest.fixture
def storage(db: Database) -> PluginStorage:
    return PluginStorage(db)


@pytest.fixture
def engine() -> CountingEngine:
    return CountingEngine()


@pytest.fixture
def make_router(engine: CountingEngine, storage: PluginStorage, db: Database) -> Callable[..., CapabilityRouter]:
    def make(timeout: float = 1.0, send_factor: int = 4) -> CapabilityRouter:
        bus = HookBus(budget=lambda _plugin_id: 1.0)
        services = Services(
            engine=engine,  # type: ignore[arg-type]
            messages=MessageService(engine, bus),  # type: ignore[arg-type]
            storage=storage,
            net=RecordingFetch(),  # type: ignore[arg-type]
            conversations=ConversationStore(db),
        )
        return CapabilityRouter(services, timeout=timeout, send_factor=send_factor)

    return make


@pytest.fixture
def router(make_router: Callable[..., CapabilityRouter]) -> CapabilityRouter:
    return make_router()


# -- the allowlist -----------------------------------------------------------------------------------


class Recorder:
    """A fake host service that records every method called on it, as `(service.method, args,
    kwargs)`, into a shared log. Methods named in `sync` answer directly, the others are coroutines;
    `answers` gives a method's return value (default: an empty dict)."""

    def __init__(self, name: str, log: list[Any], sync: frozenset[str] = frozenset(),
                 answers: dict[str, Any] | None = None) -> None:
        self._name, self._log, self._sync, self._answers = name, log, sync, answers or {}

    def is_live(self, session_id: str) -> bool:
        return True

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append((f"{self._name}.{method}", args, kwargs))
            answer = self._answers.get(method, {})
            if method in self._sync:
                return answer

            async def later() -> Any:
                return answer

            return later()

        return call


ENVELOPE = SAMPLE_ARGS["envelope"]
MAPPING = SAMPLE_ARGS["mapping"]
CHAT = SAMPLE_ARGS["chat_id"]
# What each verb must call, with which arguments, given valid_args(verb) from plugin "caller".
EXPECTED_CALLS: dict[str, list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = {
    "messages.send_text": [("messages.send_text", ("main", CHAT, "hello"), {"caller": "caller"})],
    "messages.reply": [("messages.send_text", ("main", CHAT, "hello"), {"quoted_id": "m1", "caller": "caller"})],
    "engine.get_group_info": [("engine.get_group_info", ("main", "team@g.us"), {})],
    "engine.get_contacts": [("engine.get_contacts", ("main",), {})],
    "engine.get_contact_by_id": [("engine.get_contact_by_id", ("main", "15550100002@c.us"), {})],
    "engine.check_number_exists": [("engine.check_number_exists", ("main", "15550100003"), {})],
    "engine.get_chats": [("engine.get_chats", ("main",), {})],
    "engine.get_chat_history": [("engine.get_chat_history", ("main", CHAT, 10, False), {})],
    "engine.canonical_chat_id": [("engine.canonical_chat_id", ("main", CHAT), {})],
    "storage.get": [("storage.get_encoded", ("caller", "k"), {})],
    # a worker's value is stored as it arrived, encoded
    "storage.set": [("storage.set_encoded", ("caller", "k", msgspec.Raw(msgspec.msgpack.encode({"n": 1}))), {})],
    "storage.delete": [("storage.delete", ("caller", "k"), {})],
    "storage.list": [("storage.list_keys", ("caller", ""), {"after": "", "limit": 10})],
    "net.fetch": [("net.fetch", ("caller", "https://api.example.com/"),
                   {"method": "GET", "headers": {}, "body": None, "timeout_ms": 1000})],
    "conversations.send": [
        ("conversations.check_room", ("caller", ENVELOPE | {"provider": None, "externalId": None}), {}),
        ("messages.send_text", ("main", CHAT, "hello"), {"caller": "caller"}),
        ("conversations.record_sent", ("caller", ENVELOPE | {"provider": None, "externalId": None}, "m9"), {}),
    ],
    "handover.set": [  # the chat it gates is the conversation's, in the engine's canonical form
        ("conversations.chat_of", ("caller", "conv-1"), {}),
        ("engine.canonical_chat_id", ("main", CHAT), {}),
        ("conversations.set_handover", ("caller", "conv-1", "human", ("main", CHAT)), {}),
    ],
    "handover.get": [("conversations.handover", ("caller", "conv-1"), {})],
    "conversations.messages": [("conversations.messages", ("caller", "conv-1", 10), {})],
    "mappings.upsert": [("conversations.upsert_mapping", ("caller", MAPPING), {})],
    "mappings.get": [("conversations.get_mapping", ("caller", "conv-1"), {})],
    "mappings.get_by_provider": [("conversations.get_mapping_by_provider", ("caller", "crm", "42"), {})],
}


def test_the_expected_calls_cover_every_verb() -> None:
    assert set(EXPECTED_CALLS) == set(VERBS)


@pytest.mark.parametrize("verb", sorted(VERBS))
async def test_every_verb_reaches_its_own_service_method_with_its_arguments(verb: str) -> None:
    log: list[Any] = []
    services = Services(
        engine=Recorder("engine", log, answers={"canonical_chat_id": CHAT}),  # type: ignore[arg-type]
        messages=Recorder("messages", log, answers={"send_text": {"id": "m9"}}),  # type: ignore[arg-type]
        storage=Recorder("storage", log, sync=frozenset({"get_encoded"}),  # type: ignore[arg-type]
                         answers={"get_encoded": b"\x01", "list_keys": []}),
        net=Recorder("net", log),  # type: ignore[arg-type]
        conversations=Recorder("conversations", log,  # type: ignore[arg-type]
                               sync=frozenset({"get_mapping", "get_mapping_by_provider", "check_room", "chat_of",
                                               "handover", "messages"}),
                               answers={"chat_of": ("main", CHAT)}),
    )
    router = CapabilityRouter(services, timeout=1.0, send_factor=4)
    await router.invoke(FakeCaller(), verb, valid_args(verb))
    assert log == EXPECTED_CALLS[verb]


@pytest.mark.parametrize("verb", ["storage.drop", "engine.send_raw", "__init__", "", "messages.send_text "])
async def test_verb_outside_the_allowlist_is_an_unknown_capability_verb(
    router: CapabilityRouter, engine: CountingEngine, verb: str
) -> None:
    with pytest.raises(CapabilityError, match="unknown capability verb"):
        await router.invoke(FakeCaller(), verb, {})
    assert engine.calls == []


async def test_non_string_verb_is_an_unknown_capability_verb(router: CapabilityRouter) -> None:
    with pytest.raises(CapabilityError, match="unknown capability verb"):
        await router.invoke(FakeCaller(), 7, {})  # type: ignore[arg-type]


async def _sdk_verbs() -> set[str]:
    """Every verb name the plugin-facing `ctx` can emit, collected through a recording backend."""
    emitted: set[str] = set()

    class Recording:
        async def call(self, verb: str, args: dict[str, Any]) -> Any:
            emitted.add(verb)
            return [False, None]

    ctx = Context("p", {}, Recording())  # type: ignore[arg-type]
    calls = [
        ctx.messages.send_text("s", "c", "t"),
        ctx.messages.reply("s", "c", "q", "t"),
        ctx.engine.get_group_info("s", "g"),
        ctx.engine.get_contacts("s"),
        ctx.engine.get_contact_by_id("s", "c"),
        ctx.engine.check_number_exists("s", "1"),
        ctx.engine.get_chats("s"),
        ctx.engine.get_chat_history("s", "c"),
        ctx.engine.canonical_chat_id("s", "c"),
        ctx.storage.get("k"),
        ctx.storage.set("k", 1),
        ctx.storage.delete("k"),
        ctx.storage.list(),
        ctx.net.fetch("https://api.example.com/"),
        ctx.conversations.send({"text": "x"}),
        ctx.handover.set("ref", "human"),
        ctx.handover.get("ref"),
        ctx.conversations.messages("conv"),
        ctx.mappings.upsert({"id": "x"}),
        ctx.mappings.get("conv"),
        ctx.mappings.get_by_provider("prov", "ext"),
    ]

    for call in calls:
        await call
    return emitted


async def test_every_capability_the_sdk_offers_is_in_the_host_allowlist() -> None:
    missing = sorted(await _sdk_verbs() - set(VERBS))
    assert missing == [], f"SDK calls that the host refuses as unknown verbs: {missing}"


# -- permissions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", sorted(VERBS))
async def test_every_verb_refuses_a_caller_without_its_permission(
    router: CapabilityRouter, engine: CountingEngine, storage: PluginStorage, verb: str
) -> None:
    needed = VERBS[verb].permission
    caller = FakeCaller(permissions=PERMISSIONS - {needed})
    with pytest.raises(CapabilityError) as caught:
        await router.invoke(caller, verb, valid_args(verb))
    assert repr(needed) in str(caught.value)
    assert verb in str(caught.value)
    assert engine.calls == []
    assert storage.list("caller") == []


def test_each_verb_family_needs_the_documented_permission() -> None:
    expected = {
        "messages": "messages:send",
        "engine": "engine:read",
        "storage": "storage:use",
        "net": "net:fetch",
        "conversations": "conversation:send",
        "handover": "conversation:send",
        "mappings": "conversation:send",
    }
    reads = {"handover.get", "conversations.messages"}  # reading one's own records needs no send right
    for name, verb in VERBS.items():
        assert verb.permission == ("conversation:read" if name in reads else expected[name.split(".")[0]]), name


# -- arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"session_id": "main", "text": "hi"}, "chat_id"),  # missing
        ({"session_id": "main", "chat_id": 5, "text": "hi"}, "chat_id"),  # wrong type
        ({"session_id": "main", "chat_id": "c" * 257, "text": "hi"}, "chat_id"),  # too long
        ({"session_id": "main", "chat_id": "", "text": "hi"}, "chat_id"),  # empty
        ({"session_id": "main", "chat_id": "a\nb", "text": "hi"}, "chat_id"),  # control character
        ({"session_id": "main", "chat_id": "a\x00b", "text": "hi"}, "chat_id"),  # NUL
        ({"session_id": "main", "chat_id": "c", "text": "x" * 65537}, "text"),  # too long
        ({"session_id": "main", "chat_id": "c", "text": "hi", "evil": True}, "evil"),  # unknown extra
    ],
)
async def test_invalid_argument_is_refused_naming_the_argument(
    router: CapabilityRouter, engine: CountingEngine, args: dict[str, Any], named: str
) -> None:
    with pytest.raises(CapabilityError, match="invalid argument") as caught:
        await router.invoke(FakeCaller(), "messages.send_text", args)
    assert named in str(caught.value)
    assert "messages.send_text" in str(caught.value)
    assert engine.calls == []


@pytest.mark.parametrize("args", [None, [], "session_id=main", 42])
async def test_arguments_that_are_not_an_object_are_refused(
    router: CapabilityRouter, engine: CountingEngine, args: Any
) -> None:
    with pytest.raises(CapabilityError, match="invalid argument"):
        await router.invoke(FakeCaller(), "engine.get_chats", args)
    assert engine.calls == []


@pytest.mark.parametrize(("asked", "given"), [(1000, 100), (0, 1), (-5, 1), (30, 30)])
async def test_chat_history_limit_is_clamped_to_1_through_100(
    router: CapabilityRouter, engine: CountingEngine, asked: int, given: int
) -> None:
    args = {"session_id": "main", "chat_id": "c@c.us", "limit": asked}
    await router.invoke(FakeCaller(), "engine.get_chat_history", args)
    assert engine.calls == [("get_chat_history", ("main", "c@c.us", given, False))]


async def test_storage_value_that_is_not_plain_data_is_refused(
    router: CapabilityRouter, storage: PluginStorage
) -> None:
    with pytest.raises(CapabilityError, match=r"storage\.set"):
        await router.invoke(FakeCaller(), "storage.set", {"key": "k", "value": {1, 2}})
    assert storage.list("caller") == []


# -- session scope -----------------------------------------------------------------------------------


async def test_session_outside_the_manifest_sessions_is_refused_before_the_engine(
    router: CapabilityRouter, engine: CountingEngine
) -> None:
    caller = FakeCaller(scope=SessionScope(["main"], False, []))
    with pytest.raises(CapabilityError, match="session 'other' is not in the manifest sessions"):
        await router.invoke(caller, "engine.get_chats", {"session_id": "other"})
    assert engine.calls == []


async def test_session_the_plugin_is_not_active_on_is_refused_before_the_engine(
    router: CapabilityRouter, engine: CountingEngine
) -> None:
    caller = FakeCaller(scope=SessionScope(["*"], True, ["main"]))
    with pytest.raises(CapabilityError, match="not active on session 'other'"):
        await router.invoke(caller, "messages.send_text", {"session_id": "other", "chat_id": "c", "text": "t"})
    assert engine.calls == []


async def test_session_without_a_live_engine_is_refused_before_the_engine(
    router: CapabilityRouter, engine: CountingEngine
) -> None:
    engine.live.discard("main")
    with pytest.raises(CapabilityError, match="session 'main' has no live engine"):
        await router.invoke(FakeCaller(), "engine.get_contacts", {"session_id": "main"})
    assert engine.calls == []


# -- service failures and timeouts -------------------------------------------------------------------


async def test_engine_refusal_becomes_a_capability_error_naming_the_verb(
    router: CapabilityRouter, engine: CountingEngine
) -> None:
    engine.fail = EngineError("session 'main' has no group 'x@g.us'")
    with pytest.raises(CapabilityError, match=r"engine.get_group_info: session 'main' has no group"):
        await router.invoke(FakeCaller(), "engine.get_group_info", {"session_id": "main", "group_id": "x@g.us"})


async def test_unexpected_host_failure_is_reported_without_its_details(
    router: CapabilityRouter, engine: CountingEngine
) -> None:
    engine.fail = RuntimeError("/srv/secret/path exploded")
    with pytest.raises(CapabilityError) as caught:
        await router.invoke(FakeCaller(), "engine.get_chats", {"session_id": "main"})
    assert "host service failed" in str(caught.value)
    assert "/srv/secret/path" not in str(caught.value)


async def test_call_past_its_timeout_raises_capability_timeout(
    make_router: Callable[..., CapabilityRouter], engine: CountingEngine
) -> None:
    engine.hang = asyncio.Event()
    router = make_router(timeout=0.01)
    with pytest.raises(CapabilityTimeout, match=r"engine\.get_chats"):
        await router.invoke(FakeCaller(), "engine.get_chats", {"session_id": "main"})


async def test_send_verbs_get_the_send_factor_times_the_timeout(
    make_router: Callable[..., CapabilityRouter], engine: CountingEngine
) -> None:
    engine.hang = asyncio.Event()
    router = make_router(timeout=0.01, send_factor=4)
    with pytest.raises(CapabilityTimeout, match=r"after 0\.04 s"):
        await router.invoke(FakeCaller(), "messages.send_text", {"session_id": "main", "chat_id": "c", "text": "t"})


# -- storage namespaces ------------------------------------------------------------------------------


async def test_storage_verbs_use_only_the_callers_namespace(router: CapabilityRouter, storage: PluginStorage) -> None:
    alice, bob = FakeCaller(plugin_id="alice"), FakeCaller(plugin_id="bob")
    await router.invoke(alice, "storage.set", {"key": "shared-name", "value": "alice's"})

    assert await router.invoke(bob, "storage.get", {"key": "shared-name"}) == [False, None]
    assert await router.invoke(bob, "storage.list", {}) == []
    assert await router.invoke(bob, "storage.delete", {"key": "shared-name"}) is False
    assert await router.invoke(alice, "storage.get", {"key": "shared-name"}) == [True, "alice's"]
    assert storage.list("alice") == ["shared-name"]


async def test_storage_key_cannot_name_another_plugins_namespace(
    router: CapabilityRouter, storage: PluginStorage
) -> None:
    await router.invoke(FakeCaller(plugin_id="alice"), "storage.set", {"key": "bob/secret", "value": 1})
    await router.invoke(FakeCaller(plugin_id="alice"), "storage.set", {"key": "../bob", "value": 1})
    assert storage.list("bob") == []


async def test_on_call_reports_each_verb_and_outcome(engine: CountingEngine, storage: PluginStorage) -> None:
    seen: list[tuple[str, str, str]] = []
    denied: list[tuple[str, str]] = []
    bus = HookBus(budget=lambda _plugin_id: 1.0)
    services = Services(engine=engine, messages=MessageService(engine, bus), storage=storage)  # type: ignore[arg-type]
    router = CapabilityRouter(services, timeout=1.0, send_factor=4, on_call=lambda p, v, o: seen.append((p, v, o)),
                              on_denied=lambda p, m: denied.append((p, m)))
    caller = FakeCaller()
    await router.invoke(caller, "engine.get_chats", {"session_id": "main"})
    with pytest.raises(CapabilityError):
        await router.invoke(caller, "no.such.verb", {})
    with pytest.raises(CapabilityError):
        await router.invoke(FakeCaller(permissions=frozenset()), "engine.get_chats", {"session_id": "main"})
    pid = caller.plugin_id
    assert seen == [(pid, "engine.get_chats", "ok"), (pid, "unknown", "error"), (pid, "engine.get_chats", "denied")]
    assert len(denied) == 1 and denied[0][0] == pid and "'engine:read'" in denied[0][1]


async def test_on_call_counts_a_failed_service_as_error_and_a_late_one_as_timeout(
    engine: CountingEngine, storage: PluginStorage
) -> None:
    seen: list[tuple[str, str]] = []
    services = Services(engine=engine, messages=MessageService(engine, HookBus(budget=lambda _p: 1.0)),  # type: ignore[arg-type]
                        storage=storage)
    router = CapabilityRouter(services, timeout=0.01, send_factor=4, on_call=lambda _p, v, o: seen.append((v, o)))
    engine.fail = EngineError("no such group")
    with pytest.raises(CapabilityError):
        await router.invoke(FakeCaller(), "engine.get_chats", {"session_id": "main"})
    engine.fail, engine.hang = None, asyncio.Event()
    with pytest.raises(CapabilityTimeout):
        await router.invoke(FakeCaller(), "engine.get_chats", {"session_id": "main"})
    assert seen == [("engine.get_chats", "error"), ("engine.get_chats", "timeout")]


async def test_a_verb_that_is_not_a_send_gets_the_plain_timeout_whatever_the_send_factor(
    make_router: Callable[..., CapabilityRouter], engine: CountingEngine
) -> None:
    engine.hang = asyncio.Event()
    router = make_router(timeout=0.01, send_factor=1000)
    with pytest.raises(CapabilityTimeout, match=r"engine\.get_chats: timed out after 0\.01 s"):
        await router.invoke(FakeCaller(), "engine.get_chats", {"session_id": "main"})


class _BrokenStorage:
    def get_encoded(self, plugin_id: str, key: str) -> bytes | None:  # what storage.get reads
        raise RuntimeError("/srv/secret/db is corrupt")


@pytest.mark.parametrize("verb, args", [("engine.get_chats", {"session_id": "main"}), ("storage.get", {"key": "k"})],
                         ids=["awaited", "inline"])
async def test_an_unexpected_host_failure_names_verb_and_kind_and_is_logged_for_the_operator(
    engine: CountingEngine, caplog: pytest.LogCaptureFixture, verb: str, args: dict[str, Any]
) -> None:
    engine.fail = RuntimeError("/srv/secret/path exploded")
    services = Services(engine=engine, messages=MessageService(engine, HookBus(budget=lambda _p: 1.0)),  # type: ignore[arg-type]
                        storage=_BrokenStorage())  # type: ignore[arg-type]
    router = CapabilityRouter(services, timeout=1.0, send_factor=4)
    with caplog.at_level(logging.ERROR, logger="plugbox.capabilities"), \
            pytest.raises(CapabilityError) as caught:
        await router.invoke(FakeCaller(plugin_id="alice"), verb, args)
    assert str(caught.value) == f"{verb}: host service failed (RuntimeError)"
    [record] = caplog.records
    assert record.getMessage() == f"capability {verb} for plugin alice failed inside the host"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


@pytest.mark.parametrize("verb", ["net.fetch", "conversations.send", "mappings.upsert", "mappings.get",
                                  "mappings.get_by_provider", "handover.set"])
async def test_a_verb_whose_service_this_host_lacks_is_refused_naming_it(verb: str) -> None:
    log: list[Any] = []
    services = Services(engine=Recorder("engine", log), messages=Recorder("messages", log),  # type: ignore[arg-type]
                        storage=Recorder("storage", log))  # type: ignore[arg-type]
    router = CapabilityRouter(services, timeout=1.0, send_factor=4)
    with pytest.raises(CapabilityError, match=rf"^{re.escape(verb)}: not available on this host$"):
        await router.invoke(FakeCaller(), verb, valid_args(verb))
    assert log == []


async def test_fetch_passes_the_request_body_on() -> None:
    log: list[Any] = []
    services = Services(engine=Recorder("engine", log), messages=Recorder("messages", log),  # type: ignore[arg-type]
                        storage=Recorder("storage", log), net=Recorder("net", log))  # type: ignore[arg-type]
    router = CapabilityRouter(services, timeout=1.0, send_factor=4)
    await router.invoke(FakeCaller(), "net.fetch", valid_args("net.fetch") | {"method": "POST", "body": "payload"})
    assert log == [("net.fetch", ("caller", "https://api.example.com/"),
                    {"method": "POST", "headers": {}, "body": "payload", "timeout_ms": 1000})]


@pytest.mark.parametrize("answer", [{"ok": True}, {"id": 42}, ["m9"], None],
                         ids=["no-id", "id-not-text", "list", "none"])
async def test_a_conversation_send_without_a_message_id_is_recorded_without_one(answer: Any) -> None:
    log: list[Any] = []
    services = Services(engine=Recorder("engine", log),  # type: ignore[arg-type]
                        messages=Recorder("messages", log, answers={"send_text": answer}),  # type: ignore[arg-type]
                        storage=Recorder("storage", log),  # type: ignore[arg-type]
                        conversations=Recorder("conversations", log, sync=frozenset({"check_room"})))  # type: ignore[arg-type]
    router = CapabilityRouter(services, timeout=1.0, send_factor=4)
    await router.invoke(FakeCaller(), "conversations.send", valid_args("conversations.send"))
    recorded = ENVELOPE | {"provider": None, "externalId": None}
    assert log[-1] == ("conversations.record_sent", ("caller", recorded, None), {})


async def test_an_unknown_fetch_method_is_refused_listing_the_methods(router: CapabilityRouter) -> None:
    methods = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
    with pytest.raises(CapabilityError, match=rf"'method': 'BREW' is not one of {methods}"):
        await router.invoke(FakeCaller(), "net.fetch", valid_args("net.fetch") | {"method": "BREW"})


def test_the_router_lists_every_allowlisted_verb_in_order(router: CapabilityRouter) -> None:
    assert router.verb_names() == sorted(VERBS) and "storage.get" in router.verb_names()


async def test_only_verbs_that_never_wait_are_answered_before_invoke_returns(router: CapabilityRouter) -> None:
    assert router.is_sync("storage.get") and not router.is_sync("storage.list")  # a scan runs off the loop
    assert not router.is_sync("engine.get_chats") and not router.is_sync("messages.send_text")
    assert not router.is_sync("no.such.verb")
    assert router.invoke(FakeCaller(), "storage.get", {"key": "k"}).done()


def _fetch_router(log: list[Any]) -> CapabilityRouter:
    services = Services(engine=Recorder("engine", log), messages=Recorder("messages", log),  # type: ignore[arg-type]
                        storage=Recorder("storage", log), net=Recorder("net", log))  # type: ignore[arg-type]
    return CapabilityRouter(services, timeout=1.0, send_factor=4)


async def test_a_fetch_body_of_another_type_is_refused_before_the_fetcher_sees_it() -> None:
    log: list[Any] = []
    with pytest.raises(CapabilityError, match=r"net\.fetch: invalid argument: 'body': must be str, bytes or None$"):
        await _fetch_router(log).invoke(FakeCaller(), "net.fetch", valid_args("net.fetch") | {"body": 7})
    assert log == []


async def test_a_fetch_body_is_capped_in_bytes_not_characters() -> None:
    log: list[Any] = []
    router = _fetch_router(log)
    at_cap = "é" * (FETCH_BODY_MAX_BYTES // 2)  # two bytes each in UTF-8
    await router.invoke(FakeCaller(), "net.fetch", valid_args("net.fetch") | {"method": "POST", "body": at_cap})
    assert len(log) == 1
    with pytest.raises(CapabilityError, match=rf"'body': {FETCH_BODY_MAX_BYTES + 2} bytes, at most"):
        await router.invoke(FakeCaller(), "net.fetch", valid_args("net.fetch") | {"body": at_cap + "é"})
    assert len(log) == 1


async def test_on_call_counts_inline_answers_and_refusals_under_the_verbs_name(
    engine: CountingEngine, storage: PluginStorage
) -> None:
    seen: list[tuple[str, str]] = []
    services = Services(engine=engine, messages=MessageService(engine, HookBus(budget=lambda _p: 1.0)),  # type: ignore[arg-type]
                        storage=storage)
    router = CapabilityRouter(services, timeout=1.0, send_factor=4, on_call=lambda _p, v, o: seen.append((v, o)))
    await router.invoke(FakeCaller(), "storage.get", {"key": "k"})
    with pytest.raises(CapabilityError):
        await router.invoke(FakeCaller(), "storage.get", {"key": ""})  # invalid argument
    assert seen == [("storage.get", "ok"), ("storage.get", "error")]


async def test_an_unknown_verb_is_named_in_the_refusal_up_to_64_characters(router: CapabilityRouter) -> None:
    verb = "v" * 60 + "WXYZ" + "tail-not-shown"
    with pytest.raises(CapabilityError, match=rf"^unknown capability verb '{'v' * 60}WXYZ'$"):
        await router.invoke(FakeCaller(), verb, {})


async def test_permission_and_session_refusals_name_the_calling_plugin(router: CapabilityRouter) -> None:
    with pytest.raises(CapabilityError, match="plugin 'alice' lacks permission 'storage:use'"):
        await router.invoke(FakeCaller(plugin_id="alice", permissions=frozenset()), "storage.get", {"key": "k"})
    caller = FakeCaller(plugin_id="alice", scope=SessionScope(["*"], True, ["main"]))
    with pytest.raises(CapabilityError, match="plugin 'alice' is not active on session 'other'"):
        await router.invoke(caller, "engine.get_chats", {"session_id": "other"})


# -- a worker's encoded arguments and a built-in's plain ones ------------------------------------------


async def test_a_stored_value_comes_back_decoded_to_a_builtin_and_as_stored_to_a_worker(
    router: CapabilityRouter,
) -> None:
    await router.invoke(FakeCaller(), "storage.set", {"key": "k", "value": {"a": [1, 2]}})
    assert await router.invoke(FakeCaller(), "storage.get", {"key": "k"}) == [True, {"a": [1, 2]}]
    found, stored = await router.invoke(FakeCaller(), "storage.get", encoded({"key": "k"}))  # from a frame
    assert found is True and type(stored) is msgspec.Raw  # handed back untouched: the worker decodes it
    assert bytes(stored) == bytes(encoded({"a": [1, 2]}))


async def test_a_workers_arguments_that_cannot_be_decoded_are_refused_naming_the_verb_and_why(
    router: CapabilityRouter,
) -> None:
    with pytest.raises(CapabilityError, match=r"^storage\.get: undecodable arguments: Input data was truncated$"):
        await router.invoke(FakeCaller(), "storage.get", msgspec.Raw(b"\x81\xa3key"))


@pytest.mark.parametrize("verb, shown", [("storage.get", "storage.get"),
                                         ("v" * 60 + "WXYZ" + "tail", "v" * 60 + "WXYZ")],
                         ids=["known-verb", "long-name-cut-at-64"])
async def test_a_builtins_argument_that_is_not_plain_data_is_refused_naming_where(
    router: CapabilityRouter, verb: str, shown: str
) -> None:
    refusal = rf"^{re.escape(shown)}: invalid argument: args\.key: set is not plain data$"
    with pytest.raises(CapabilityError, match=refusal):
        await router.invoke(FakeCaller(), verb, {"key": {1, 2}})


async def test_a_builtins_argument_the_wire_cannot_carry_is_refused_naming_the_verb(router: CapabilityRouter) -> None:
    lone_surrogate = "\ud800"  # a str, so plain data, but it has no UTF-8 form
    with pytest.raises(CapabilityError, match=r"^storage\.set: invalid argument: 'utf-8' codec can't encode"):
        await router.invoke(FakeCaller(), "storage.set", {"key": "k", "value": lone_surrogate})
