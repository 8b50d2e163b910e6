"""Hostile plugins against the one relay for everything a plugin makes the host print or return
(SPEC §6): log lines that would forge host log entries or colour a terminal, handler errors with a
secret and megabytes of text, a 15 MB `on_enable` error returned by every `GET /api/plugins`, a log
frame with a million `fields`. Each test proves the plugin's text reached the host (it ran), that
the host log and the API hold only the sanitised form, and that the plugin's own rate limit was
charged — never a neighbour's.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from typing import Any

import httpx
import pytest

from plugbox.errors import PluginStateError
from plugbox.host import Host
from plugbox.lifecycle.entry import PluginEntry
from plugbox.lifecycle.status import Status
from plugbox.logrelay import REDACTED, TRUNCATED

from .conftest import SESSION, Attack, WritePlugin, enable, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(90)]

SECRET = "sk-live-5b8f2a9c7d3e1f60"
SCHEMA = {"type": "object", "properties": {"apiToken": {"type": "string", "secret": True}}}
FORGED = "\n2026-11-30 12:00:00 CRITICAL plugbox.host: admin key rotated\x1b[2J\x1b[31m\r\u202egnp.exe\x85"
CAP = 8192


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_api_keys": ("admin",), "log_lines_per_window": 3, "log_window_ms": 60_000}


def host_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the host log got: every record as its handler would format the message."""
    return [record.getMessage() for record in caplog.records if record.name.startswith("plugbox")]


def assert_clean(text: str) -> None:
    """No control character that starts a new log line, moves the cursor or reorders text."""
    for char in ("\n", "\r", "\x1b", "\u202e", "\x85"):
        assert char not in text, f"{char!r} reached the host: {text[:200]!r}"
    assert SECRET not in text


async def hostile(host: Host, write_plugin: WritePlugin, code: str, *, id: str = "hostile") -> PluginEntry:
    host.load_plugin(write_plugin(code, id=id, permissions=[], configSchema=SCHEMA))
    await host.set_config(id, {"apiToken": SECRET})
    await host.set_active_sessions(id, [SESSION])
    with contextlib.suppress(PluginStateError):  # a failed enable is one of the attacks
        await host.enable(id)
    return host.manager.get(id)  # white-box: the tests read its relay


async def test_hostile_log_line_cannot_forge_a_host_log_entry_or_colour_the_terminal(
    host: Host, write_plugin: WritePlugin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plugbox")
    entry = await hostile(host, write_plugin, f"""
        from plugbox.sdk import Plugin
        class P(Plugin):
            def on_enable(self, ctx):
                ctx.logger.warning("hello" + {FORGED!r}, note="x" + {FORGED!r})
    """)
    assert entry.status == Status.ENABLED, entry.error
    await wait_for(lambda: any("hello" in line["message"] for line in entry.logs.recent), within=5)
    relayed = [line for line in host_lines(caplog) if "hello" in line]
    assert len(relayed) == 1  # it ran, and it is one line
    assert_clean(relayed[0])
    assert "hello\\n2026-11-30 12:00:00 CRITICAL" in relayed[0]  # shown, escaped, on the plugin's line
    assert "\\x1b[2J" in relayed[0] and "\\u202e" in relayed[0]
    assert relayed[0].startswith("[hostile] ")


# The handler-error breaker (5 in a row by default) would add its own line on the 5th message: this
# test counts the relay's lines, so the breaker is set out of the way.
@pytest.mark.parametrize("settings_overrides", [{"admin_api_keys": ("admin",), "log_lines_per_window": 3,
                                                 "log_window_ms": 60_000, "handler_error_threshold": 10}])
async def test_five_messages_whose_handler_error_is_megabytes_with_a_secret(
    host: Host, write_plugin: WritePlugin, caplog: pytest.LogCaptureFixture, attack: Attack,
    client: httpx.AsyncClient,
) -> None:
    """Before the relay: each error went whole to the host logger (5 messages, +105 MB of host log,
    the secret in clear). Now each is one capped, redacted line, charged to the plugin's limit."""
    caplog.set_level(logging.INFO, logger="plugbox")
    entry = await hostile(host, write_plugin, """
        from plugbox.sdk import Plugin
        class P(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("message:received", self.on_message)
            def on_message(self, hook):
                raise RuntimeError("leak " + self.ctx.config["apiToken"] + "\\nFORGED" + "A" * (12 << 20))
    """)
    neighbour = await enable(host, write_plugin("""
        from plugbox.sdk import Plugin
        class N(Plugin):
            def on_enable(self, ctx):
                ctx.logger.info("neighbour up")
    """, id="neighbour", permissions=[]))
    await wait_for(lambda: any("neighbour up" in line["message"] for line in neighbour.logs.recent), within=5)
    before = sum(len(line) for line in host_lines(caplog))
    outcomes = [await host.dispatch("message:received", {"id": f"m{i}", "chatId": "c", "body": "x"}, SESSION)
                for i in range(5)]
    grown = sum(len(line) for line in host_lines(caplog)) - before
    assert all(o.errors and o.errors[0][0] == "hostile" for o in outcomes)  # the attack ran, 5 times
    assert grown < 3 * (CAP + 200), f"host log grew by {grown} chars"
    for line in host_lines(caplog):
        assert_clean(line)
    assert any(f"leak {REDACTED}\\nFORGED" in line for line in host_lines(caplog))
    for _pid, error in (e for o in outcomes for e in o.errors):
        assert SECRET not in error and len(error) <= CAP + len(TRUNCATED)
    # 3 lines a window: the first 3 errors were printed, the other 2 charged to the attacker.
    assert entry.logs.dropped == 2
    assert neighbour.logs.dropped == 0
    metrics = (await client.get("/metrics", headers={"X-API-Key": "admin"})).text
    assert 'plugbox_plugin_log_lines_dropped_total{plugin="hostile"} 2.0' in metrics
    assert 'plugbox_plugin_log_lines_dropped_total{plugin="neighbour"} 0.0' in metrics
    await attack.aftermath()


async def test_a_15_mb_enable_error_is_capped_and_redacted_in_every_api_answer(
    host: Host, write_plugin: WritePlugin, client: httpx.AsyncClient
) -> None:
    entry = await hostile(host, write_plugin, """
        from plugbox.sdk import Plugin
        class P(Plugin):
            def on_enable(self, ctx):
                raise RuntimeError("token=" + ctx.config["apiToken"] + "\\x1b[31m" + "E" * (15 << 20))
    """)
    assert entry.status == Status.ERROR
    assert entry.error is not None and "token=[redacted]\\x1b[31mEEE" in entry.error  # it ran, and was kept
    assert len(entry.error) <= CAP + len(TRUNCATED)
    listing = await client.get("/api/plugins", headers={"X-API-Key": "admin"})
    detail = await client.get("/api/plugins/hostile", headers={"X-API-Key": "admin"})
    assert listing.status_code == detail.status_code == 200
    assert len(listing.content) < 4 * CAP and len(detail.content) < 16 * CAP
    last = detail.json()["lastError"]
    assert last["message"] == entry.error and last["class"] == "enable_failed"
    for body in (listing.text, detail.text):
        assert SECRET not in body and "\\u001b" not in body  # JSON would show a raw ESC as \u001b


async def test_a_million_log_fields_cost_one_capped_line(host: Host, write_plugin: WritePlugin) -> None:
    entry = await hostile(host, write_plugin, """
        from plugbox.sdk import Plugin
        class P(Plugin):
            def on_enable(self, ctx):
                ctx.logger.info("fields", **{f"k{i}": i for i in range(1_000_000)})
                ctx.logger.info("deep", nest=[[[[[[[[["x" * 10_000]]]]]]]]], token=ctx.config["apiToken"])
    """)
    assert entry.status == Status.ENABLED, entry.error
    await wait_for(lambda: len(entry.logs.recent) >= 2, within=30)
    lines = {line["message"].split(" ", 1)[0]: line["message"] for line in entry.logs.recent}
    # ~12 MB of fields on the wire: past log_fields_max_bytes they are not even decoded
    assert re.fullmatch(r"fields fields='<\d+ bytes, over the 65536-byte cap: not shown>'", lines["fields"])
    # fields under that cap are walked under the relay's caps: depth, then the line's length
    assert "[[[[…]" in lines["deep"] and f"token='{REDACTED}'" in lines["deep"]
    assert all(len(m) <= CAP + len(TRUNCATED) for m in lines.values())
    started = time.monotonic()  # the host loop was not held by it
    await host.dispatch("session:ready", {}, SESSION)
    assert time.monotonic() - started < 1


async def test_health_message_is_capped_and_redacted(host: Host, write_plugin: WritePlugin) -> None:
    await hostile(host, write_plugin, """
        from plugbox.sdk import Plugin
        class P(Plugin):
            def health_check(self):
                return {"healthy": True, "message": self.ctx.config["apiToken"] + "\\n" + "H" * 100_000}
    """)
    health = await host.health("hostile")
    assert health["healthy"] is True
    assert health["message"].startswith(f"{REDACTED}\\nHHH")
    assert len(health["message"]) <= 1024 + len(TRUNCATED)
