"""Fuzzing the capability router (SPEC §6, docs/architecture.md "One ctx, two tiers"): whatever verb
name and argument structure reach `CapabilityRouter.invoke`, the only exception out
is CapabilityError, and a call that fails the allowlist, permission, schema or session check never
touches a host service (every service here is a spy that records any use)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from plugbox.capabilities.router import CapabilityRouter, Services
from plugbox.capabilities.verbs import VERBS
from plugbox.errors import CapabilityError
from plugbox.permissions import PERMISSIONS, SessionScope
from plugbox.plain import check_plain
from tests.fuzz._strategies import FUZZ, any_value, plain

LIVE = ("main", "other")
SESSIONS = ("main", "other", "dead", "*", "", "x" * 300, "a\x00b")
_SYNC_ANSWERS: dict[str, Any] = {"get_encoded": None, "list": [], "get_mapping": None,
                                 "get_mapping_by_provider": None}


class _Done:
    """An awaitable answer that never warns when left un-awaited."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Iterator[Any]:
        return self.value
        yield  # pragma: no cover - makes this a generator


class Spy:
    """Records every use of a service. `is_live` is the one read the session check itself makes."""

    def __init__(self, name: str, touched: list[str]) -> None:
        self._name = name
        self._touched = touched

    def is_live(self, session_id: str) -> bool:
        return session_id in LIVE

    def __getattr__(self, attr: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._touched.append(f"{self._name}.{attr}")
            if attr in _SYNC_ANSWERS:
                return _SYNC_ANSWERS[attr]
            return _Done({"id": "m1", "chatId": "15550100001@c.us"})

        return call


@dataclass
class Caller:
    plugin_id: str
    permissions: frozenset[str]
    scope: SessionScope


def _router(touched: list[str], counted: list[tuple[str, str]]) -> CapabilityRouter:
    services = Services(engine=Spy("engine", touched), messages=Spy("messages", touched),  # type: ignore[arg-type]
                        storage=Spy("storage", touched), net=Spy("net", touched),  # type: ignore[arg-type]
                        conversations=Spy("conversations", touched))  # type: ignore[arg-type]
    return CapabilityRouter(services, timeout=1.0, send_factor=2, on_call=lambda _p, v, o: counted.append((v, o)))


def _valid(caller: Caller, verb_name: Any, args: Any) -> bool:
    """The oracle, written from the spec rather than from the router: allowlisted verb, permission
    granted, arguments convert into the verb's schema, session in scope, active and live."""
    if not isinstance(verb_name, str) or verb_name not in VERBS:
        return False
    verb = VERBS[verb_name]
    if verb.permission not in caller.permissions:
        return False
    try:  # the arguments as a worker sends them: plain data, encoded, decoded into the schema
        check_plain(args)
        parsed = msgspec.msgpack.decode(msgspec.msgpack.encode(args), type=verb.args)
    except (TypeError, ValueError, OverflowError):  # PlainDataError, msgspec's errors
        return False
    if verb.session_arg:
        s = parsed.session_id
        scope = caller.scope
        if not scope.permits(s) or (scope.session_scoped and s not in scope.active) or s not in LIVE:
            return False
    return True


_FIELDS = sorted({f for v in VERBS.values() for f in v.args.__struct_fields__} | {"x", "sessionId", "chatId"})
_STRINGS = st.sampled_from((*SESSIONS, "15550100001@c.us", "k", "hello", "GET", "https://example.com/", "human",
                             "bot", "crm", "42", "conv-1")) | st.text(max_size=20)
_VALUES = st.one_of(_STRINGS, plain, st.integers(-5, 500), st.booleans())
_RECORDS = st.dictionaries(st.sampled_from(["conversationId", "sessionId", "chatId", "text", "provider", "externalId",
                                            "conversation_id", "extra"]), _STRINGS, max_size=7)
arg_structs = st.one_of(
    any_value,
    st.dictionaries(st.sampled_from(_FIELDS), _VALUES | _RECORDS, max_size=6),
    st.lists(_VALUES, max_size=4),
)
verb_names = st.one_of(st.sampled_from(sorted(VERBS)), st.text(max_size=40), st.integers(), st.none(), st.binary(),
                       st.tuples(st.text(max_size=5)), st.sampled_from([v.upper() for v in VERBS] + ["storage.",
                                                                                                     "__class__"]))
SAMPLE: dict[str, Any] = {
    "session_id": "main", "chat_id": "15550100001@c.us", "quoted_id": "m1", "text": "hello", "group_id": "g@g.us",
    "contact_id": "15550100002@c.us", "phone": "15550100003", "limit": 10, "include_media": False, "key": "k",
    "value": {"n": 1}, "prefix": "", "url": "https://api.example.com/", "method": "GET", "headers": {},
    "body": None, "timeout_ms": 1000, "ref": "conv-1", "state": "human", "conversation_id": "conv-1",
    "provider": "crm", "external_id": "42",
    "envelope": {"conversationId": "c", "sessionId": "main", "chatId": "15550100001@c.us", "text": "hi"},
    "mapping": {"conversationId": "c", "provider": "crm", "externalId": "42", "sessionId": "main",
                "chatId": "15550100001@c.us"},
}


@st.composite
def near_valid_calls(draw: st.DrawFn) -> tuple[str, Any]:
    """A real verb with the arguments it wants, then zero to two of them replaced, dropped or added."""
    name = draw(st.sampled_from(sorted(VERBS)))
    args = {f: SAMPLE[f] for f in VERBS[name].args.__struct_fields__ if f in SAMPLE}
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        field = draw(st.sampled_from(sorted(args) or ["x"]) | st.sampled_from(_FIELDS))
        how = draw(st.sampled_from(["replace", "drop", "nest"]))
        if how == "drop":
            args.pop(field, None)
        elif how == "nest":
            args[field] = {field: args.get(field)}
        else:
            args[field] = draw(_VALUES | _RECORDS)
    return name, args


calls = st.tuples(verb_names, arg_structs) | near_valid_calls()

_PERMISSIVE = SessionScope(["*"], True, ["main", "other"])
_SCOPES = st.builds(SessionScope, st.lists(st.sampled_from(["*", "main", "other", "dead"]), max_size=3),
                    st.booleans(), st.lists(st.sampled_from(["main", "other", "dead"]), max_size=3))
callers = st.builds(  # weighted toward callers that may make the call, so that valid calls are common
    Caller,
    plugin_id=st.sampled_from(["p", "other-plugin"]),
    permissions=st.one_of(st.just(PERMISSIONS), st.just(PERMISSIONS),
                          st.frozensets(st.sampled_from(sorted(PERMISSIONS)))),
    scope=st.one_of(st.just(_PERMISSIVE), st.just(_PERMISSIVE), _SCOPES),
)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@FUZZ
@given(caller=callers, call=calls)
def test_invoke_raises_only_capability_errors_and_touches_nothing_when_invalid(
    runner: asyncio.Runner, caller: Caller, call: tuple[Any, Any]
) -> None:
    verb_name, args = call
    touched: list[str] = []
    counted: list[tuple[str, str]] = []
    router = _router(touched, counted)
    valid = _valid(caller, verb_name, args)
    event("valid call" if valid else "invalid call")
    try:
        runner.run(_invoked(router, caller, verb_name, args))
    except CapabilityError:
        pass
    else:
        assert valid, "an invalid call was served"
    if not valid:
        assert touched == [], f"an invalid call reached a service: {touched}"
    else:
        assert touched, "a valid call never reached its service"
    assert len(counted) == 1  # every call is counted once, under its verb or as "unknown"
    if valid:
        assert counted[0][0] == verb_name
    if not (isinstance(verb_name, str) and verb_name in VERBS):
        assert counted[0] == ("unknown", "error")


@FUZZ
@given(caller=callers, call=calls)
def test_invoke_settles_refusals_and_inline_verbs_before_returning(caller: Caller, call: tuple[Any, Any]) -> None:
    """The bridge answers inline whatever `invoke` has settled by the time it returns: every
    refusal and every verb that never waits; nothing else has touched a service by then."""
    verb_name, args = call
    touched: list[str] = []
    router = _router(touched, [])
    valid = _valid(caller, verb_name, args)
    inline = valid and VERBS[verb_name].sync

    async def settled_now() -> tuple[bool, BaseException | None]:
        fut = router.invoke(caller, verb_name, args)
        if not fut.done():
            fut.cancel()
            return False, None
        return True, fut.exception()

    settled, exc = asyncio.run(settled_now())
    assert settled == (not valid or inline)
    if exc is not None:
        assert isinstance(exc, CapabilityError)
        assert not inline or touched  # a valid inline call fails only inside its service
    else:
        assert inline or not settled
    if not inline:
        assert touched == []


@given(args=st.sampled_from([{"key": "k" * 513}, {"key": ""}, {"key": 1}, {"key": "k", "extra": 1}, {}, [], None,
                             "key", {"key": ["k"]}, {"key": {"k": "v"}}]))
def test_storage_verbs_refuse_bad_keys_before_storage(args: Any) -> None:
    touched: list[str] = []
    router = _router(touched, [])
    caller = Caller("p", PERMISSIONS, SessionScope(["*"], False, ()))
    for verb in ("storage.get", "storage.set", "storage.delete"):
        with pytest.raises(CapabilityError, match=r"invalid argument|unknown"):
            asyncio.run(_invoked(router, caller, verb, args))
    assert touched == []


@pytest.mark.parametrize("verb_name", [["storage.get"], {"verb": 1}])
def test_unhashable_verb_name_is_an_unknown_verb(verb_name: Any) -> None:
    router = _router([], [])
    with pytest.raises(CapabilityError, match="unknown capability verb"):
        asyncio.run(_invoked(router, Caller("p", PERMISSIONS, SessionScope(["*"], False, ())), verb_name, {}))


async def _invoked(router: CapabilityRouter, caller: Caller, verb: Any, args: Any) -> Any:
    return await router.invoke(caller, verb, args)
