"""Everything a plugin can make the host print or return (SPEC §6): its log lines, its handler
errors, its `lastError`, its health message and what the API and dashboard show of them. One
sanitiser (`sanitise`) serves them all: secret config values redacted (before the cut: a cut
secret would no longer match), control characters escaped (a plugin's text must never start a
forged host log line, move the cursor or colour an operator's terminal), length capped. Streams
(log lines, handler errors) also go through the plugin's own rate limit, so a flood is charged to
the plugin that sent it and to nobody else, and through the host-wide total of log bytes, which
many plugins at their own limit would otherwise multiply (past it, only the plugins over their
fair share of it lose lines).

The host CPU spent on one line is bounded before any work is done on it: the text is cut to a
few times the cap before redaction and escaping, and log `fields` are walked with a cap on
items, depth and characters instead of `repr`-ing whatever the plugin sent. The last lines are
kept in a small ring for `dev run` and the API. This module prints nothing but plugin text and
owns no plugin state beyond its ring and its limiter.
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from plugbox._ratelimit import RateLimiter, TokenBucket
from plugbox.totals.rate import RateTotal

__all__ = ["REDACTED", "LogRelay", "escape_controls", "redact", "render_fields", "sanitise"]

log = logging.getLogger("plugbox.plugin")

REDACTED = "[redacted]"
TRUNCATED = "…[truncated]"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_MIN_SECRET_LEN = 4  # shorter "secrets" would redact ordinary words
_PRECUT_FACTOR = 4  # escaping at most quadruples a char, so this much input fills any cap
FIELDS_MAX_ITEMS = 32  # per dict or list, at every level
FIELDS_MAX_DEPTH = 4

# C0 and C1 controls, DEL, and the Unicode line/paragraph separators and bidi controls that can
# make a terminal or a log viewer show text other than what is stored.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret, longest first (a secret containing another goes whole), in its plain
    and its repr-escaped form (fields are rendered with repr)."""
    forms = {form for s in secrets if len(s) >= _MIN_SECRET_LEN for form in (s, repr(s)[1:-1])}
    for secret in sorted(forms, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character shown as its escape (`\\n`, `\\x1b`, `\\u202e`...)."""
    return _CONTROLS.sub(_escape_one, text)


def sanitise(text: str, secrets: Iterable[str], max_chars: int, *, cut: bool = False) -> str:
    """Plugin text made safe to print or return: redacted, escaped, at most `max_chars` (plus the
    truncation mark). Work is bounded by `max_chars`, not by the length of `text`. `cut`: `text`
    is already the head of something longer (so it may end in part of a secret)."""
    forms = [s for s in secrets if len(s) >= _MIN_SECRET_LEN]
    longest = max((len(repr(s)) for s in forms), default=0)
    limit = _PRECUT_FACTOR * max_chars + longest
    cut = cut or len(text) > limit
    if cut:
        text = text[:limit]
    text = redact(text, forms)
    if cut and longest:
        # A secret straddling the pre-cut is only partly in `text` and so was not redacted:
        # drop the tail where such a fragment could sit.
        text = text[: max(0, len(text) - longest)]
    text = escape_controls(text)
    if cut or len(text) > max_chars:
        text = text[:max_chars] + TRUNCATED
    return text


def render_fields(fields: Any, max_chars: int) -> tuple[str, bool]:
    """` k=v` pairs of a log call's fields, walked with caps on items per level, depth and total
    characters, so that a huge or deep `fields` costs the host no more than a long line does.
    Returns the text and whether it was cut at `max_chars`."""
    if not isinstance(fields, dict) or not fields:
        return "", False
    out: list[str] = []
    budget = [max_chars]

    def put(text: str) -> bool:
        out.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def value(v: Any, depth: int) -> bool:
        if isinstance(v, dict | list | tuple):
            if depth >= FIELDS_MAX_DEPTH:
                return put("{…}" if isinstance(v, dict) else "[…]")
            opening, closing = ("{", "}") if isinstance(v, dict) else ("[", "]")
            if not put(opening):
                return False
            items: Iterable[Any] = v.items() if isinstance(v, dict) else v
            for i, item in enumerate(itertools.islice(items, FIELDS_MAX_ITEMS + 1)):
                if i == FIELDS_MAX_ITEMS:
                    return put(", …" + closing)
                if i and not put(", "):
                    return False
                if isinstance(v, dict):
                    if not (value(item[0], depth + 1) and put(": ") and value(item[1], depth + 1)):
                        return False
                elif not value(item, depth + 1):
                    return False
            return put(closing)
        if isinstance(v, str | bytes):
            return put(repr(v[: budget[0] + 1]))  # never repr more than can be shown
        return put(repr(v) if isinstance(v, int | float | bool) or v is None else f"<{type(v).__name__}>")

    for i, (key, v) in enumerate(itertools.islice(fields.items(), FIELDS_MAX_ITEMS + 1)):
        if i == FIELDS_MAX_ITEMS:
            put(" …")
            break
        if not (put(" " + str(key)[: budget[0]] + "=") and value(v, 1)):
            break
    return "".join(out), budget[0] <= 0


class LogRelay:
    """One plugin's relay: its secrets, its rate limit, its recent lines."""

    def __init__(
        self,
        plugin_id: str,
        *,
        secrets: Callable[[], Iterable[str]],
        lines_per_window: int,
        window_s: float,
        max_chars: int,
        bytes_per_minute: int | None = None,
        bytes_burst: int | None = None,
        total: RateTotal | None = None,
        keep: int = 200,
        clock: Callable[[], float] = time.monotonic,
        on_line: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self._on_line = on_line  # told (plugin id, line) of every line kept: the live feed
        self._secrets = secrets
        self._limiter = RateLimiter(lines_per_window, window_s, clock)
        # Lines alone do not bound the host log (200 lines of 8192 chars is ~10 MB a minute): the
        # bytes a plugin puts there come out of its own bucket too. None: lines only.
        self._bytes = (None if bytes_per_minute is None else
                       TokenBucket(bytes_per_minute / 60, bytes_burst or bytes_per_minute, clock))
        # ...and out of the host-wide total all plugins share (plugbox.totals.rate), past which the
        # plugins over their fair share of it are the ones dropped.
        self._total = total
        self._total_dropped = 0
        self._max_chars = max_chars
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._reported_drops = 0

    @property
    def dropped(self) -> int:
        """Lines refused by this plugin's rate limits (log lines and handler errors alike)."""
        return (self._limiter.dropped + (self._bytes.dropped if self._bytes is not None else 0)
                + self._total_dropped)

    def sanitise(self, text: str, max_chars: int | None = None) -> str:
        """This plugin's text (an error, a health message) made safe to store, print or return."""
        return sanitise(text, self._secrets(), self._max_chars if max_chars is None else max_chars)

    def continue_from(self, previous: LogRelay) -> None:
        """Keep `previous`'s recent lines before this relay's own (a new version of the same plugin:
        an update must not wipe the history the operator reads). Lines are already sanitised."""
        lines = [*previous.recent, *self.recent]
        self.recent.clear()
        self.recent.extend(lines)  # the deque's bound keeps the newest

    def report(self, level: str, context: str, text: str) -> str:
        """Relay `context` (the host's words) + `text` (the plugin's) as one line, rate-limited
        like any other; return `text` sanitised, for whatever keeps it (a hook outcome)."""
        clean = self.sanitise(text)
        self.emit(level, context + clean)
        return clean

    def emit(self, level: Any, message: Any, fields: Any = None) -> bool:
        """Relay one line; False when the plugin's rate limits, or the host-wide total while the
        plugin is over its fair share of it, refused it (and it was not printed)."""
        if not self._limiter.allow():
            return False
        lvl = level if isinstance(level, str) and level in LEVELS else "info"
        text = message if isinstance(message, str) else str(message)
        room = _PRECUT_FACTOR * self._max_chars - len(text)
        rendered, cut = render_fields(fields, room) if room > 0 else ("", False)
        text = sanitise(text + rendered, self._secrets(), self._max_chars, cut=cut)
        size = len(text.encode("utf-8", "replace"))
        if self._bytes is not None and not self._bytes.spend(size):
            return False
        if self._total is not None and not self._total.admit(self.plugin_id, size):
            self._total_dropped += 1
            return False
        if self.dropped > self._reported_drops:
            log.warning("plugin %s: %d log lines dropped by the rate limit", self.plugin_id,
                        self.dropped - self._reported_drops)
            self._reported_drops = self.dropped
        line = {"level": lvl, "message": text, "ts": time.time()}
        self.recent.append(line)
        if self._on_line is not None:
            self._on_line(self.plugin_id, line)
        log.log(LEVELS[lvl], "[%s] %s", self.plugin_id, text, extra={"plugin_id": self.plugin_id})
        return True
