"""The live feed: each reader gets what concerns it, a slow reader loses the newest events and is
told how many (never blocking the plugin that logs), and closing ends every reader's stream."""

from __future__ import annotations

from plugbox.feed import FeedEvent, LiveFeed


def test_reader_of_one_plugin_gets_only_that_plugins_events() -> None:
    feed = LiveFeed(queue_max=10)
    one, every = feed.subscribe("a"), feed.subscribe()
    feed.log_line("a", {"message": "x"})
    feed.plugin_failure("b", "handler_error")
    assert [e.plugin_id for e in (one.queue.get_nowait(),)] == ["a"] and one.queue.empty()
    assert [every.queue.get_nowait().kind for _ in range(2)] == ["log", "failure"]


def test_slow_reader_loses_the_newest_events_and_is_told_how_many() -> None:
    feed = LiveFeed(queue_max=2)
    sub = feed.subscribe()
    for i in range(5):
        feed.log_line("a", {"message": str(i)})
    assert [sub.queue.get_nowait().data["message"] for _ in range(2)] == ["0", "1"]
    assert sub.take_dropped() == 3 and sub.take_dropped() == 0


def test_close_ends_every_reader_even_a_full_one_and_later_ones() -> None:
    feed = LiveFeed(queue_max=1)
    full = feed.subscribe()
    feed.publish(FeedEvent("log", "a", {}))
    feed.close()
    assert full.queue.get_nowait() is not None and full.queue.get_nowait() is None
    late = feed.subscribe()
    assert late.queue.get_nowait() is None and feed.subscribers == 0


def test_nothing_is_built_for_nobody() -> None:
    feed = LiveFeed(queue_max=1)
    sub = feed.subscribe()
    feed.unsubscribe(sub)
    feed.log_line("a", {"message": "x"})
    assert sub.queue.empty() and feed.subscribers == 0
