"""The zygote control protocol: how the host asks its zygote for a worker and learns how it ended.

Messages are msgspec JSON over an AF_UNIX SOCK_SEQPACKET pair (message boundaries kept, fds passed
with SCM_RIGHTS):

    host → zygote  Spawn (+ the worker's channel fd)
    zygote → host  Spawned (+ a pidfd) | Failed
    zygote → host  Exited (raw wait status; the kernel's OOM kills in its cgroup, whose limit)

`SpawnLimits` is the one spelling of what a worker is confined to; the host builds it from its
settings in one place (bridge/process.py) and the worker turns it into its confinement policy.
It has no defaults on purpose: defaults live in plugbox.settings only.
"""

from __future__ import annotations

import msgspec

__all__ = ["MAX_CONTROL_MSG", "CgroupLimits", "Exited", "Failed", "Spawn", "SpawnLimits", "Spawned", "ZygoteMsg"]

MAX_CONTROL_MSG = 1 << 16  # a Spawn is a few hundred bytes; anything near this is garbage


class CgroupLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The worker's cgroup, as the zygote makes it (see plugbox.confine.cgroups)."""

    mode: str  # required | auto | off
    parent: str  # relative to each hierarchy's root; "" = the zygote's own cgroup
    cpu_quota_percent: int  # of one CPU; 0 = no quota
    memory_bytes: int
    pids_max: int
    # all workers together, on their owner group; None = derived from the machine, 0 = none
    total_cpu_percent: int | None
    total_memory_bytes: int | None
    total_pids: int | None


class SpawnLimits(msgspec.Struct, frozen=True, kw_only=True):
    memory_bytes: int
    open_files: int
    file_size_bytes: int
    scratch_bytes: int
    frame_max_bytes: int
    netns: bool
    degraded: bool
    cgroup: CgroupLimits
    uids: str  # a non-root host's subordinate uid per worker: required | auto | off


class Spawn(msgspec.Struct, tag="spawn", frozen=True, kw_only=True):
    sid: int
    plugin_id: str
    plugin_dir: str
    scratch_dir: str
    limits: SpawnLimits


class Spawned(msgspec.Struct, tag="spawned", frozen=True):
    sid: int
    pid: int


class Failed(msgspec.Struct, tag="failed", frozen=True):
    sid: int
    error: str


class Exited(msgspec.Struct, tag="exited", frozen=True):
    pid: int
    status: int
    oom_kills: int = 0  # by the kernel, in the worker's own cgroup (memory limit)
    oom_limit: str = ""  # with oom_kills: "own" (its group's limit), "total" (all workers'), "" unknown


ZygoteMsg = Spawned | Failed | Exited
