"""Amplification through payload size, net.fetch (issue 12): what a response body costs the host.

A plugin with `net:fetch` names the server, so it chooses how big each body is (up to
`fetch_body_max_bytes`). The host reads the body, hands it to the worker, and holds it meanwhile;
several plugins each at their fetch share multiply what it holds. These tests run real confined
fetchers against a local server the operator exempts, measure the host's peak RSS, probe a victim
plugin during the attack, and check who was charged.
"""

from __future__ import annotations

import asyncio
import http.server
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from plugbox.lifecycle import Status

from .conftest import Attack, enable, reported
from .test_neighbours_storage import FETCH_VICTIM, _fire

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

RSS_GROWTH_LIMIT_KB = 150 << 10  # the acceptance: host RSS growth <= 150 MB


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS, so the peak measures what follows


class BigServer:
    """Answers /small with two bytes, anything else with a body of `size` bytes (text/plain), and
    counts them. It runs on threads of its own, so that serving the bodies does not take the host's
    event loop, whose time to serve the victim is what the test measures."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.served = 0
        body = b"x" * size
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                small = self.path == "/small"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2" if small else str(size))
                self.end_headers()
                try:
                    self.wfile.write(b"ok" if small else body)
                except ConnectionError:
                    return  # a fetch cut short (its plugin disabled at the end of the test)
                outer.served += not small

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def big_server() -> Iterator[BigServer]:
    server = BigServer(10 << 20)
    yield server
    server.close()


BODY_FLOOD = """
from plugbox.sdk import CapabilityError

async def attack(ctx, cfg):
    url = f"http://localhost:{cfg['port']}/big"
    counts = {"ok": 0, "refused": 0, "errors": []}
    deadline = asyncio.get_running_loop().time() + cfg["seconds"]

    async def one():
        while asyncio.get_running_loop().time() < deadline:
            try:
                response = await ctx.net.fetch(url, timeout_ms=20000)
                counts["ok"] += len(response["body"]) > 0
            except CapabilityError as exc:
                counts["refused"] += 1
                if len(counts["errors"]) < 2:
                    counts["errors"].append(str(exc)[:300])
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(cfg["fetches"])))
    return counts
"""


@pytest.mark.parametrize("settings_overrides", [{"fetch_exempt_hosts": ("localhost",), "hook_budget_ms": 30000}])
async def test_many_fetchers_of_large_bodies_keep_the_host_within_its_memory(
        attack: Attack, big_server: BigServer) -> None:
    """Four plugins, each at its share of four fetches, fetching 10 MiB bodies for 4 s: the host
    held every body two or three times over (+364 MiB peak). Each body now reserves its bytes from
    the plugin's share and the host's pool before it is read: the attackers wait behind their own
    reservations, a neighbour's small fetch still goes through at once."""
    host = attack.host
    net = {"allow": ["localhost"]}
    victim = await enable(host, attack.write_plugin(FETCH_VICTIM, id="fetcher",
                                                    permissions=["net:fetch", "hooks:modify"], net=net))
    assert victim.status == Status.ENABLED, victim.error
    small = {"id": "m1", "url": f"http://localhost:{big_server.port}/small"}
    baseline = await _victim_p50(attack, small)
    attackers = [f"hostile{n}" for n in range(4)]
    for plugin_id in attackers:
        entry = await enable(host, attack.plugin(BODY_FLOOD, {"port": big_server.port, "seconds": 4, "fetches": 4},
                                                 id=plugin_id, in_enable=False,
                                                 permissions=["storage:use", "net:fetch"], net=net))
        assert entry.status == Status.ENABLED, entry.error
    bodies = host.fetch.bodies
    seen = {"host": 0, "plugin": 0}

    async def sample() -> None:
        while True:
            seen["host"] = max(seen["host"], bodies.reserved)
            seen["plugin"] = max(seen["plugin"], *(bodies.reserved_by(p) for p in attackers))
            await asyncio.sleep(0.002)

    _reset_peak_rss()
    before = _kb("VmRSS")
    sampler = asyncio.ensure_future(sample())
    flood = asyncio.gather(*(_fire(attack, p, {"id": "m1"}) for p in attackers))
    await asyncio.sleep(0.5)  # the flood is under way
    during = await _victim_p50(attack, small)
    outcomes = await flood
    sampler.cancel()
    peak_kb = _kb("VmHWM") - before
    # It ran: every attacker fetched 10 MiB bodies the whole time, none refused.
    for outcome in outcomes:
        result = reported(outcome)["outcome"]
        assert result["ran"] is True and result["ok"] is True, result
        assert result["value"]["ok"] >= 4 and result["value"]["refused"] == 0, result
    assert big_server.served >= 40
    # It failed: the host held at most its pool of bodies, each attacker at most its share.
    pool = host.settings.fetch_body_bytes_in_flight
    assert pool - big_server.size < seen["host"] <= pool  # full, and never past it
    assert seen["plugin"] <= host.settings.fetch_body_bytes_per_plugin
    assert peak_kb < RSS_GROWTH_LIMIT_KB, f"host peak RSS grew {peak_kb >> 10} MiB"
    # The neighbour kept its service, and the attackers paid in their own waiting.
    assert during <= max(3 * baseline, 0.050), f"victim p50 {baseline * 1000:.1f} -> {during * 1000:.1f} ms"
    assert victim.status == Status.ENABLED and victim.record.consecutive_failures == 0
    assert bodies.reserved == 0
    for plugin_id in attackers:  # (their handler would flood again on the aftermath's own event)
        await host.disable(plugin_id)
    await attack.aftermath()


async def _victim_p50(attack: Attack, value: dict[str, Any], probes: int = 9) -> float:
    times = []
    for _ in range(probes):
        started = time.perf_counter()
        outcome = await _fire(attack, "fetcher", value)
        assert reported(outcome).get("status") == 200 and not outcome.errors, outcome
        times.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return statistics.median(times)
