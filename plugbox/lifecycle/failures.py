"""Failure accounting and the circuit breaker (SPEC §5): the one place a plugin's consecutive
failures are counted, and the record of what failed (`Failure`, shown as `lastError`).

Two counts open the breaker, each at its own threshold:

- runtime failures: a worker death (crash, kernel OOM kill, liveness kill) or a hook that ran past
  its budget.
  Each is counted exactly once: a liveness kill that ends a hook timeout reaches `crashed` with
  `already_counted=True`, because `timed_out` counted it when the budget ran out. The count goes
  back to zero only once the plugin has run for a stable period (`breaker_stable_ms`) since its
  last (re)start with no failure: a success alone is not enough, or a plugin that answers between
  crashes 0.4 s after each start would keep its breaker closed forever.
- handler errors (OpenWA's rule): a handler that raises or returns an error, `handler_error_threshold`
  times in a row across the plugin's handlers. Any handler success resets this count.

At a threshold the breaker opens: the plugin stays in `error` until the operator enables it again
(which resets both counts). This module decides; the manager acts (teardown, restart, persistence).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from plugbox.lifecycle.registry import PluginRecord

__all__ = ["Breaker", "Failure", "FailureKind", "Verdict", "describe_failure"]


class FailureKind(StrEnum):
    """Every class of plugin failure an operator is shown (issue 14), as counted and labelled."""

    PERMISSION_DENIED = "permission_denied"  # a capability call the manifest does not permit
    HANDLER_ERROR = "handler_error"  # a hook handler raised or returned an error
    HOOK_TIMEOUT = "hook_timeout"  # a hook handler ran past its budget
    WORKER_CRASH = "worker_crash"  # the worker died or was killed
    WORKER_OOM = "worker_oom"  # the kernel's OOM killer ended the worker (its own memory limit or all workers')
    BREAKER_OPEN = "breaker_open"  # too many consecutive failures: stopped until re-enabled
    CONFIG_REJECTED = "config_rejected"  # the stored config does not satisfy the schema
    ENABLE_FAILED = "enable_failed"  # start, on_load or on_enable failed


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure of a plugin: what class, what happened (already one line), when (epoch s)."""

    kind: FailureKind
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a counted failure means: the count now, and whether the breaker opened."""

    failures: int
    open: bool


class Breaker:
    def __init__(self, threshold: int, backoff_initial_s: float, backoff_max_s: float, *,
                 stable_s: float, handler_error_threshold: int) -> None:
        self.threshold = threshold
        self.handler_error_threshold = handler_error_threshold
        self._stable_s = stable_s
        self._initial = backoff_initial_s
        self._max = backoff_max_s

    def crashed(self, record: PluginRecord, running_for: float, *, already_counted: bool = False) -> Verdict:
        """A worker died after running `running_for` seconds since its (re)start. `already_counted`:
        the death ends a hook timeout `timed_out` counted."""
        if not already_counted:
            self._count(record, running_for)
        return self._verdict(record)

    def timed_out(self, record: PluginRecord, running_for: float) -> Verdict:
        """A hook ran past its budget."""
        self._count(record, running_for)
        return self._verdict(record)

    def _count(self, record: PluginRecord, running_for: float) -> None:
        if running_for >= self._stable_s:  # the run before this failure was stable: a new series
            record.consecutive_failures = 0
        record.consecutive_failures += 1

    def _verdict(self, record: PluginRecord) -> Verdict:
        failures = record.consecutive_failures
        return Verdict(failures, failures >= self.threshold)

    def succeeded(self, record: PluginRecord, running_for: float) -> None:
        """A handler answered. The failure count is forgiven only after a stable period."""
        if running_for >= self._stable_s:
            record.consecutive_failures = 0

    def handler_failed(self, errors: int) -> Verdict:
        """The plugin's handlers have now failed `errors` times in a row."""
        return Verdict(errors, errors >= self.handler_error_threshold)

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
