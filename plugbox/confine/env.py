"""Layer 4, env: the process environment is the allowlist, and the scratch dir is home.

os.environ is cleared (which also unsets the C-level environ) except `policy.env_allow`; TMPDIR
and HOME point at the scratch dir, PATH is minimal, the working directory is the scratch dir and
the umask keeps new files private. `tempfile` caches its directory on first use, so if the zygote
imported and used it the cache is reset here (CPython `tempfile.tempdir`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import Policy

__all__ = ["LAYER", "NAME"]

NAME = "env"
_PATH = "/usr/bin:/bin"
_UMASK = 0o077


@dataclass(frozen=True)
class _Plan:
    allow: tuple[str, ...]
    scratch: str


def prepare(policy: Policy, _shared: None) -> _Plan:
    return _Plan(policy.env_allow, policy.scratch_dir)


def apply(plan: _Plan) -> LayerResult:
    kept = {name: os.environ[name] for name in plan.allow if name in os.environ}
    dropped = len(os.environ) - len(kept)
    os.environ.clear()
    os.environ.update(kept)
    os.environ.update({"TMPDIR": plan.scratch, "HOME": plan.scratch, "PATH": _PATH})
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        setattr(tempfile, "tempdir", plan.scratch)  # noqa: B010 - a module attribute typeshed omits
    try:
        os.chdir(plan.scratch)
    except OSError as exc:
        return LayerResult.failed(NAME, f"chdir to scratch {plan.scratch!r}: {exc.strerror}")
    os.umask(_UMASK)
    return LayerResult.ok(
        NAME, f"kept {sorted(kept)}, dropped {dropped}; TMPDIR=HOME=cwd={plan.scratch}, umask {_UMASK:03o}"
    )


def probe() -> LayerProbe:
    return LayerProbe(NAME, True, "environment allowlist, TMPDIR/HOME/cwd = scratch")


LAYER: Layer[None, _Plan] = Layer(NAME, no_share, prepare, apply, probe)
