"""Hypothesis strategies shared by the bridge fuzz tests: plain data, arbitrary msgpack values,
worker→host messages that decode, and frames that do not."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from plugbox.protocol import HEADER, Call, Hello, LayerResult, Log, Pong, Register, Result

# Bounded for CI (the whole directory runs in well under a minute); atheris_bridge.py is for long runs.
FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TAGS = ("hello", "call", "res", "reg", "log", "pong", "load", "life", "hook", "config", "health", "webhook",
        "search", "rep", "ping", "bye", "req", "", "x" * 40)
KNOWN_VERBS = ("storage.get", "storage.set", "storage.list", "storage.delete", "messages.send_text",
               "net.fetch", "engine.get_chats", "mappings.get")
_INT = st.one_of(st.integers(-(2**63), 2**64 - 1), st.sampled_from([0, 1, -1, 2**31, 2**63 - 1]))

scalars = st.one_of(
    st.none(), st.booleans(), _INT, st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=40),
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
)

plain = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=25,
)


def nested(depth: int, leaf: Any = None, as_dict: bool = False) -> Any:
    """`depth` levels of single-element lists (or {"k": ...} dicts) around `leaf`, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


deep = st.builds(nested, st.integers(0, 100), st.none() | _INT, st.booleans())

any_value = st.one_of(plain, deep, st.lists(plain, max_size=8))

ids = st.one_of(_INT, st.integers(1, 8))

# Messages that decode into WorkerMsg (valid on the wire; may still be meaningless to the host).
worker_msgs = st.one_of(
    st.builds(Hello, version=_INT, pid=_INT,
              layers=st.lists(st.builds(LayerResult, name=st.text(max_size=8), applied=st.booleans(),
                                        detail=st.text(max_size=20), skipped=st.booleans()), max_size=3),
              error=st.none() | st.text(max_size=20)),
    st.builds(Call, id=ids, verb=st.sampled_from(KNOWN_VERBS) | st.text(max_size=30), args=any_value),
    st.builds(Result, id=ids, ok=st.booleans(), value=any_value, error=st.none() | st.text(max_size=20)),
    st.builds(Register, what=st.sampled_from(["hook", "webhook", "search"]),
              name=st.sampled_from(["message:ack", "message:received", "nope"]) | st.text(max_size=20),
              handler_id=_INT, priority=_INT),
    st.builds(Log, level=st.sampled_from(["info", "error", "nope"]) | st.text(max_size=10),
              message=st.text(max_size=200), fields=st.none() | st.dictionaries(st.text(max_size=8), any_value,
                                                                               max_size=3)),
    st.builds(Pong, id=ids),
)

_enc = msgspec.msgpack.Encoder()

# Payloads that are valid msgpack but not a WorkerMsg: unknown tags, wrong arity, wrong types.
wrong_shape = st.one_of(
    st.lists(any_value, max_size=6).map(_enc.encode),
    st.tuples(st.sampled_from(TAGS), st.lists(any_value, max_size=6)).map(lambda t: _enc.encode([t[0], *t[1]])),
    any_value.map(_enc.encode),
)
# Raw bytes, plus msgpack extension types (only timestamps, type -1, are plain data).
ext_payloads = st.tuples(st.integers(-128, 127), st.binary(max_size=20)).map(
    lambda t: _enc.encode(["log", "info", "m", {"k": msgspec.msgpack.Ext(t[0], t[1])}]))

def _nest_bytes(depth: int, as_dict: bool) -> bytes:
    return (b"\x81\xa1k" if as_dict else b"\x91") * depth + b"\xc0"


# Deep nesting written at the byte level (an encoder would refuse it), around and past the decoder's
# own limit, inside the Any-typed field of each message kind that has one.
_DEEP_FRAMES = (
    lambda n: b"\x95\xa3res\x01\xc3" + n + b"\xc0",  # Result.value
    lambda n: b"\x95\xa3res\x01\xc2\xc0" + n,  # Result.error (wrong type)
    lambda n: b"\x94\xa3log\xa4info\xa1m\x81\xa1k" + n,  # Log.fields
    lambda n: b"\x94\xa4call\x01\xabstorage.set\x82\xa3key\xa1k\xa5value" + n,  # Call.args
    lambda n: n,  # the whole message
)
deep_payloads = st.builds(
    lambda make, depth, as_dict: make(_nest_bytes(depth, as_dict)),
    st.sampled_from(_DEEP_FRAMES), st.integers(0, 5000) | st.integers(900, 1100), st.booleans(),
)
payloads = st.one_of(deep_payloads, st.binary(max_size=200), wrong_shape, ext_payloads, worker_msgs.map(_enc.encode))


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split `data` at the given cut points (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]
