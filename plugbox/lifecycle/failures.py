"""Failure accounting and the circuit breaker (SPEC §5): the one place a plugin's consecutive
failures are counted.

A failure is a worker death (crash, OOM, liveness kill) or a hook that ran past its budget. Each
is counted exactly once: a liveness kill that ends a hook timeout reaches `crashed` with
`already_counted=True`, because `timed_out` counted it when the budget ran out. A handler success
resets the count. At `threshold` consecutive failures the breaker opens: the plugin stays in
`error` until the operator enables it again (which resets the count).

This module decides; the manager acts (teardown, restart, persistence).
"""

from __future__ import annotations

from dataclasses import dataclass

from plugbox.lifecycle.registry import PluginRecord

__all__ = ["Breaker", "Verdict", "describe_failure"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a counted failure means: the count now, and whether the breaker opened."""

    failures: int
    open: bool


class Breaker:
    def __init__(self, threshold: int, backoff_initial_s: float, backoff_max_s: float) -> None:
        self.threshold = threshold
        self._initial = backoff_initial_s
        self._max = backoff_max_s

    def crashed(self, record: PluginRecord, *, already_counted: bool = False) -> Verdict:
        """A worker died. `already_counted`: the death ends a hook timeout `timed_out` counted."""
        if not already_counted:
            record.consecutive_failures += 1
        return self._verdict(record)

    def timed_out(self, record: PluginRecord) -> Verdict:
        """A hook ran past its budget."""
        record.consecutive_failures += 1
        return self._verdict(record)

    def _verdict(self, record: PluginRecord) -> Verdict:
        failures = record.consecutive_failures
        return Verdict(failures, failures >= self.threshold)

    def succeeded(self, record: PluginRecord) -> None:
        record.consecutive_failures = 0

    def reset(self, record: PluginRecord) -> None:
        """The operator enabled the plugin: a fresh start."""
        record.consecutive_failures = 0

    def backoff(self, failures: int) -> float:
        """Seconds to wait before restart number `failures` (1-based): doubling, capped."""
        return min(self._initial * 2.0 ** (failures - 1), self._max)


def describe_failure(step: str, exc: BaseException) -> str:
    """One line for a failed plugin step: `on_load raised ValueError: bad`, `health_check timed out`."""
    if isinstance(exc, TimeoutError):
        return f"{step} timed out"
    text = str(exc)
    return f"{step} raised {type(exc).__name__}: {text}" if text else f"{step} raised {type(exc).__name__}"
