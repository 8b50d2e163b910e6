"""Audit s7: on hosts sharing a PostgreSQL database, what one plugin's handover writes make the
OTHER hosts spend.

Every `handover.set` announces its plugin (topic `handover`), and every other host re-reads that
plugin's chats held in `human` (`ConversationStore.follow(plugin)`), on its listener thread, charged to
nobody. Re-reading should cost what that plugin holds. It cost what ALL plugins hold: `_release_all`
walked every chat any plugin held in `human` (up to `handover_human_chats_total`, 200,000 by default)
for each announcement, so a plugin holding nothing, writing `handover.set(ref, "bot")` as fast as its
write budget lets it (a 4 KiB page each: ~1,000 a second), made every other host walk every neighbour's
chats a thousand times a second.

Two real hosts on one throwaway PostgreSQL database. The attacker's calls go through the store the
`handover.set` verb calls (what it costs on the OTHER host does not depend on how the call got there).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from plugbox.host import Host
from plugbox.settings import load_settings

pytestmark = [pytest.mark.timeout(180)]

VICTIMS = 5
CHATS_EACH = 10_000  # handover_human_chats_per_plugin, the default
WRITES = 60


async def _within(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.02)


async def _flood(a: Host, b: Host, costs: list[float], round_: int) -> float:
    """WRITES handover writes of a plugin that holds nothing, on host a; the median CPU host b's
    listener spent on each announcement."""
    costs.clear()
    for i in range(WRITES):
        await a.conversations.set_handover("hostile", f"r{round_}-{i}", "bot")
    await _within(lambda: len(costs) >= WRITES, 30.0)
    return statistics.median(costs)


async def test_a_handover_write_costs_other_hosts_what_its_plugin_holds_not_what_all_hold(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    url = make_postgres_url()
    a, b = (Host(load_settings(environ={}, data_dir=str(tmp_path / name), database_url=url), bundled=False)
            for name in ("a", "b"))
    try:
        await a.start()
        await b.start()
        costs: list[float] = []
        follow = b.conversations.follow

        def timed(plugin_id: str | None) -> None:
            started = time.thread_time()
            follow(plugin_id)
            if plugin_id == "hostile":
                costs.append(time.thread_time() - started)

        b.conversations.follow = timed  # type: ignore[method-assign]

        alone = await _flood(a, b, costs, 0)

        # Neighbours hold their chats in `human`, each within its own bound, as a busy helpdesk would.
        # (Written straight to the table: through the verb it takes each plugin ~10 s of its write budget.)
        rows = [(f"victim{v}", f"ref{n}", "human", 0.0, "default", f"1555{v}{n:07d}@c.us")
                for v in range(VICTIMS) for n in range(CHATS_EACH)]
        with psycopg.connect(url) as conn:
            conn.cursor().executemany("INSERT INTO conversation_handover (plugin_id, ref, state, updated_at, "
                                      "session_id, chat_id) VALUES (%s, %s, %s, %s, %s, %s)", rows)
        b.conversations.follow(None)
        assert b.conversations.human_owners("default", "15550" + "0" * 7 + "@c.us") == {"victim0"}

        crowded = await _flood(a, b, costs, 1)
        print(f"host b's CPU per announcement of a plugin holding nothing: {alone * 1000:.2f} ms alone, "
              f"{crowded * 1000:.2f} ms with {VICTIMS * CHATS_EACH} chats held by others "
              f"(at the ~1,000 writes/s its write budget allows: {crowded * 1000:.2f} CPU-s a second)")
        assert crowded <= 3 * alone + 0.001, (
            f"each announcement cost host b {crowded * 1000:.1f} ms with neighbours' chats held, "
            f"{alone * 1000:.2f} ms without")
    finally:  # before the database is dropped
        await a.stop()
        await b.stop()
