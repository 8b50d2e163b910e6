"""The host process's own open-file limit, and how many fds it holds.

Every running worker holds two fds on the host (its channel socket and the pidfd it is killed
through), so the soft RLIMIT_NOFILE many systems start a process with (1,024) runs out near 500
plugins, as EMFILE in whatever call happens to come next. The host raises its soft limit at start;
it never touches the hard limit (raising that takes privilege and is the operator's call) and never
lowers anything. Workers do not inherit the raise: their own limit is `worker_open_files`, set by
the rlimits layer after the fork.
"""

from __future__ import annotations

import os
import resource

__all__ = ["open_fds", "raise_open_files"]


def raise_open_files(wanted: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to `wanted`, capped at the hard limit. Returns the
    (soft, hard) limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


def open_fds() -> int:
    """How many fds this process holds now (Linux: /proc/self/fd)."""
    return len(os.listdir("/proc/self/fd")) - 1  # (less the one listdir itself held open)
