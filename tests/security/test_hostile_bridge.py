"""Hostile plugins against the bridge: garbage and oversize frames written straight onto the
channel fd, forged capability verbs and arguments, pickle payloads, deep nesting, huge values,
spoofed answers to requests the worker does not own.

The host decodes only the worker→host union (msgspec, no pickle, no extension types but
timestamps), drops and counts what does not decode and kills the worker past 100 bad frames or
on a length above the cap; the capability router is an allowlist that checks the permission and
the arguments of every call on the host side, whatever the worker's SDK did or did not check.
"""

from __future__ import annotations

import sys

import pytest

from plugbox.lifecycle import Status

from .conftest import HELPERS, SESSION, Attack, Canary, alive, assert_refused, enable, reported, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]



@pytest.mark.parametrize("count,killed", [(10, False), (150, True)])
async def test_hostile_garbage_frames_are_dropped_then_the_worker_is_ended(
    attack: Attack, count: int, killed: bool
) -> None:
    run, _outcome = await attack.run_in_hook("""
        import random
        def attack(ctx, cfg):
            rnd = random.Random(7)
            raw_send(ctx, b"".join(frame(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 64))))
                                   for _ in range(cfg["count"])))
            return "sent"
    """, {"count": count})
    assert run.entry_storage("started") == (True, True)
    runtime = run.entry.runtime
    if killed:
        await wait_for(lambda: not alive(run.pid), within=3)
        await wait_for(lambda: any("undecodable" in line["message"] for line in run.entry.logs.recent), within=3)
    else:
        assert run.result["ok"] is True and alive(run.pid)
        await wait_for(lambda: runtime.channel_stats().bad_frames >= count, within=3)
        again = await attack.fire("m2")
        assert reported(again)["outcome"]["ok"] is True  # still served
    await attack.aftermath()


@pytest.mark.parametrize("length", [0xFFFFFFFF, (16 << 20) + 1])
async def test_hostile_oversize_length_prefix_ends_the_worker(attack: Attack, length: int) -> None:
    run, outcome = await attack.run_in_hook("""
        import struct
        def attack(ctx, cfg):
            raw_send(ctx, struct.pack("!I", cfg["length"]) + b"\\0" * 64)
            return "sent"
    """, {"length": length})
    assert run.entry_storage("started") == (True, True)
    await wait_for(lambda: not alive(run.pid), within=3)
    await wait_for(lambda: any("protocol violation" in line["message"] for line in run.entry.logs.recent),
                   within=3)
    assert reported(outcome)["id"] == "m1"  # the hook resolved to `continue`
    await attack.aftermath()


async def test_hostile_unknown_verb_is_refused(attack: Attack) -> None:
    run = await attack.run("""
        async def attack(ctx, cfg):
            return await ctx._backend._server.call("host.exec", {"cmd": "id"})
    """)
    assert_refused(run.result, types=("CapabilityError",))
    assert "unknown capability verb" in run.result["error"]
    await attack.aftermath()


@pytest.mark.parametrize("verb,args,permission", [
    ("storage.get", {"key": "token"}, "storage:use"),
    ("messages.send_text", {"session_id": "s1", "chat_id": "c1", "text": "spam"}, "messages:send"),
    ("net.fetch", {"url": "http://127.0.0.1/"}, "net:fetch"),
    ("engine.get_contacts", {"session_id": "s1"}, "engine:read"),
])
async def test_hostile_forged_call_without_the_permission_is_refused(
    attack: Attack, verb: str, args: dict[str, str], permission: str
) -> None:
    """The SDK is bypassed: the call goes straight onto the bridge, from a plugin with NO permission
    (so it reports through its hook result, not storage)."""
    run, outcome = await attack.run_in_hook("""
        async def attack(ctx, cfg):
            return await ctx._backend._server.call(cfg["verb"], cfg["args"])
    """, {"verb": verb, "args": args}, permissions=[])
    result = reported(outcome)["outcome"]
    assert_refused(result, types=("CapabilityError",))
    assert permission in result["error"]
    assert attack.host.engine.sent == []
    attack.assert_no_leak(run)
    await attack.aftermath()


@pytest.mark.parametrize("args", [
    {"key": "token", "plugin_id": "victim"},
    {"key": "token", "namespace": "victim", "plugin": "victim"},
    {"key": "../victim/token"},
    {"key": "victim\x00token"},
    {"key": "victim/token"},
    {"key": "victim:token"},
])
async def test_hostile_forged_storage_args_cannot_reach_another_plugin(
    attack: Attack, canary: Canary, args: dict[str, str]
) -> None:
    run = await attack.run("""
        async def attack(ctx, cfg):
            return await ctx._backend._server.call("storage.get", cfg["args"])
    """, {"args": args})
    result = run.result
    assert result["ok"] is False or result["value"] in (None, [False, None]), result
    attack.assert_no_leak(run)
    assert attack.host.storage.get("victim", "token") == (True, canary.secret)  # untouched
    await attack.aftermath()


async def test_hostile_forged_call_to_a_session_out_of_scope_is_refused(attack: Attack) -> None:
    await attack.host.engine.create_session("other")
    run = await attack.run("""
        async def attack(ctx, cfg):
            return await ctx._backend._server.call(
                "messages.send_text", {"session_id": "other", "chat_id": "c1", "text": "spam"})
    """, permissions=["storage:use", "messages:send"], sessions=["s1"])
    assert_refused(run.result, types=("CapabilityError",))
    assert "other" in run.result["error"]
    assert attack.host.engine.sent == []
    await attack.aftermath()


PICKLE = """
        import pickle

        class Boom:
            def __reduce__(self):
                return (exec, ("open(" + repr(CFG["marker"]) + ", 'w').write('unpickled on the host')",))

        PAYLOAD = pickle.dumps(Boom())
"""


@pytest.mark.parametrize("how", ["bytes_value", "ext_type", "raw_frame", "log_field"])
async def test_hostile_pickle_payload_is_never_unpickled(attack: Attack, canary: Canary, how: str) -> None:
    """A pickle whose __reduce__ would create a file on the host, if the host ever unpickled it."""
    marker = canary.data_file.parent / "unpickled.txt"
    calls: list[tuple[str, str]] = []
    attack.host.router.on_call = lambda _plugin, verb, outcome: calls.append((verb, outcome))
    run = await attack.run(PICKLE + """
        async def attack(ctx, cfg):
            how = cfg["how"]
            if how == "bytes_value":   # plain bytes: stored as bytes, never interpreted
                await ctx.storage.set("payload", PAYLOAD)
                return "stored"
            if how == "ext_type":      # a msgpack extension type inside a well-formed call
                body = msgspec.msgpack.encode(["call", 9999, "storage.set",
                                               {"key": "p", "value": msgspec.msgpack.Ext(1, PAYLOAD)}])
            elif how == "raw_frame":   # the pickle itself as a frame
                body = PAYLOAD
            else:                      # in the fields of a log line
                body = msgspec.msgpack.encode(["log", "info", "x", {"f": msgspec.msgpack.Ext(42, PAYLOAD)}])
            raw_send(ctx, frame(body))
            return "sent"
    """, {"how": how, "marker": str(marker)})
    assert run.result["ok"] is True
    await attack.host.dispatch("session:ready", {}, SESSION)  # let the host read what was sent
    assert not marker.exists(), "the host unpickled a plugin's payload"
    if how == "bytes_value":
        found, stored = attack.host.storage.get("hostile", "payload")
        assert found and isinstance(stored, bytes) and stored.startswith(b"\x80")
    elif how == "raw_frame":
        await wait_for(lambda: run.entry.runtime.channel_stats().bad_frames >= 1, within=3)
    elif how == "ext_type":  # the frame decodes (its value travels encoded); decoding the value refuses it
        await wait_for(lambda: ("storage.set", "error") in calls, within=3)
        assert attack.host.storage.get("hostile", "p") == (False, None)
    else:  # the line is relayed; its fields, refused when decoded, are replaced by a note
        await wait_for(lambda: any("<undecodable: not shown>" in line["message"] for line in run.entry.logs.recent),
                       within=3)
    assert alive(run.pid)
    await attack.aftermath()


@pytest.mark.parametrize("shape", ["list", "dict"])
async def test_hostile_deep_nesting_on_the_wire_is_dropped(attack: Attack, shape: str) -> None:
    """10000 levels of nesting, hand-encoded (the SDK would refuse to send it)."""
    run = await attack.run("""
        def attack(ctx, cfg):
            depth = 10_000
            if cfg["shape"] == "list":
                nested = b"\\x91" * depth + b"\\xc0"             # fixarray(1) ... nil
            else:
                nested = b"\\x81\\xa1k" * depth + b"\\xc0"       # fixmap(1) {"k": ...} ... nil
            body = b"\\x94" + msgspec.msgpack.encode("call") + msgspec.msgpack.encode(7777) \\
                + msgspec.msgpack.encode("storage.set") + nested
            raw_send(ctx, frame(body))
            return len(body)
    """, {"shape": shape})
    assert run.result["ok"] is True
    await wait_for(lambda: run.entry.runtime.channel_stats().bad_frames >= 1, within=3)
    assert alive(run.pid) and run.entry.status == Status.ENABLED
    await attack.aftermath()


async def test_hostile_deep_nesting_through_the_sdk_is_refused_at_the_sender(attack: Attack) -> None:
    run = await attack.run("""
        async def attack(ctx, cfg):
            value = None
            for _ in range(10_000):
                value = [value]
            await ctx.storage.set("deep", value)
            return "stored"
    """)
    assert_refused(run.result, types=("CapabilityError", "PlainDataError", "RecursionError"))
    assert attack.host.storage.get("hostile", "deep") == (False, None)
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"storage_quota_bytes": 4 << 20}])
@pytest.mark.parametrize("verb", ["storage.set", "messages.send_text", "storage.get"])
async def test_hostile_huge_argument_is_refused_cleanly(attack: Attack, verb: str) -> None:
    """A 15 MiB string: under the frame cap, over what each verb accepts (a 512-char key, a message
    text, here a 4 MiB storage quota)."""
    run = await attack.run("""
        async def attack(ctx, cfg):
            huge = "h" * (15 << 20)
            args = {"storage.set": {"key": "huge", "value": huge},
                    "storage.get": {"key": huge},
                    "messages.send_text": {"session_id": "s1", "chat_id": "c1", "text": huge}}[cfg["verb"]]
            return await ctx._backend._server.call(cfg["verb"], args)
    """, {"verb": verb}, permissions=["storage:use", "messages:send"])
    assert_refused(run.result, types=("CapabilityError",))
    assert attack.host.storage.get("hostile", "huge") == (False, None)
    assert attack.host.engine.sent == []
    assert alive(run.pid)
    await attack.aftermath()


async def test_hostile_spoofed_results_for_requests_it_does_not_own_are_dropped(attack: Attack) -> None:
    """Results for ids the host never sent (or has not sent yet), and a second hello, are dropped;
    the next genuine request is answered by the plugin, not by the forgery."""
    run = await attack.run("""
        def attack(ctx, cfg):
            frames = b""
            # 1 and 2 (load, on_load) are answered already; the on_enable running now is the
            # worker's own to answer; the rest were never sent.
            for rid in [1, 2] + list(range(10_000, 10_064)) + [2**31, 2**63 - 1]:
                frames += frame(msgspec.msgpack.encode(["res", rid, True, {"continue": False,
                                                                             "data": {"forged": True}}, None]))
            frames += frame(msgspec.msgpack.encode(["hello", 1, 1, [], None]))
            frames += frame(msgspec.msgpack.encode(["pong", 123456]))
            raw_send(ctx, frames)
            return "spoofed"
    """)
    assert run.result["ok"] is True
    await attack.host.dispatch("session:ready", {}, SESSION)
    runtime = run.entry.runtime
    await wait_for(lambda: (stats := runtime.channel_stats()).late_replies >= 60 and stats.bad_frames >= 1, within=3)
    outcome = await attack.fire("m9")
    assert not outcome.stopped and reported(outcome).get("forged") is None
    assert reported(outcome)["outcome"]["ok"] is True  # the real handler answered
    assert alive(run.pid)
    await attack.aftermath()


async def test_hostile_forged_registrations_are_checked_by_the_host(attack: Attack) -> None:
    """Registering a webhook route it did not declare, a search provider without the permission,
    and an unknown registration kind — straight on the wire."""
    run = await attack.run("""
        def attack(ctx, cfg):
            raw_send(ctx, frame(msgspec.msgpack.encode(["reg", "webhook", "stolen-route", 0, 100]))
                     + frame(msgspec.msgpack.encode(["reg", "search", "", 0, 100]))
                     + frame(msgspec.msgpack.encode(["reg", "root-shell", "x", 0, 100]))
                     + frame(msgspec.msgpack.encode(["reg", "hook", "message:received", 99999, 100])))
            return "sent"
    """)
    assert run.result["ok"] is True
    runtime = run.entry.runtime
    await attack.host.dispatch("session:ready", {}, SESSION)  # let the host read what was sent
    # The unknown kind does not even decode (it is dropped and counted); it came last in the batch.
    await wait_for(lambda: runtime.channel_stats().bad_frames >= 1, within=3)
    assert not runtime.has_webhook("stolen-route") and runtime.has_search is False
    assert any("registration refused" in line["message"] for line in run.entry.logs.recent)
    # The hook naming a handler that does not exist is answered as an error, not a crash.
    outcome = await attack.host.dispatch("message:received", {"id": "m3", "chatId": "c3"}, SESSION)
    assert not outcome.timed_out
    assert alive(run.pid)
    await attack.aftermath()


REENTER = "import os\n" + HELPERS + """
import asyncio
from plugbox.sdk import Plugin


class Reenter(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:sending", self.on_sending)

    async def on_sending(self, hook):
        runs = await self.ctx.storage.get("runs", 0)
        await self.ctx.storage.set("runs", runs + 1)
        if runs >= 32:
            return  # enough to see a broken guard, short of an endless loop
        chat = hook.data["input"]["chatId"]
        send = {"session_id": hook.session_id, "chat_id": chat}
        # A version-1 call claiming to serve another event: no such field on the wire any more.
        raw_send(self.ctx, frame(msgspec.msgpack.encode(
            ["call", 990001, "messages.send_text", {**send, "text": "forged"}, "message:received"])))
        # A call that claims nothing at all, straight on the wire ...
        raw_send(self.ctx, frame(msgspec.msgpack.encode(
            ["call", 990002, "messages.send_text", {**send, "text": "raw"}])))
        # ... and a send from a task of the plugin's own, outside the handler.
        await asyncio.ensure_future(self.ctx.messages.send_text(hook.session_id, chat, "task"))
        await asyncio.sleep(0.2)  # the raw call is served while this handler is still in flight
"""


async def test_hostile_forged_or_omitted_origin_cannot_re_enter_its_own_handler(attack: Attack) -> None:
    """The host decides which hooks a worker's call serves from the hook requests it has in flight
    to that worker. A forged origin (the version-1 `origin` field) no longer decodes; a call with
    no origin, or from a task of the plugin's own, still does not reach the handler it came from."""
    entry = await enable(attack.host, attack.write_plugin(REENTER, id="reenter",
                                                          permissions=["messages:send", "storage:use"]))
    assert entry.status == Status.ENABLED, entry.error
    pid = entry.runtime.proc.pid  # type: ignore[union-attr]
    await attack.host.messages.send_text(SESSION, "15550001111@c.us", "outer")
    await attack.host.bus.settled()  # it observes, beside the chain: its calls are served while it is in flight
    assert attack.host.storage.get("reenter", "runs") == (True, 1)  # the handler ran once: no re-entry
    sent = sorted(m["body"] for m in attack.host.engine.sent)
    assert sent == ["outer", "raw", "task"]  # the attack ran; the forged call was dropped, not served
    assert entry.runtime.channel_stats().bad_frames >= 1  # type: ignore[union-attr]
    assert alive(pid) and entry.status == Status.ENABLED
    await attack.aftermath()


async def test_a_capability_argument_over_the_frame_cap_is_a_clear_error_and_the_worker_lives(
    attack: Attack,
) -> None:
    """17 MiB of arguments, over the 16 MiB frame cap: the worker refuses to write the frame (the
    host would end the channel on it), the plugin gets CapabilityError naming the cap, and the same
    worker goes on to make an ordinary call."""
    run = await attack.run("""
        async def attack(ctx, cfg):
            from plugbox.sdk import CapabilityError
            try:
                await ctx.storage.set("huge", "h" * (17 << 20))
            except CapabilityError as exc:
                await ctx.storage.set("after", "still serving")
                return str(exc)
            return "no error"
    """)
    message = run.result["value"]
    assert message.startswith("storage.set: the arguments are ")
    assert f"over the bridge's frame cap of {16 << 20} bytes (frame_max_bytes)" in message
    assert run.entry_storage("after") == (True, "still serving")
    assert run.entry_storage("huge") == (False, None)
    assert alive(run.pid) and run.entry.runtime is not None and run.entry.runtime.proc.pid == run.pid
    assert run.entry.runtime.channel_stats().bad_frames == 0  # nothing oversize reached the host
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"frame_max_bytes": 1 << 20}])
async def test_a_hook_result_over_the_frame_cap_is_the_handlers_error_not_a_dead_worker(attack: Attack) -> None:
    run, outcome = await attack.run_in_hook("""
        async def attack(ctx, cfg):
            return "r" * (2 << 20)
    """)
    assert run.entry_storage("started") == (True, True)  # the attack ran; its answer is what cannot cross
    [(plugin, error)] = outcome.errors
    assert plugin == "hostile" and f"over the bridge's frame cap of {1 << 20} bytes" in error
    assert alive(run.pid) and run.entry.status == Status.ENABLED
    await attack.aftermath()
