"""Plugin log relay (SPEC §6): lines tagged with the plugin id, rate-limited per window, capped in
length, and with secret config values redacted before any line leaves the host."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest

from plugbox._ratelimit import RateLimiter
from plugbox.host import Host
from plugbox.logrelay import REDACTED, LogRelay, sanitise
from plugbox.sdk import Plugin
from plugbox.totals.rate import RateTotal

SECRET = "tok-9f8e7d6c5b4a"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _relay(
    *, secrets: Iterable[str] = (), lines: int = 200, window: float = 10.0, max_chars: int = 8192,
    clock: FakeClock | None = None,
) -> LogRelay:
    return LogRelay(
        "echo",
        secrets=lambda: list(secrets),
        lines_per_window=lines,
        window_s=window,
        max_chars=max_chars,
        clock=clock or FakeClock(),
    )


def _messages(relay: LogRelay) -> list[str]:
    return [line["message"] for line in relay.recent]


# -- rate limit --------------------------------------------------------------------------------------


def test_rate_limiter_allows_the_limit_per_window_then_refuses() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 10.0, clock)
    assert [limiter.allow() for _ in range(5)] == [True, True, True, False, False]
    assert limiter.dropped == 2


def test_rate_limiter_allows_again_once_the_window_has_passed() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 10.0, clock)
    assert limiter.allow()
    clock.now += 9.9
    assert not limiter.allow()
    clock.now += 0.1
    assert limiter.allow()


def test_lines_beyond_the_window_limit_are_dropped_and_counted() -> None:
    relay = _relay(lines=3)
    for i in range(10):
        relay.emit("info", f"line {i}")
    assert _messages(relay) == ["line 0", "line 1", "line 2"]
    assert relay.dropped == 7


def test_logging_resumes_in_the_next_window_and_reports_the_drops(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    relay = _relay(lines=2, clock=clock)
    for i in range(5):
        relay.emit("info", f"line {i}")
    clock.now += 10
    with caplog.at_level(logging.WARNING, logger="plugbox.plugin"):
        relay.emit("info", "after the window")
    assert _messages(relay)[-1] == "after the window"
    assert any("3 log lines dropped" in r.getMessage() and "echo" in r.getMessage() for r in caplog.records)


def test_default_relay_limit_is_200_lines_per_10_seconds(host: Host) -> None:
    host.register_builtin(Plugin, {"id": "chatty", "name": "c", "version": "1.0.0", "type": "extension",
                                   "main": "builtin"})
    relay = host.manager.get("chatty").logs
    for i in range(250):
        relay.emit("info", f"line {i}")
    assert len(relay.recent) == 200
    assert relay.dropped == 50


# -- line cap ----------------------------------------------------------------------------------------


def test_long_line_is_capped_at_the_limit_and_marked_truncated() -> None:
    relay = _relay(max_chars=10)
    relay.emit("info", "x" * 50)
    (message,) = _messages(relay)
    assert message.startswith("x" * 10)
    assert "x" * 11 not in message
    assert "truncated" in message


def test_line_at_the_limit_is_kept_whole() -> None:
    relay = _relay(max_chars=10)
    relay.emit("info", "y" * 10)
    assert _messages(relay) == ["y" * 10]


# -- tagging and levels ------------------------------------------------------------------------------


def test_line_goes_to_the_host_log_tagged_with_the_plugin_id(caplog: pytest.LogCaptureFixture) -> None:
    relay = _relay()
    with caplog.at_level(logging.DEBUG, logger="plugbox.plugin"):
        relay.emit("warning", "disk almost full", {"free": 3})
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "[echo] disk almost full free=3"
    assert record.plugin_id == "echo"  # type: ignore[attr-defined]


@pytest.mark.parametrize("level", ["critical", "EXEC", 5, None])
def test_unknown_level_is_logged_as_info(level: Any) -> None:
    relay = _relay()
    relay.emit(level, "hello")
    assert [line["level"] for line in relay.recent] == ["info"]


# -- redaction ---------------------------------------------------------------------------------------


def test_secret_in_the_message_is_redacted() -> None:
    relay = _relay(secrets=[SECRET])
    relay.emit("info", f"calling api with {SECRET}")
    assert _messages(relay) == [f"calling api with {REDACTED}"]


def test_secret_in_the_fields_is_redacted() -> None:
    relay = _relay(secrets=[SECRET])
    relay.emit("info", "calling api", {"token": SECRET})
    assert SECRET not in _messages(relay)[0]
    assert REDACTED in _messages(relay)[0]


def test_secret_redaction_reaches_the_host_log(caplog: pytest.LogCaptureFixture) -> None:
    relay = _relay(secrets=[SECRET])
    with caplog.at_level(logging.INFO, logger="plugbox.plugin"):
        relay.emit("error", f"auth failed for {SECRET}")
    assert SECRET not in caplog.text


def test_truncation_never_leaves_part_of_a_secret_behind() -> None:
    # the secret straddles the cap: neither it nor any long prefix of it may leave the host
    relay = _relay(secrets=[SECRET], max_chars=20)
    relay.emit("info", f"token={SECRET}")
    (message,) = _messages(relay)
    assert SECRET[:8] not in message


def test_a_secret_containing_another_secret_is_redacted_whole() -> None:
    short, long = "abcd1234", "abcd1234-and-the-rest"
    relay = _relay(secrets=[short, long])
    relay.emit("info", f"url has {long}")
    assert "and-the-rest" not in _messages(relay)[0]


def test_secret_with_a_backslash_in_a_field_is_redacted() -> None:
    password = "pa\\ss-w0rd"  # the fields are rendered with repr(), which escapes the backslash
    relay = _relay(secrets=[password])
    relay.emit("info", "login", {"password": password})
    assert "ss-w0rd" not in _messages(relay)[0]


def test_very_short_secret_values_do_not_redact_ordinary_text() -> None:
    relay = _relay(secrets=["a"])
    relay.emit("info", "a plain sentence")
    assert _messages(relay) == ["a plain sentence"]


async def test_builtin_logger_redacts_the_plugins_secret_config_values(host: Host) -> None:
    loggers: list[Plugin] = []

    def make() -> Plugin:
        loggers.append(Plugin())
        return loggers[-1]

    schema = {"type": "object", "properties": {"apiToken": {"type": "string", "secret": True}}}
    host.register_builtin(make, {"id": "leaky", "name": "l", "version": "1.0.0", "type": "extension",
                                 "main": "builtin", "configSchema": schema})
    await host.set_config("leaky", {"apiToken": SECRET})
    await host.enable("leaky")
    loggers[0].ctx.logger.info(f"my token is {SECRET}", token=SECRET)
    (line,) = host.manager.get("leaky").logs.recent
    assert SECRET not in line["message"]
    assert line["message"].startswith(f"my token is {REDACTED}")


async def test_secret_set_after_the_relay_was_built_is_redacted(host: Host) -> None:
    schema = {"type": "object", "properties": {"apiToken": {"type": "string", "secret": True}}}
    host.register_builtin(Plugin, {"id": "late", "name": "l", "version": "1.0.0", "type": "extension",
                                   "main": "builtin", "configSchema": schema})
    relay = host.manager.get("late").logs
    await host.set_config("late", {"apiToken": SECRET})
    relay.emit("info", SECRET)
    assert _messages(relay) == [REDACTED]


# -- the sanitiser: escaping, cuts and bounded work ---------------------------------------------------


def test_control_characters_are_escaped_so_a_line_cannot_forge_another() -> None:
    relay = _relay()
    relay.emit("info", "ok\n2026-01-01 ERROR plugbox.host: forged\r\x1b[31mred\x00\x85\u202eevil\u2028")
    (message,) = _messages(relay)
    assert message == "ok\\n2026-01-01 ERROR plugbox.host: forged\\r\\x1b[31mred\\x00\\x85\\u202eevil\\u2028"


def test_a_secret_straddling_the_pre_cut_is_not_shown_in_part() -> None:
    # The text is cut to a few times the cap before redaction. Long secrets redacted before the
    # cut shrink the text, so a secret split by that cut would land inside the cap in part.
    long_secret = "L0ng-" + "s" * 195
    for pad in range(0, 120, 3):
        text = long_secret * 2 + "x" * pad + long_secret + "y" * 1000
        shown = sanitise(text, [long_secret], 100)
        assert "L0ng-" not in shown and "sssss" not in shown, pad


def test_a_secret_in_fields_cut_by_the_field_budget_is_not_shown_in_part() -> None:
    long_secret = "L0ng-" + "s" * 95
    for pad in range(0, 60):
        relay = _relay(secrets=[long_secret], max_chars=60)
        relay.emit("info", "m", {"a": long_secret, "b": "x" * pad + long_secret + "z" * 100})
        assert "L0ng-" not in _messages(relay)[0] and "sssss" not in _messages(relay)[0], pad


def test_fields_are_capped_in_count_depth_and_size_before_rendering() -> None:
    relay = _relay(max_chars=300)
    many = {f"k{i}": i for i in range(1_000_000)}
    relay.emit("info", "many", many)
    relay.emit("info", "deep", {"d": [[[[[["bottom"]]]]]], "big": "b" * (8 << 20)})
    first, second = _messages(relay)
    assert first.count("=") == 32 and first.endswith(" …")
    assert "[[[…]" in second and "bottom" not in second and len(second) <= 300 + len("…[truncated]")


def test_sanitise_work_is_bounded_by_the_cap_not_the_input() -> None:
    import time

    huge = ("\x1b" + "A" * 7) * (4 << 20)  # 32 MiB, every 8th char to escape
    started = time.perf_counter()
    shown = sanitise(huge, [SECRET], 8192)
    assert time.perf_counter() - started < 0.5  # escaping all of it takes seconds
    assert len(shown) == 8192 + len("…[truncated]")


def test_a_relay_reports_text_for_the_host_and_charges_its_own_limit() -> None:
    relay = _relay(secrets=[SECRET], lines=1)
    kept = [relay.report("warning", "hook x failed: ", f"boom {SECRET}\n") for _ in range(3)]
    assert kept == [f"boom {REDACTED}\\n"] * 3  # what an outcome keeps, even when not printed
    assert _messages(relay) == [f"hook x failed: boom {REDACTED}\\n"]
    assert relay.dropped == 2


def test_host_log_bytes_are_budgeted_per_plugin_whatever_the_line_count() -> None:
    # 200 lines of 8192 chars per 10 s would be ~10 MB a minute of host log from one plugin.
    clock = FakeClock()
    relay = LogRelay("echo", secrets=list, lines_per_window=200, window_s=10.0, max_chars=8192,
                     bytes_per_minute=60_000, bytes_burst=20_000, clock=clock)
    sent = [relay.emit("error", "x" * 8192) for _ in range(5)]
    assert sent == [True, True, False, False, False]  # 2 x 8 KiB fit the 20 kB burst
    assert relay.dropped == 3
    clock.now += 10.0  # 10 s refill 10 kB: one more long line, and short lines still get through
    assert relay.emit("error", "y" * 8192) is True
    assert relay.emit("info", "short") is True
    assert relay.emit("error", "z" * 8192) is False
    printed = sum(len(line["message"]) for line in relay.recent)
    assert printed <= 20_000 + 10_000


def test_host_log_bytes_of_all_plugins_together_are_held_to_the_total_and_the_loud_ones_lose_lines() -> None:
    # 1,000 plugins at their own 480 KiB a minute would put ~470 MB a minute in the host log.
    clock = FakeClock()
    total = RateTotal(1000.0, 4000.0, window=10.0, clock=clock)  # 1 kB/s for everyone together
    loud = [LogRelay(f"loud-{n}", secrets=list, lines_per_window=10**6, window_s=10.0, max_chars=8192,
                     bytes_per_minute=60_000, bytes_burst=2_000, total=total, clock=clock) for n in range(3)]
    quiet = LogRelay("quiet", secrets=list, lines_per_window=10**6, window_s=10.0, max_chars=8192,
                     bytes_per_minute=60_000, bytes_burst=2_000, total=total, clock=clock)
    printed = 0
    for second in range(60):
        for relay in loud:
            for _ in range(10):  # 10 x 100 B a second each: within its own 1 kB/s
                printed += 100 * relay.emit("info", "L" * 100)
        if second % 2 == 0:
            assert quiet.emit("info", "q" * 100) is True  # 50 B/s: within its fair share, never dropped
            printed += 100
        clock.now += 1.0
    assert printed <= 1000 * 60 + 4000 + 300  # the total, its burst, one line each of slack
    assert printed >= 1000 * 60 * 0.8  # and the total is used, not idled
    assert all(relay.dropped > 0 for relay in loud)  # the loud ones paid for it
    assert quiet.dropped == 0
    assert total.stats().over_share.keys() == {"loud-0", "loud-1", "loud-2"}
