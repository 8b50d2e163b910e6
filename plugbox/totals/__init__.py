"""Host-wide totals that per-plugin budgets share.

A per-plugin budget keeps one plugin from taking a host resource, but budgets add up: N plugins at
their own limit take N times it. Each total here bounds the sum, and when it is reached the plugins
that pay are those over their fair share of it (the total over the plugins using it); a plugin within
its fair share never pays for what others spend.

- `held`: memory the host keeps for plugins (bytes queued to workers that do not read, answers held
  for them): `HeldTotal`, books that never settle above the total; what is kept can be refused
  beforehand or reclaimed by ending the heaviest holder.
- `rate`: what plugins spend per second (host CPU on their channels, host log bytes): `RateTotal`, a
  shared token bucket; work already done pauses the plugin, work not yet done is refused.

(Totals kept in the database, such as stored bytes, live with their stores: plugbox.storage.quota.)
"""

from plugbox.totals.held import HeldTotal, Holding
from plugbox.totals.rate import RateTotal, RateTotalStats

__all__ = ["HeldTotal", "Holding", "RateTotal", "RateTotalStats"]
