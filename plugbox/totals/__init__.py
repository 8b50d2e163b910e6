"""Host-wide totals that per-plugin budgets share.

A per-plugin budget keeps one plugin from taking a host resource, but budgets add up: N plugins at
their own limit take N times it. Each total here bounds the sum, and when it is reached the plugins
that pay are those over their fair share of it (the total over the plugins using it); a plugin within
its fair share never pays for what others spend.

- `held`: memory the host keeps for plugins (bytes queued to their workers, answers held for them):
  `HeldTotal`, books that never settle above the total; what is kept can be refused beforehand or
  reclaimed by ending the heaviest holder. `sweep`: the one timer that has those books measured
  (queues grow with nothing to charge them).
- `rate`: what plugins spend per second (host CPU on their channels, host log bytes): `RateTotal`, a
  shared token bucket; work already done pauses the plugin, work not yet done is refused.

Totals kept where nothing can be taken back from a plugin (stored bytes, chats held for a human)
or where the oldest can be (remembered ingress keys) are partitioned instead: each plugin using
some is sure of `share(own bound, total, plugins using some)`. They live with their stores
(plugbox.storage.quota, plugbox.storage.conversations, plugbox.ingress.dedup) and use `share`.
"""

from plugbox.totals.held import HeldTotal, Holding
from plugbox.totals.rate import RateTotal, RateTotalStats

__all__ = ["HeldTotal", "Holding", "RateTotal", "RateTotalStats", "share"]


def share(own: int, total: int, holders: int) -> int:
    """What each of `holders` plugins is sure of when `total` is partitioned among them, never more
    than its `own` bound."""
    return min(own, total // max(holders, 1))
