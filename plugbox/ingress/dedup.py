"""The `dedupOn` keys the host remembers (table `ingress_dedup`) and the two bounds on them: each
plugin's own `ingress_dedup_keys_per_plugin`, and the host-wide `ingress_dedup_keys_total` shared by
every plugin on the database. SQL only, run inside the caller's write transaction (`IngressStore`
owns the transactions); no HTTP, no plugins.

Counting. `ingress_dedup_counts` holds the keys of each plugin holding any (a row per plugin, none
at zero), changed by every statement here that adds or removes a key (claim, the expired key a claim
replaces, release, the per-plugin trim, the host-wide eviction, the sweep of expired keys, an
uninstalled plugin's drop), in the same transaction, by the rows the statement really changed
(`rowcount`, or the plugin ids a DELETE returns). So the bounds read a row, or a sum over a row per
plugin, never a count over the keys themselves. Migration 0009 filled the table from the keys an
older database held.

Expired keys. A key whose window ended is gone for `claim` at once (the same key is free again),
but its row stays, and counts, until something deletes it: the same key coming back, the trim or
eviction (expired keys go first), or the host's sweep (`sweep`, run by `IngressQueue` every
`ingress_dedup_sweep_interval_ms`, one task per host for every plugin). The sweep forgets the
earliest expired keys of the whole table (index `ingress_dedup_expiry`, migration 0010), at most a
batch per transaction, so a large backlog never holds the writer long: other plugins' writes take
their turns between two batches.

The two bounds, after each key that is added:

- its plugin holds more than `per_plugin`: that plugin's oldest keys (earliest expiry first, so
  expired ones go first) are forgotten until it holds `per_plugin` (reason `plugin`).
- the host holds more than `total`: each plugin holding keys has a *share* S = min(per_plugin,
  total // N), N the plugins holding keys. The plugin furthest over S (the one holding the most:
  every share is the same; on a tie the plugin that just added, then the smallest id) loses its
  oldest keys, down to S at most, until the host is back within the total (reason `total`). As N x
  S <= total, a host past its total has someone over S, and a plugin within S never loses a key to
  its neighbours: whoever floods the memory pays for it. Keys can be evicted, unlike stored data
  (`plugbox.storage.quota`), so this bound is strict: on one host the count never passes the total
  at a commit.

Several hosts on one PostgreSQL database: the writes of one plugin are serialised across hosts (the
per-owner advisory lock), so `per_plugin` is exact. The total is read as committed plus this
transaction's own change; each host has one writer, so H hosts adding keys at the same instant may
each see the total as just reached and together commit up to H - 1 keys past it, which the next
key added on any host evicts (the eviction takes the whole excess). No host-wide lock: every key
added would otherwise wait for every other host's. An eviction deletes another plugin's keys
without holding that plugin's owner lock; the counts are still exact (a key deleted twice at once
is counted by the one delete that removed it). Two evictions could wait on each other only if each
host saw the other's plugin as the larger one, which the tie rule (the adder wins a tie, and another
plugin is chosen only when it holds strictly more) rules out for plugins both hosts read alike;
should PostgreSQL still find a deadlock it aborts one of the two, whose request then fails as any
write failure does (503: the sender retries).

The sweep holds no plugin's owner lock either (it is the host's write, for every plugin), and never
waits for a row: it first locks the count rows of the plugins it is about to sweep, skipping those
another transaction holds (`Database.skip_locked`: a claim of that plugin in flight; its keys wait
for the next batch or sweep), then deletes only their expired keys, again skipping any row another
transaction holds, and subtracts from each count the keys its DELETE returned. A claim takes its own
keys, then its count, then (trim) its oldest keys: had the sweep locked keys before the count, each
could wait for the other. Two hosts sweeping at once, or a sweep beside a claim replacing the same
expired key, count exactly: a key deleted by one is not returned to the other.
"""

from __future__ import annotations

import msgspec

from plugbox.storage.db import Connection
from plugbox.totals import share

__all__ = ["PLUGIN", "TOTAL", "DedupKey", "DedupKeys", "Evictions"]

PLUGIN, TOTAL = "plugin", "total"  # why keys were evicted: the plugin's own bound, or the host's total

Evictions = dict[tuple[str, str], int]
"""(plugin id, reason) -> keys evicted, gathered in one transaction and kept once it committed."""

_MATCH = "plugin_id = ? AND instance_id = ? AND route = ? AND key = ?"
_ADD = ("INSERT INTO ingress_dedup_counts (plugin_id, keys) VALUES (?, ?) ON CONFLICT (plugin_id) "
        "DO UPDATE SET keys = ingress_dedup_counts.keys + excluded.keys RETURNING keys")


class DedupKey(msgspec.Struct, frozen=True):
    instance_id: str
    route: str
    key: str  # a digest of the dedupOn value: bounded, and never the sender's text
    window_s: float


class DedupKeys:
    """The keys and their bounds (see the module docstring); `total` None: no host-wide bound."""

    def __init__(self, *, per_plugin: int, total: int | None = None) -> None:
        self.per_plugin = per_plugin
        self.total = total
        self.evicted: Evictions = {}  # since this host started, for metrics

    def claim(self, c: Connection, plugin_id: str, dedup: DedupKey, delivery_id: str | None, now: float,
              evicted: Evictions) -> str | None:
        """Record the key; None if it was free (then the bounds are kept, evictions noted in
        `evicted`), else the delivery id it was first seen with ("" for none)."""
        key = (plugin_id, dedup.instance_id, dedup.route, dedup.key)
        expired = c.execute(f"DELETE FROM ingress_dedup WHERE {_MATCH} AND expires_at <= ?", (*key, now)).rowcount
        added = c.execute(
            "INSERT INTO ingress_dedup (plugin_id, instance_id, route, key, delivery_id, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (*key, delivery_id, now + dedup.window_s)).rowcount
        if added == 1:
            if expired != 1:  # a key replacing its own expired self changes no count
                self._grown(c, plugin_id, evicted)
            return None
        if expired:  # not reached (one plugin's writes are serialised), but a count must never drift
            _add(c, plugin_id, -expired)
        row = c.execute(f"SELECT delivery_id FROM ingress_dedup WHERE {_MATCH}", key).fetchone()
        return "" if row is None or row[0] is None else str(row[0])

    def release(self, c: Connection, plugin_id: str, dedup: DedupKey) -> None:
        """Forget one key (its request failed: the sender's retry must get through)."""
        gone = c.execute(f"DELETE FROM ingress_dedup WHERE {_MATCH}",
                         (plugin_id, dedup.instance_id, dedup.route, dedup.key)).rowcount
        if gone:
            _add(c, plugin_id, -gone)

    def sweep(self, c: Connection, now: float, limit: int, skip_locked: str) -> int:
        """Forget up to `limit` keys expired at `now`, earliest first, whichever plugins hold them;
        returns how many went (fewer than `limit`: none is left, or the rest were busy). `skip_locked`
        is the database's (`Database.skip_locked`): this never waits for a row (module docstring)."""
        due = [str(p) for (p,) in c.execute(
            "SELECT DISTINCT plugin_id FROM (SELECT plugin_id FROM ingress_dedup WHERE expires_at <= ? "
            "ORDER BY expires_at LIMIT ?) AS due", (now, limit)).fetchall()]
        if not due:
            return 0
        marks = ",".join("?" * len(due))
        # Each plugin's count first, so nothing here waits while holding keys (see the module docstring).
        counted = [str(p) for (p,) in c.execute(
            f"SELECT plugin_id FROM ingress_dedup_counts WHERE plugin_id IN ({marks}) ORDER BY plugin_id "
            f"{skip_locked}", due).fetchall()]
        if not counted:
            return 0
        marks = ",".join("?" * len(counted))
        gone: dict[str, int] = {}
        for (plugin_id,) in c.execute(
                "DELETE FROM ingress_dedup WHERE (plugin_id, instance_id, route, key) IN (SELECT plugin_id, "
                f"instance_id, route, key FROM ingress_dedup WHERE plugin_id IN ({marks}) AND expires_at <= ? "
                f"ORDER BY expires_at LIMIT ? {skip_locked}) RETURNING plugin_id", (*counted, now, limit)).fetchall():
            gone[str(plugin_id)] = gone.get(str(plugin_id), 0) + 1
        for plugin_id in sorted(gone):
            _add(c, plugin_id, -gone[plugin_id])
        return sum(gone.values())

    def drop(self, c: Connection, plugin_id: str) -> None:
        """Forget every key of an uninstalled plugin."""
        c.execute("DELETE FROM ingress_dedup WHERE plugin_id = ?", (plugin_id,))
        c.execute("DELETE FROM ingress_dedup_counts WHERE plugin_id = ?", (plugin_id,))

    def held(self, c: Connection) -> dict[str, int]:
        """Keys each plugin holding any holds (expired ones not yet swept included)."""
        rows = c.execute("SELECT plugin_id, keys FROM ingress_dedup_counts WHERE keys > 0").fetchall()
        return {str(p): int(n) for p, n in rows}

    def note(self, evicted: Evictions) -> None:
        """Keep the evictions of a committed transaction."""
        for what, n in evicted.items():
            self.evicted[what] = self.evicted.get(what, 0) + n

    # -- the bounds --
    def _grown(self, c: Connection, plugin_id: str, evicted: Evictions) -> None:
        """One key was added for `plugin_id`: count it, then keep both bounds."""
        (keys,) = c.execute(_ADD, (plugin_id, 1)).fetchone()
        if int(keys) > self.per_plugin:
            _forget_oldest(c, plugin_id, int(keys) - self.per_plugin, PLUGIN, evicted)
        if self.total is not None:
            self._within_total(c, plugin_id, self.total, evicted)

    def _within_total(self, c: Connection, adder: str, total: int, evicted: Evictions) -> None:
        while True:
            held, holders = c.execute(
                "SELECT coalesce(sum(keys), 0), count(*) FROM ingress_dedup_counts WHERE keys > 0").fetchone()
            excess = int(held) - total
            if excess <= 0:
                return
            keep = share(self.per_plugin, total, int(holders))
            victim, keys = c.execute(
                "SELECT plugin_id, keys FROM ingress_dedup_counts ORDER BY keys DESC, "
                "CASE WHEN plugin_id = ? THEN 0 ELSE 1 END, plugin_id LIMIT 1", (adder,)).fetchone()
            # N x keep <= total < held, so the largest holds more than its share.
            if not _forget_oldest(c, str(victim), min(excess, int(keys) - keep), TOTAL, evicted):
                return  # its keys were gone already (another host's delete): nothing left to take here


def _forget_oldest(c: Connection, plugin_id: str, n: int, reason: str, evicted: Evictions) -> int:
    """Forget the plugin's `n` keys that expire first (exactly n: keys sharing an expiry are not
    taken together); returns how many went."""
    if n <= 0:
        return 0
    gone = c.execute(
        "DELETE FROM ingress_dedup WHERE (plugin_id, instance_id, route, key) IN (SELECT plugin_id, instance_id, "
        "route, key FROM ingress_dedup WHERE plugin_id = ? ORDER BY expires_at LIMIT ?)", (plugin_id, n)).rowcount
    if gone:
        _add(c, plugin_id, -gone)
        evicted[(plugin_id, reason)] = evicted.get((plugin_id, reason), 0) + gone
    return int(gone)


def _add(c: Connection, plugin_id: str, delta: int) -> None:
    """Change the plugin's count; a plugin left with none has no row (N counts plugins holding keys)."""
    (keys,) = c.execute(_ADD, (plugin_id, delta)).fetchone()
    if int(keys) <= 0:
        c.execute("DELETE FROM ingress_dedup_counts WHERE plugin_id = ?", (plugin_id,))
