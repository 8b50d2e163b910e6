"""The hostile neighbours of `plugbox bench --scenario neighbours`, one per attack class, and the
victim they are measured against, as plugin source text.

Every attacker is an ordinary untrusted plugin that does a *legal* thing in quantity: it stays
inside its sandbox and uses only its channel and the capabilities its manifest grants. Each starts
its attack in `on_enable`, so the victim's baseline is measured before the attacker exists. The
frame-level attacks (`unread_replies`, `decode_bomb`) write to the plugin's own channel socket,
which a plugin can always do: it is the one fd its worker keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ATTACKS", "SECRET", "VICTIM", "Attack"]

# A config secret given to every attacker: it must never reach the host log.
SECRET = "s3cr3t-neighbour-token-4242"

VICTIM = '''
from plugbox.sdk import Plugin


class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.seen, priority=50)
        ctx.register_hook("message:sent", self.sent, priority=50)  # it watches what goes out, too
        ctx.register_hook("message:persisted", self.sent, priority=50)

    def sent(self, hook):
        return None

    async def seen(self, hook):
        if self.ctx.config.get("listOwn"):  # (list_scan) a listing of its own few keys, beside its write
            await self.ctx.storage.list("seen")
        await self.ctx.storage.set("seen", hook.data["body"])
        url = self.ctx.config.get("probeUrl")
        if url:
            await self.ctx.net.fetch(url, timeout_ms=5000)
        return None
'''

# Shared by the frame-level attacks: the channel fd and the wire encoder, found from inside.
_CHANNEL = '''
import gc
import os
import select
import stat


def channel_fd():
    for obj in gc.get_objects():
        transport = getattr(obj, "transport", None)
        if type(obj).__name__ in ("WorkerServer", "WorkerChannel") and transport is not None:
            return transport.get_extra_info("socket").fileno()
    return next(fd for fd in range(3, 1024) if _is_socket(fd))


def _is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # the channel is non-blocking: wait until the host has read some
            select.select([], [fd], [])


def call_frame(call_id, verb, args):
    from plugbox.protocol import Call, encode_frame
    return bytes(encode_frame(Call(call_id, verb, args)))
'''

_HEAD = '''
import asyncio
import os
import time

from plugbox.sdk import HookResult, Plugin
'''


def _plugin(body: str, *, channel: bool = False) -> str:
    return _HEAD + (_CHANNEL if channel else "") + body


@dataclass(frozen=True, slots=True)
class Attack:
    """One attack class: what it does (for the report), its plugin source and permissions."""

    name: str
    what: str
    source: str
    permissions: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)  # overrides for this round's host
    fetch_probe: bool = False  # the victim also fetches from the local server on every probe
    subscribe: tuple[str, ...] = ()  # events of an operator's outbound webhook subscription (to a slow local URL)
    victim_lists: bool = False  # the victim also lists its own keys on every probe


_UNREAD = _plugin('''
class Unread(Plugin):
    async def on_enable(self, ctx):
        await ctx.storage.set("big", "x" * (1 << 20))
        asyncio.get_running_loop().call_later(0.2, self.attack)

    def attack(self):
        fd = channel_fd()
        for i in range(400):
            write_all(fd, call_frame(1_000_000 + i, "storage.get", {"key": "big"}))
        time.sleep(60)  # never read a reply
''', channel=True)

_DECODE_BOMB = _plugin('''
class Bomb(Plugin):
    async def on_enable(self, ctx):
        asyncio.get_running_loop().call_later(0.2, self.attack)

    def attack(self):
        fd = channel_fd()
        frame = call_frame(2_000_000, "storage.set", {"key": "k", "value": [{}] * (8 << 20)})
        for _ in range(3):
            write_all(fd, frame)
            time.sleep(1.0)
''', channel=True)

_INLINE_FLOOD = _plugin('''
class Flood(Plugin):
    async def on_enable(self, ctx):
        await ctx.storage.set("k", "v" * 64)
        self.tasks = [asyncio.ensure_future(self.lane()) for _ in range(64)]

    async def lane(self):
        while True:
            try:
                await self.ctx.storage.get("k")
            except Exception:
                await asyncio.sleep(0)
''')

_LOG_FIELDS = _plugin('''
class Fields(Plugin):
    async def on_enable(self, ctx):
        self.task = asyncio.ensure_future(self.flood())

    async def flood(self):
        fields = {f"f{i}": "v" * 64 + self.ctx.config.get("apiToken", "") for i in range(20000)}
        while True:
            self.ctx.logger.info("fields", **fields)
            await asyncio.sleep(0.001)
''')

_LOG_FLOOD = _plugin('''
class Logs(Plugin):
    async def on_enable(self, ctx):
        self.task = asyncio.ensure_future(self.flood())

    async def flood(self):
        token = self.ctx.config.get("apiToken", "")
        line = "forged\\n2026-01-01 INFO plugbox.host admin key leaked \\x1b[31m" + token + "x" * 60000
        while True:
            self.ctx.logger.error(line)
            print(line)
            await asyncio.sleep(0)
''')

_LIST_SCAN = _plugin('''
class Scan(Plugin):
    async def on_enable(self, ctx):
        self.task = asyncio.ensure_future(self.scan())

    async def scan(self):
        # Under max_calls_in_flight, and again when its write budget refuses: a set that raised
        # would end the attack before it listed anything.
        for start in range(0, 3000, 30):
            await asyncio.gather(*(self.put(i) for i in range(start, start + 30)))
        await asyncio.gather(*(self.lane() for _ in range(24)))

    async def put(self, i):
        while True:
            try:
                return await self.ctx.storage.set(f"key:{i:06d}", i)
            except Exception:
                await asyncio.sleep(0.05)

    async def lane(self):
        while True:
            try:
                await self.ctx.storage.list("key:")
            except Exception:
                await asyncio.sleep(0)
''')

_WRITE_FLOOD = _plugin('''
class Writes(Plugin):
    async def on_enable(self, ctx):
        self.tasks = [asyncio.ensure_future(self.lane(i)) for i in range(16)]

    async def lane(self, i):
        value = "w" * (512 << 10)
        while True:
            try:
                await self.ctx.storage.set(f"big:{i}", value)
            except Exception:
                await asyncio.sleep(0.01)
''')

_FETCH_SLOTS = _plugin('''
class Hog(Plugin):
    async def on_enable(self, ctx):
        self.tasks = [asyncio.ensure_future(self.lane()) for _ in range(32)]

    async def lane(self):
        while True:
            try:
                await self.ctx.net.fetch(self.ctx.config["slowUrl"], timeout_ms=30000)
            except Exception:
                await asyncio.sleep(0.05)
''')

_CHAIN_STALL = _plugin('''
class Stall(Plugin):
    def on_load(self, ctx):
        for _ in range(50):
            ctx.register_hook("message:received", self.slow, priority=1)

    async def slow(self, hook):
        await asyncio.sleep(self.ctx.config.get("sleepS", 4.5))
''')

_POISON = _plugin('''
class Poison(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.poison, priority=1)

    def poison(self, hook):
        data = dict(hook.data)
        data.update({"body": "PWNED " + "x" * (1 << 20), "chatId": "15559999999@c.us", "extra": [[[[{}]]]] * 1000})
        return HookResult(data=data)
''')

_HANDLER_ERRORS = _plugin('''
class Raises(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.fail, priority=1)

    def fail(self, hook):
        raise RuntimeError("token=" + self.ctx.config.get("apiToken", "") + "\\n\\x1b[2J" + "e" * (1 << 20))
''')

_CRASH_LOOP = _plugin('''
class Crashes(Plugin):
    async def on_enable(self, ctx):
        asyncio.get_running_loop().call_later(0.4, os._exit, 3)
''')

_ENGINE_MEMORY = _plugin('''
class Chatter(Plugin):
    async def on_enable(self, ctx):
        self.task = asyncio.ensure_future(self.chatter())

    async def chatter(self):
        text = "m" * 60000
        n = 0
        while True:
            n += 1
            try:
                await self.ctx.messages.send_text("shared", f"1555{n % 100000:07d}@c.us", text)
            except Exception:
                await asyncio.sleep(0.01)
''')

_ENGINE_READS = _plugin('''
class Reads(Plugin):
    async def on_enable(self, ctx):
        self.n = 0
        self.tasks = [asyncio.ensure_future(self.lane()) for _ in range(16)]

    async def lane(self):
        while True:
            try:
                for _ in range(64):  # many chats, each of its own choosing, then list them all
                    self.n += 1
                    await self.ctx.messages.send_text("shared", f"1556{self.n:07d}@c.us", "m")
                await self.ctx.engine.get_chats("shared")
            except Exception:
                await asyncio.sleep(0.01)
''')

_SEND_FLOOD = _plugin('''
class Sends(Plugin):
    async def on_enable(self, ctx):
        self.tasks = [asyncio.ensure_future(self.lane()) for _ in range(32)]

    async def lane(self):
        while True:
            try:
                await self.ctx.messages.send_text("shared", "15550002222@c.us", "spam")
            except Exception:
                await asyncio.sleep(0.01)
''')

ATTACKS: tuple[Attack, ...] = (
    Attack("unread_replies", "400 storage.get of a 1 MiB value written to its channel, then never reads",
           _UNREAD, ("storage:use",)),
    Attack("decode_bomb", "three 8 MiB frames of 8 M empty maps", _DECODE_BOMB, ("storage:use",)),
    Attack("inline_flood", "64 lanes of storage.get as fast as replies come", _INLINE_FLOOD, ("storage:use",)),
    Attack("log_fields", "log lines with 20,000 fields each", _LOG_FIELDS),
    Attack("log_flood", "60 kB log and stdout lines with newlines, ANSI and its secret", _LOG_FLOOD),
    Attack("list_scan", "24 lanes of storage.list over 3,000 keys, "
           "while the victim lists its own",
           _LIST_SCAN, ("storage:use",), victim_lists=True),
    Attack("write_flood", "16 lanes of 512 KiB storage.set", _WRITE_FLOOD, ("storage:use",)),
    Attack("fetch_slots", "32 concurrent fetches of a URL that answers after 30 s", _FETCH_SLOTS, ("net:fetch",),
           fetch_probe=True),
    Attack("chain_stall", "50 handlers on message:received, each sleeping 4.5 s (budget 5 s)", _CHAIN_STALL),
    Attack("poison", "rewrites message:received (1 MiB body, another chat, junk fields) at priority 1", _POISON),
    Attack("handler_errors", "raises 1 MiB errors with its secret, newlines and ANSI on every message",
           _HANDLER_ERRORS),
    Attack("crash_loop", "exits 0.4 s after every start", _CRASH_LOOP),
    Attack("engine_memory", "sends 60 kB texts to 100,000 chats", _ENGINE_MEMORY, ("messages:send",)),
    Attack("engine_reads", "16 lanes: 64 sends to new chats, then engine.get_chats of them all",
           _ENGINE_READS, ("messages:send", "engine:read")),
    Attack("send_flood", "32 lanes of messages.send_text as fast as replies come", _SEND_FLOOD,
           ("messages:send",)),
    # Charged: the webhook deliveries of its sends past its share of the queue (`webhook_pending_per_cause`).
    Attack("webhook_queue", "the send flood, while the operator subscribes a webhook to messages",
           _SEND_FLOOD, ("messages:send",), subscribe=("message:received", "message:sent")),
)
