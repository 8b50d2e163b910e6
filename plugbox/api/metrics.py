"""Prometheus metrics of one API app, in its own CollectorRegistry (so two apps in one process, as in
tests, never share counters).

Fed by the host's observer callbacks (registered with `Host.add_observer`): capability calls by plugin,
verb and outcome (refusals for a missing permission also in `plugbox_capability_denied_total`), plugin
failures by class, hook timeouts, worker failures and restarts, and the time of each whole hook chain
by event; and by the ingress handler (requests by outcome). Every figure about one plugin carries a
`plugin` label. Worker memory
(PSS from `/proc/<pid>/smaps_rollup`), plugins by status, the `dedupOn` keys each plugin holds (one
read of the counts table, a row per plugin) and those this host evicted by reason (`plugin`: past
`ingress_dedup_keys_per_plugin`; `total`: the plugin furthest over its share of
`ingress_dedup_keys_total`), the storage each plugin holds (one read of
the usage table, a row per plugin) and storage refusals by reason (`quota`: the plugin's own
`storage_quota_bytes`; `total`: its share of `storage_total_bytes`) are read at scrape time. A worker whose
smaps cannot be read (already gone, or not readable to the host's user) is left out of the scrape.
The bytes worker channels keep for their workers (queues and held answers), against the host-wide
`channel_bytes_total` (plugbox/totals/held.py), are read from the host's books at scrape time too: kept
by plugin, the settled peak, and the answers refused and workers ended by plugin.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from plugbox.host import Host
from plugbox.lifecycle.status import Status
from plugbox.observer import HostObserver
from plugbox.totals.held import HeldTotal

__all__ = ["ChannelBytesCollector", "Metrics", "worker_pss_bytes"]

HOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def worker_pss_bytes(pid: int) -> int | None:
    """Proportional set size of `pid`, from the kernel's smaps rollup; None when unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


Family = GaugeMetricFamily | CounterMetricFamily


def _by_label(family: Family, counts: Mapping[Any, float]) -> Family:
    """`family` with one sample per key of `counts`, sorted: a key is the label value, or a tuple
    of them."""
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


class _HostCollector(Collector):
    def __init__(self, host: Host) -> None:
        self._host = host

    def collect(self) -> Iterator[Family]:
        views = self._host.plugins()
        memory = GaugeMetricFamily("plugbox_worker_memory_pss_bytes",
                                   "Proportional set size of each running worker", labels=["plugin"])
        for view in views:
            pss = worker_pss_bytes(view.worker_pid) if view.worker_pid is not None else None
            if pss is not None:
                memory.add_metric([view.plugin_id], pss)
        yield memory
        dropped = CounterMetricFamily("plugbox_plugin_log_lines_dropped",
                                      "Plugin log lines and handler errors refused by the plugin's own rate limit",
                                      labels=["plugin"])
        for view in views:
            dropped.add_metric([view.plugin_id], view.logs_dropped)
        yield dropped
        statuses = GaugeMetricFamily("plugbox_plugins", "Known plugins by status", labels=["status"])
        counts: dict[str, int] = {str(s): 0 for s in Status}
        for view in views:
            counts[view.status] += 1
        for status, n in sorted(counts.items()):
            statuses.add_metric([status], n)
        yield statuses
        ingress = self._host.ingress
        yield _by_label(GaugeMetricFamily("plugbox_ingress_queue_pending",
                                          "Async ingress deliveries waiting for each plugin", labels=["plugin"]),
                        ingress.pending_counts())
        yield _by_label(GaugeMetricFamily(
            "plugbox_ingress_dedup_keys",
            "dedupOn keys each plugin's ingress routes hold (ingress_dedup_keys_total over all)",
            labels=["plugin"]), ingress.dedup_keys_held())
        yield _by_label(CounterMetricFamily(
            "plugbox_ingress_dedup_evictions",
            "dedupOn keys forgotten before their window ended: past the plugin's own bound, or its share of the "
            "host's total", labels=["plugin", "reason"]), ingress.dedup_evictions)
        quota = self._host.storage.quota
        yield _by_label(GaugeMetricFamily(
            "plugbox_storage_used_bytes", "Bytes of storage each plugin holds on disk (keys and conversation records)",
            labels=["plugin"]), self._host.db.read(quota.held))
        yield _by_label(CounterMetricFamily(
            "plugbox_storage_refusals", "Storage writes refused: past the plugin's quota, or its share of the total",
            labels=["plugin", "reason"]), quota.refused)


class ChannelBytesCollector(Collector):
    """The host-wide books of channel bytes (`Host.channel_bytes`), as read at scrape time."""

    def __init__(self, books: HeldTotal) -> None:
        self._books = books

    def collect(self) -> Iterator[Family]:
        books = self._books
        yield _by_label(GaugeMetricFamily(
            "plugbox_channel_bytes_kept",
            f"Bytes kept for each worker by its channel (queue as last measured, held answers), of {books.name}",
            labels=["plugin"]),
            books.kept_by())
        yield GaugeMetricFamily("plugbox_channel_bytes_peak",
                                f"Most bytes all worker channels kept at once, of {books.name}",
                                value=books.peak)
        yield GaugeMetricFamily("plugbox_channel_bytes_limit", f"The host-wide bound: {books.name}",
                                value=books.total)
        yield _by_label(CounterMetricFamily(
            "plugbox_channel_answers_refused_host_wide",
            f"Answers refused: their worker was over its fair share of {books.name}", labels=["plugin"]), books.refused)
        yield _by_label(CounterMetricFamily(
            "plugbox_channel_ended_host_wide",
            f"Workers ended for keeping the most over their fair share of {books.name}", labels=["plugin"]),
            books.reclaimed)


class Metrics(HostObserver):
    """The app's registry and the instruments the rest of the API and the host observer feed."""

    def __init__(self, host: Host) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hook_seconds = Histogram("plugbox_hook_chain_seconds", "Time to run all handlers of a hook event",
                                      ["event"], buckets=HOOK_BUCKETS, registry=r)
        self.hook_timeouts = Counter("plugbox_hook_timeouts", "Hook handlers that ran past their budget",
                                     ["plugin"], registry=r)
        self.hook_dropped_events = Counter("plugbox_hook_events_dropped",
                                           "Events not delivered to a plugin with too many handler calls unanswered",
                                           ["plugin"], registry=r)
        self.webhook_dropped_deliveries = Counter(
            "plugbox_webhook_deliveries_dropped",
            "Outbound webhook deliveries of events a plugin caused, dropped past its share of the queue",
            ["plugin"], registry=r)
        self.worker_crashes = Counter("plugbox_worker_crashes", "Workers that died or were killed",
                                      ["plugin"], registry=r)
        self.worker_restarts = Counter("plugbox_worker_restarts", "Worker restarts scheduled after a failure",
                                       ["plugin"], registry=r)
        self.capability_calls = Counter("plugbox_capability_calls", "Capability calls by plugin, verb and outcome",
                                        ["plugin", "verb", "outcome"], registry=r)
        self.capability_denied = Counter("plugbox_capability_denied",
                                         "Capability calls refused for a permission the manifest lacks",
                                         ["plugin", "verb"], registry=r)
        self.plugin_failures = Counter("plugbox_plugin_failures", "Plugin failures by class (see lastError)",
                                       ["plugin", "kind"], registry=r)
        self.ingress_requests = Counter("plugbox_ingress_requests",
                                        "Ingress requests by plugin (empty: no such route) and outcome",
                                        ["plugin", "outcome"], registry=r)
        self._call_children: dict[tuple[str, str, str], Any] = {}
        r.register(_HostCollector(host))
        r.register(ChannelBytesCollector(host.channel_bytes))

    # -- host observer (plugbox.observer.HostObserver) --
    def capability_call(self, plugin_id: str, verb: str, outcome: str) -> None:
        # On the path of every capability call: the labelled child is looked up once per triple
        # (plugin ids are the host's own, the verb an allowlisted name or "unknown": few triples).
        key = (plugin_id, verb, outcome)
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self.capability_calls.labels(plugin_id, verb, outcome)
        child.inc()
        if outcome == "denied":
            self.capability_denied.labels(plugin_id, verb).inc()

    def plugin_failure(self, plugin_id: str, kind: str) -> None:
        self.plugin_failures.labels(plugin_id, kind).inc()

    def hook_timeout(self, plugin_id: str) -> None:
        self.hook_timeouts.labels(plugin_id).inc()

    def hook_dropped(self, plugin_id: str) -> None:
        self.hook_dropped_events.labels(plugin_id).inc()

    def webhook_dropped(self, plugin_id: str, count: int) -> None:
        self.webhook_dropped_deliveries.labels(plugin_id).inc(count)

    def worker_failed(self, plugin_id: str, restarting: bool, reason: str) -> None:
        self.worker_crashes.labels(plugin_id).inc()
        if restarting:
            self.worker_restarts.labels(plugin_id).inc()

    def hook_chain(self, event: str, seconds: float) -> None:
        self.hook_seconds.labels(event).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
