"""The memory of answers the channel holds for a worker that is not reading: bounded, and the
worker whose answers they are is the one refused."""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec

from plugbox.bridge.channel import ChannelLimits
from plugbox.bridge.held import memory_of
from plugbox.protocol import Call, encoded
from tests.unit.test_channel_limits import frames, replies, serving

KEYS = [f"{i:05d}" + "k" * 500 for i in range(2000)]  # about 1.1 MB of str objects
HELD_MAX = 3 << 20
LIMITS = ChannelLimits(1000, 60.0, 1.0, 60.0, 64, held_max=HELD_MAX)


async def test_answers_past_the_held_limit_are_refused_with_an_error_naming_it() -> None:
    server, router, channel, transport = serving(max_calls=32, limits=LIMITS)
    channel.data_received(frames(*[Call(i, "storage.set", encoded({})) for i in range(1, 9)]))
    assert len(router.waiting) == 8
    transport.write(b"\0" * 2000)  # the worker reads nothing: the queue stays above the mark
    for fut in router.waiting:
        fut.set_result(list(KEYS))  # each completes with its own 1.1 MB of objects
    await asyncio.sleep(0)
    stats = channel.stats()
    assert stats.held_answers == 8
    assert memory_of(KEYS, 1 << 30) * 2 < HELD_MAX < memory_of(KEYS, 1 << 30) * 3
    assert stats.refused_answers == 6  # two answers fit, the others became small errors
    assert stats.held_bytes <= HELD_MAX
    assert server.in_flight == 8  # held answers keep their slots until handed
    answered = []
    while not transport.reading or channel.stats().held_answers:
        answered += replies(transport.drain())
    refused = [r for r in answered if not r.ok]
    assert len(refused) == stats.refused_answers
    assert "not reading its channel" in (refused[0].error or "")
    assert "channel_held_max_bytes" in (refused[0].error or "")
    assert sum(r.ok and r.value == KEYS for r in answered) == 8 - stats.refused_answers
    assert server.in_flight == 0 and channel.stats().held_bytes == 0


async def test_one_answer_is_always_held_however_large() -> None:
    _server, router, channel, transport = serving(max_calls=4, limits=dataclasses.replace(LIMITS, held_max=1))
    channel.data_received(frames(Call(1, "storage.set", encoded({}))))
    transport.write(b"\0" * 2000)
    router.waiting[0].set_result(list(KEYS))
    await asyncio.sleep(0)
    assert channel.stats().held_answers == 1 and channel.stats().refused_answers == 0
    answered = []
    while not transport.reading or channel.stats().held_answers:
        answered += replies(transport.drain())
    assert [(r.id, r.ok) for r in answered] == [(1, True)]


def test_memory_of_counts_nested_objects_and_stops_past_its_limit() -> None:
    value = {"keys": list(KEYS), "raw": msgspec.Raw(b"\0" * 100_000)}
    total = memory_of(value, 1 << 30)
    assert total > sum(len(k) for k in KEYS) + 100_000
    assert memory_of(value, 10_000) < total  # it stopped early, and said it was past the limit
    assert memory_of(value, 10_000) > 10_000
