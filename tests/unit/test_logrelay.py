"""Plugin log relay (SPEC §6): lines tagged with the plugin id, rate-limited per window, capped in
length, and with secret config values redacted before any line leaves the host."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest

from plugbox._ratelimit import RateLimiter
from plugbox.host import Host
from plugbox.logrelay import REDACTED, LogRelay
from plugbox.sdk import Plugin

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
