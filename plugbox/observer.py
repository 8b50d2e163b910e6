"""Host events worth counting (`HostObserver`) and the fan-out to every observer the host was
given (`Observers`). The HTTP API's metrics (`plugbox.api.metrics.Metrics`) are one observer;
`plugbox bench chaos` adds its own. Observers are registered through `Host.add_observer` or passed
at construction; nothing replaces the host's attributes from outside."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HostObserver", "Observers"]


class HostObserver:
    """Told about host events worth counting; every method defaults to ignoring the event."""

    def capability_call(self, plugin_id: str, verb: str, outcome: str) -> None:
        """One capability call of `plugin_id`; `outcome` is ok, error, timeout or denied (a
        permission the manifest lacks)."""

    def plugin_failure(self, plugin_id: str, kind: str) -> None:
        """A failure of `plugin_id` was recorded (`kind`: a `plugbox.lifecycle.failures.FailureKind`)."""

    def hook_timeout(self, plugin_id: str) -> None:
        pass

    def hook_dropped(self, plugin_id: str) -> None:
        """An event was not delivered to `plugin_id`: too many of its handler calls were unanswered."""

    def webhook_dropped(self, plugin_id: str, count: int) -> None:
        """`count` outbound webhook deliveries of events `plugin_id` caused were dropped: it had its
        share of the queue waiting."""

    def worker_failed(self, plugin_id: str, restarting: bool, reason: str) -> None:
        """A worker of `plugin_id` died or was killed and the manager acted on it: a restart
        follows unless the breaker opened."""

    def hook_chain(self, event: str, seconds: float) -> None:
        """One `bus.execute` of `event` took `seconds` (only timed once an observer is added)."""


class Observers(HostObserver):
    """Every registered observer, told in registration order."""

    def __init__(self) -> None:
        self._all: list[HostObserver] = []

    def add(self, observer: HostObserver) -> None:
        self._all.append(observer)

    def capability_call(self, plugin_id: str, verb: str, outcome: str) -> None:
        for o in self._all:
            o.capability_call(plugin_id, verb, outcome)

    def plugin_failure(self, plugin_id: str, kind: str) -> None:
        for o in self._all:
            o.plugin_failure(plugin_id, kind)

    def hook_timeout(self, plugin_id: str) -> None:
        for o in self._all:
            o.hook_timeout(plugin_id)

    def hook_dropped(self, plugin_id: str) -> None:
        for o in self._all:
            o.hook_dropped(plugin_id)

    def webhook_dropped(self, plugin_id: str, count: int) -> None:
        for o in self._all:
            o.webhook_dropped(plugin_id, count)

    def worker_failed(self, plugin_id: str, restarting: bool, reason: str) -> None:
        for o in self._all:
            o.worker_failed(plugin_id, restarting, reason)

    def hook_chain(self, event: str, seconds: float) -> None:
        for o in self._all:
            o.hook_chain(event, seconds)

    # The two sinks sit on hot paths (every capability call, every hook chain): with one observer
    # they are its own bound methods, so the fan-out costs nothing in the common case.
    def capability_call_sink(self) -> Callable[[str, str, str], None] | None:
        if not self._all:
            return None
        return self._all[0].capability_call if len(self._all) == 1 else self.capability_call

    def hook_chain_sink(self) -> Callable[[str, float], None] | None:
        if not self._all:
            return None
        return self._all[0].hook_chain if len(self._all) == 1 else self.hook_chain
