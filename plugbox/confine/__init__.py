"""OS confinement of an untrusted plugin's worker process (SPEC §7).

One module per layer, applied by `contain` in a fixed order:

    session      own session, dies with its parent            (session.py)
    cgroups      its own cgroup: CPU quota, memory, pids      (cgroups.py)
    fds          0/1/2 -> /dev/null, all else closed but kept (fds.py)
    env          environment allowlist, TMPDIR=HOME=scratch   (env.py)
    rlimits      AS, NOFILE, FSIZE, CORE=0                    (rlimits.py)
    userns       non-root host: a subordinate uid of its own  (userns.py)
    scratch      scratch is a private tmpfs with a size limit (scratch.py)
    credentials  root -> unprivileged uid, no capabilities    (credentials.py)
    namespaces   optional new user + network namespace        (namespaces.py)
    nnp          no_new_privs                                 (nnp.py)
    landlock     filesystem, TCP and scope rules              (landlock.py)
    seccomp      syscall filter, last                         (seccomp.py)

Usage: `shared = prepare_shared()` in the zygote; after the fork, in the still single-threaded
child, `report = apply(prepare(policy, shared))` before anything of the plugin is imported.
`probe()` tells `plugbox doctor` which layers this host can apply.

Code here runs inside the worker: it imports nothing from plugbox but `plugbox.errors`.
"""

from __future__ import annotations

from plugbox.confine.contain import LAYERS, Prepared, Shared, apply, prepare, prepare_shared
from plugbox.confine.doctor import probe
from plugbox.confine.layer import LayerProbe, LayerResult
from plugbox.confine.policy import CgroupPlacement, Policy, UidPlacement, default_runtime_paths
from plugbox.confine.report import Report

__all__ = [
    "LAYERS",
    "CgroupPlacement",
    "LayerProbe",
    "LayerResult",
    "Policy",
    "Prepared",
    "Report",
    "Shared",
    "UidPlacement",
    "apply",
    "default_runtime_paths",
    "prepare",
    "prepare_shared",
    "probe",
]
