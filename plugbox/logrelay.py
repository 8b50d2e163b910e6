"""Plugin log lines on their way into the host log (SPEC §6): tagged with the plugin id, capped in
length, rate-limited, and with every secret config value redacted before the line leaves the host.
Both tiers use it: built-ins through `ctx.logger`, workers through relayed frames. The last lines
are kept in a small ring for `dev run` and the API."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from plugbox._ratelimit import RateLimiter

__all__ = ["REDACTED", "LogRelay", "redact"]

log = logging.getLogger("plugbox.plugin")

REDACTED = "[redacted]"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_MIN_SECRET_LEN = 4  # shorter "secrets" would redact ordinary words


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret, longest first (a secret containing another goes whole), in its plain
    and its repr-escaped form (fields are rendered with repr)."""
    forms = {form for s in secrets if len(s) >= _MIN_SECRET_LEN for form in (s, repr(s)[1:-1])}
    for secret in sorted(forms, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class LogRelay:
    def __init__(
        self,
        plugin_id: str,
        *,
        secrets: Callable[[], Iterable[str]],
        lines_per_window: int,
        window_s: float,
        max_chars: int,
        keep: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plugin_id = plugin_id
        self._secrets = secrets
        self._limiter = RateLimiter(lines_per_window, window_s, clock)
        self._max_chars = max_chars
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._reported_drops = 0

    @property
    def dropped(self) -> int:
        return self._limiter.dropped

    def emit(self, level: Any, message: Any, fields: Any = None) -> None:
        if not self._limiter.allow():
            return
        if self._limiter.dropped > self._reported_drops:
            log.warning("plugin %s: %d log lines dropped by the rate limit", self.plugin_id,
                        self._limiter.dropped - self._reported_drops)
            self._reported_drops = self._limiter.dropped
        lvl = level if isinstance(level, str) and level in LEVELS else "info"
        text = str(message)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{k}={v!r}" for k, v in list(fields.items())[:32])
        text = redact(text, self._secrets())  # before the cut: a cut secret would no longer match
        if len(text) > self._max_chars:
            text = text[: self._max_chars] + "…[truncated]"
        self.recent.append({"level": lvl, "message": text, "ts": time.time()})
        log.log(LEVELS[lvl], "[%s] %s", self.plugin_id, text, extra={"plugin_id": self.plugin_id})
