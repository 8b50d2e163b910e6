"""The host-wide channel books as Prometheus metrics: kept bytes by plugin, the peak, the limit,
and who was refused or ended (by plugin label), read at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from plugbox.api.metrics import ChannelBytesCollector
from plugbox.totals.held import HeldTotal


def test_the_books_are_scraped_with_the_plugin_charged_for_each_figure() -> None:
    books = HeldTotal(1000)
    registry = CollectorRegistry()
    registry.register(ChannelBytesCollector(books))
    flooder = books.holding("flooder", lambda reason: None)
    neighbour = books.holding("neighbour", lambda reason: None)
    flooder.keep(900)
    neighbour.keep(50)
    assert not flooder.keep(100)  # over its share: refused
    flooder.force(100)  # already spent: the heaviest, itself, is ended
    neighbour.keep(20)
    text = generate_latest(registry).decode()
    assert 'plugbox_channel_bytes_kept{plugin="neighbour"} 70.0' in text
    assert 'plugbox_channel_bytes_kept{plugin="flooder"}' not in text  # ended: it keeps nothing
    assert "plugbox_channel_bytes_peak 950.0" in text
    assert "plugbox_channel_bytes_limit 1000.0" in text
    assert 'plugbox_channel_answers_refused_host_wide_total{plugin="flooder"} 1.0' in text
    assert 'plugbox_channel_ended_host_wide_total{plugin="flooder"} 1.0' in text
    assert 'refused_host_wide_total{plugin="neighbour"}' not in text
    assert "channel_bytes_total" in text  # the help names the knob
