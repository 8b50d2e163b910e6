"""Layer 10, nnp: prctl(PR_SET_NO_NEW_PRIVS, 1).

No execve can ever grant privileges again (setuid bits and file capabilities are ignored), and the
bit is inherited and cannot be cleared. Its place in the order is forced by the two layers after
it: landlock_restrict_self(2) — "either the caller must have the CAP_SYS_ADMIN capability in its
user namespace, or the thread must already have the no_new_privs bit set" — and seccomp(2)'s
SECCOMP_SET_MODE_FILTER have the same precondition (kernel Documentation/userspace-api/
landlock.rst and no_new_privs.rst). Since `credentials` has already dropped CAP_SYS_ADMIN, both
would fail with EPERM unless this layer ran first.
"""

from __future__ import annotations

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import Policy

__all__ = ["LAYER", "NAME"]

NAME = "nnp"


def prepare(policy: Policy, _shared: None) -> None:
    return None


def apply(_plan: None) -> LayerResult:
    try:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        if _linux.prctl(_linux.PR_GET_NO_NEW_PRIVS) != 1:
            return LayerResult.failed(NAME, "PR_GET_NO_NEW_PRIVS still reads 0")
    except OSError as exc:
        return LayerResult.failed(NAME, str(exc))
    return LayerResult.ok(NAME, "no_new_privs set")


def probe() -> LayerProbe:
    try:
        current = _linux.prctl(_linux.PR_GET_NO_NEW_PRIVS)
    except OSError as exc:
        return LayerProbe(NAME, False, f"PR_GET_NO_NEW_PRIVS: {exc.strerror} (kernel < 3.5?)")
    return LayerProbe(NAME, True, f"PR_SET_NO_NEW_PRIVS supported (this process: {current})")


LAYER: Layer[None, None] = Layer(NAME, no_share, prepare, apply, probe)
