"""A host-wide budget of bytes, shared fairly among the plugins that hold some of it.

Per-plugin limits bound what one plugin makes the host keep; with many plugins their sum grows
with the number of plugins. A `HeldTotal` bounds the sum: every holder (one per worker channel)
charges the bytes it keeps to its `Holding`, and the books never settle above `total`.

Who pays when the total is reached (the rule, in full):

- a charge that fits under the total is granted;
- a refusable charge (`Holding.keep`: memory not yet spent, such as an answer about to be held)
  that would take its holder past its fair share — `total / holders`, the holder counted — is
  refused, and counted against the holder;
- any other charge that does not fit makes room by reclaiming the heaviest holder over its fair
  share: its `reclaim` callback is told why (it must end whatever keeps the bytes: the channel
  ends its worker) and its bytes leave the books at once. Repeated until the charge fits.
  A forced charge (`Holding.force`: bytes already spent, such as bytes already in a transport's
  buffer) cannot be refused, so its own holder may be the one reclaimed.

Whenever the books are over the total, the holders' average is over `total / holders`, so the
heaviest holder is over its fair share: a holder within its share is never refused or reclaimed
while another holds more than its own. A forced charge exceeds the total only until the
reclaim it triggers returns; `peak` is the most the books held once settled.

Bytes a holder keeps without being asked can grow with no charge to see them (a transport's write
buffer, filled by the answers the worker asked for). Such a holder gives its account a `measure`
callback that charges what it keeps now, forced, or releases what it keeps no more; `measure()`
calls them all, and the host calls it periodically (plugbox.totals.sweep). Between two
measurements what the holders really keep can exceed the total by what they grew in the time
between, no more; each holder's growth is bounded by its own limits (a channel's, by its
high-water mark).

This module only keeps books: it holds no bytes, knows no channel and takes no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

__all__ = ["HeldTotal", "Holding"]

Reclaim = Callable[[str], None]
Measure = Callable[[], None]


class Holding:
    """One holder's account in a `HeldTotal` (a worker channel's, for as long as it lives).
    Once reclaimed or closed it keeps nothing and every charge is a no-op (refused for `keep`)."""

    __slots__ = ("_books", "_measure", "_reclaim", "closed", "kept", "name")

    def __init__(self, books: HeldTotal, name: str, reclaim: Reclaim, measure: Measure | None = None) -> None:
        self._books = books
        self._reclaim = reclaim
        self._measure = measure
        self.name = name  # the plugin id: what the refusals and metrics are counted under
        self.kept = 0
        self.closed = False

    def keep(self, size: int) -> bool:
        """Charge `size` bytes about to be kept; False (counted as a refusal): keep them not."""
        return self._books._keep(self, size)

    def force(self, size: int) -> None:
        """Charge `size` bytes already kept (they cannot be refused; a reclaim makes room)."""
        self._books._force(self, size)

    def release(self, size: int) -> None:
        """`size` bytes charged earlier are kept no more."""
        if not self.closed:
            size = min(size, self.kept)
            self.kept -= size
            self._books._kept -= size

    def close(self) -> None:
        """Nothing more is kept for this holder (its channel ended); safe to call twice."""
        self._books._close(self)


class HeldTotal:
    """`total` bytes shared by the holders opened with `holding`; `name` is the setting that sets
    `total`, named in every refusal and reclaim so operators know which knob it is."""

    def __init__(self, total: int, name: str = "channel_bytes_total") -> None:
        if total <= 0:
            raise ValueError(f"{name} must be positive, got {total}")
        self.total = total
        self.name = name
        self.peak = 0
        self.refused: Counter[str] = Counter()  # refusals, by holder name (monotonic: metrics)
        self.reclaimed: Counter[str] = Counter()  # holders reclaimed, by name
        self.measures = 0  # times `measure()` ran (with the host's sweep: its ticks)
        self._kept = 0
        self._holdings: dict[Holding, None] = {}  # (in the order opened: measured, and reclaimed on ties, so)

    @property
    def kept(self) -> int:
        """Bytes the open holdings keep, all together."""
        return self._kept

    def holding(self, name: str, reclaim: Reclaim, measure: Measure | None = None) -> Holding:
        """Open an account for `name`; `reclaim(reason)` must end what keeps its bytes, and
        `measure()`, if given, must charge what it keeps that grew unseen (see `measure`)."""
        holding = Holding(self, name, reclaim, measure)
        self._holdings[holding] = None
        return holding

    def measure(self) -> None:
        """Have every open holding with a `measure` callback charge what it keeps now: past the
        total, the heaviest over its share is then reclaimed, as for any forced charge. Cheap when
        nothing changed: one call per holding (the host runs it for all channels at once)."""
        self.measures += 1
        for holding in list(self._holdings):  # (a reclaim takes a holding off the books)
            measure = holding._measure
            if measure is not None and not holding.closed:
                measure()

    def kept_by(self) -> dict[str, int]:
        """Bytes kept, by holder name (holders keeping nothing left out)."""
        out: Counter[str] = Counter()
        for holding in self._holdings:
            if holding.kept:
                out[holding.name] += holding.kept
        return dict(out)

    def fair_share(self, holding: Holding | None = None) -> int:
        """`total / holders`: the holders keeping something, and `holding` if it keeps nothing yet."""
        holders = sum(1 for h in self._holdings if h.kept) + (holding is not None and not holding.kept)
        return self.total // max(1, holders)

    # -- the rule (see the module docstring) --
    def _keep(self, holding: Holding, size: int) -> bool:
        if holding.closed:
            return False
        if self._kept + size > self.total and (
                holding.kept + size > self.fair_share(holding) or not self._make_room(size, holding)):
            self.refused[holding.name] += 1
            return False
        self._add(holding, size)
        return True

    def _force(self, holding: Holding, size: int) -> None:
        if holding.closed:
            return
        self._add(holding, size)
        self._make_room(0, None)

    def _add(self, holding: Holding, size: int) -> None:
        holding.kept += size
        self._kept += size
        if self._kept <= self.total:
            self.peak = max(self.peak, self._kept)

    def _make_room(self, size: int, spare: Holding | None) -> bool:
        """Reclaim the heaviest holders over their share (never `spare`) until `size` more bytes
        fit; False if none is left to reclaim."""
        while self._kept + size > self.total:
            share = self.fair_share(spare)
            heaviest = max((h for h in self._holdings if h is not spare), key=lambda h: h.kept, default=None)
            if heaviest is None or heaviest.kept <= share:
                return False  # (cannot happen for `_keep`'s callers within their share: see above)
            reason = (f"it kept {heaviest.kept} bytes for its worker, over its fair share ({share} bytes) of "
                      f"{self.name} = {self.total} shared by {self._holders()} plugins")
            self.reclaimed[heaviest.name] += 1
            self._close(heaviest)
            heaviest._reclaim(reason)
        self.peak = max(self.peak, self._kept)
        return True

    def _holders(self) -> int:
        return sum(1 for h in self._holdings if h.kept) or 1

    def _close(self, holding: Holding) -> None:
        if holding.closed:
            return
        holding.closed = True
        self._kept -= holding.kept
        holding.kept = 0
        self._holdings.pop(holding, None)
