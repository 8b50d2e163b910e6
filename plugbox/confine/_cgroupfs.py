"""The cgroup filesystem as plugbox uses it: find where groups can be made, make one per worker with
its limits, kill everything in it, remove it. Files and directories only; no policy.

Two kernels' worth of interface, one shape (`Tree`):

  v2 (unified)  one directory per group; cpu.max, memory.max (+ memory.swap.max 0, memory.oom.group
                1), pids.max; cgroup.kill ends every process in it at once.
  v1            one directory per controller hierarchy (cpu, cpuacct when mounted apart, memory,
                pids); cpu.cfs_quota_us over cpu.cfs_period_us, memory.limit_in_bytes (+ memsw at
                the same value, so swap cannot extend it), pids.max; no cgroup.kill, so every pid
                listed in cgroup.procs is SIGKILLed until the list stays empty.

v2 is used when the parent directory offers all of cpu, memory and pids; else v1 when those three
hierarchies are mounted; else none (with the reason). Groups live under
`<parent>/plugbox-<owner pid>/`, where parent is the creating process's own cgroup (what a
delegating service manager hands over, e.g. systemd's Delegate=yes) or an operator-named path
relative to each hierarchy's root. Memory counts everything the kernel charges a group: anonymous
pages, page cache, tmpfs (the scratch layer's pages) and kernel memory.

The owner directory holds the totals of all its workers together (`Totals`, written when it is
made, before any worker group exists): the same files as a worker's, read by the kernel
hierarchically, so past the memory total the OOM killer picks a victim inside this subtree only
(the largest worker; on v2 its whole group, by that group's memory.oom.group — never set on the
owner directory, which would end every worker at once), past the CPU total CFS throttles the
worker groups, which share it by their equal weights, and past the pids total forks fail. v1
refuses a child's cfs quota above its parent's (EINVAL), so a worker's quota is clamped to the
total (`within`); and v1 counts an OOM kill in the victim's own group only, v2 in every ancestor.

v2's "no internal processes" rule forbids enabling controllers for children of a group that has
processes of its own; as a delegated service's cgroup has exactly that (the host), `Tree.v2` moves
the processes already there into a `<parent>/supervisor` leaf first, as systemd.resource-control(5)
"Delegate=" expects of a delegate. v1 has no such rule.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from dataclasses import dataclass

__all__ = [
    "Limits",
    "Totals",
    "Tree",
    "capacity",
    "cpu_usage_ns",
    "create",
    "find_tree",
    "groups_of",
    "held",
    "kill",
    "oom_kills",
    "oom_limit",
    "owner_dirs",
    "read_limits",
    "remove",
    "stale_owners",
    "within",
]

ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("cpu", "memory", "pids")
_V1_EXTRA = ("cpuacct",)  # accounting only: where cpu usage is read on v1 when mounted apart
_CFS_PERIOD_US = 100_000
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Limits:
    cpu_quota_percent: int  # of one CPU; 0 = no quota
    memory_bytes: int
    pids_max: int


@dataclass(frozen=True)
class Totals:
    """What all the worker groups of one owner may use together; 0 = no total (or, from
    `capacity`, no limit found)."""

    cpu_quota_percent: int  # of one CPU
    memory_bytes: int
    pids_max: int


def within(limits: Limits, totals: Totals) -> Limits:
    """A worker's limits as its owner's totals let the kernel take them: a CPU quota above the
    total is the total (v1 refuses it otherwise; on v2 it could never be reached anyway)."""
    cpu = limits.cpu_quota_percent
    if totals.cpu_quota_percent and cpu > totals.cpu_quota_percent:
        return Limits(totals.cpu_quota_percent, limits.memory_bytes, limits.pids_max)
    return limits


@dataclass(frozen=True)
class Tree:
    """Where this process makes groups: `version` and one base directory per hierarchy."""

    version: int
    bases: tuple[str, ...]

    @property
    def description(self) -> str:
        return f"cgroup v{self.version} under {', '.join(self.bases)}"


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _mounts(mountinfo: str) -> tuple[str | None, dict[str, str]]:
    """(cgroup2 mount point, {v1 controller: its mount point}) from /proc/self/mountinfo."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point = fields[4]
        if tail[0] == "cgroup2" and v2 is None:
            v2 = point
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                v1.setdefault(option, point)
    return v2, v1


def _memberships(proc_cgroup: str) -> tuple[str | None, dict[str, str]]:
    """(own v2 path, {v1 controller: own path}) from /proc/self/cgroup."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _hid, controllers, path = line.split(":", 2)
        if not controllers:
            v2 = path
        for name in controllers.split(","):
            v1[name] = path
    return v2, v1


def _base(mount: str, own: str, parent: str) -> str:
    relative = parent if parent else own
    return os.path.normpath(os.path.join(mount, relative.lstrip("/")))


def _v2_missing(base: str) -> list[str]:
    try:
        offered = set(_read(os.path.join(base, "cgroup.controllers")).split())
    except OSError:
        return list(CONTROLLERS)
    return [c for c in CONTROLLERS if c not in offered]


def find_tree(parent: str = "") -> Tree | str:
    """The groups tree this process can use, or why there is none. `parent`: a path relative to
    each hierarchy's root ("" = this process's own cgroup). Reads /proc only; creates nothing."""
    try:
        v2_mount, v1_mounts = _mounts(_read("/proc/self/mountinfo"))
        v2_own, v1_own = _memberships(_read("/proc/self/cgroup"))
    except OSError as exc:
        return f"cannot read /proc/self: {exc.strerror}"
    if v2_mount is not None and v2_own is not None:
        base = _base(v2_mount, v2_own, parent)
        if not _v2_missing(base):
            return _writable(Tree(2, (base,)))
    missing = [c for c in CONTROLLERS if c not in v1_mounts or c not in v1_own]
    if not missing:
        wanted = [c for c in (*CONTROLLERS, *_V1_EXTRA) if c in v1_mounts and c in v1_own]
        bases = {_base(v1_mounts[c], v1_own[c], parent): None for c in wanted}  # co-mounted: once
        return _writable(Tree(1, tuple(bases)))
    if v2_mount is None:
        v2_note = "no cgroup2 mount"
    else:
        v2_base = _base(v2_mount, v2_own or "/", parent)
        v2_note = f"v2 at {v2_base} lacks {', '.join(_v2_missing(v2_base))}"
    return f"no usable cgroups: {v2_note}; v1 lacks {', '.join(missing)}"


def groups_of(pid: int) -> tuple[str, ...]:
    """The cgroup directories process `pid` is in, one per mounted hierarchy (v1 and v2 alike)."""
    v2_mount, v1_mounts = _mounts(_read("/proc/self/mountinfo"))
    v2_path, v1_paths = _memberships(_read(f"/proc/{pid}/cgroup"))
    found = {_base(v1_mounts[c], path, ""): None for c, path in v1_paths.items() if c in v1_mounts}
    if v2_mount is not None and v2_path is not None:
        found[_base(v2_mount, v2_path, "")] = None
    return tuple(found)


def _writable(tree: Tree) -> Tree | str:
    for base in tree.bases:
        if not os.path.isdir(base):
            return f"cgroup v{tree.version}: {base} does not exist"
        if not os.access(base, os.W_OK | os.X_OK):
            return (f"cgroup v{tree.version}: {base} is not writable by uid {os.geteuid()} "
                    "(delegate it: systemd Delegate=yes, or chown it to this user)")
    return tree


def _enable_v2_children(base: str) -> None:
    """Let children of `base` have cpu, memory and pids (see the module docstring)."""
    enabled = set(_read(os.path.join(base, "cgroup.subtree_control")).split())
    if all(c in enabled for c in CONTROLLERS):
        return
    procs = _read(os.path.join(base, "cgroup.procs")).split()
    if procs:
        leaf = os.path.join(base, "supervisor")
        os.makedirs(leaf, exist_ok=True)
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                _write(os.path.join(leaf, "cgroup.procs"), pid)
    _write(os.path.join(base, "cgroup.subtree_control"), " ".join(f"+{c}" for c in CONTROLLERS))


def owner_dirs(tree: Tree, owner: int, totals: Totals | None = None) -> tuple[str, ...]:
    """The per-owner directories (`plugbox-<pid>`) under each base, created if need be, holding
    `totals` (see the module docstring); call before any worker group is made under them."""
    dirs = []
    for base in tree.bases:
        path = os.path.join(base, f"plugbox-{owner}")
        if tree.version == 2:
            _enable_v2_children(base)
        os.makedirs(path, exist_ok=True)
        if tree.version == 2:
            _enable_v2_children(path)
        if totals is not None:
            (_set_totals_v2 if tree.version == 2 else _set_totals_v1)(path, totals)
        dirs.append(path)
    return tuple(dirs)


def _set_totals_v2(owner: str, totals: Totals) -> None:
    # Deliberately no memory.oom.group here: 1 would make an OOM past the total end every worker.
    if totals.cpu_quota_percent:
        _write(os.path.join(owner, "cpu.max"), f"{totals.cpu_quota_percent * _CFS_PERIOD_US // 100} {_CFS_PERIOD_US}")
    if totals.memory_bytes:
        _write(os.path.join(owner, "memory.max"), str(totals.memory_bytes))
        if os.path.exists(os.path.join(owner, "memory.swap.max")):
            _write(os.path.join(owner, "memory.swap.max"), "0")
    if totals.pids_max:
        _write(os.path.join(owner, "pids.max"), str(totals.pids_max))


def _set_totals_v1(owner: str, totals: Totals) -> None:
    if totals.cpu_quota_percent and os.path.exists(os.path.join(owner, "cpu.cfs_quota_us")):
        _write(os.path.join(owner, "cpu.cfs_period_us"), str(_CFS_PERIOD_US))
        _write(os.path.join(owner, "cpu.cfs_quota_us"), str(totals.cpu_quota_percent * _CFS_PERIOD_US // 100))
    if totals.memory_bytes and os.path.exists(os.path.join(owner, "memory.limit_in_bytes")):
        hierarchy = os.path.join(owner, "memory.use_hierarchy")
        if os.path.exists(hierarchy) and _read(hierarchy) != "1":
            # Before 5.16 a v1 group could be flat: its limit would not bound its children's usage.
            # Writable while the group has no children, which is now.
            _write(hierarchy, "1")
        _write(os.path.join(owner, "memory.limit_in_bytes"), str(totals.memory_bytes))
        if os.path.exists(os.path.join(owner, "memory.memsw.limit_in_bytes")):
            _write(os.path.join(owner, "memory.memsw.limit_in_bytes"), str(totals.memory_bytes))
    if totals.pids_max and os.path.exists(os.path.join(owner, "pids.max")):
        _write(os.path.join(owner, "pids.max"), str(totals.pids_max))


def _set_limits_v2(group: str, limits: Limits) -> None:
    quota = "max" if limits.cpu_quota_percent == 0 else str(limits.cpu_quota_percent * _CFS_PERIOD_US // 100)
    _write(os.path.join(group, "cpu.max"), f"{quota} {_CFS_PERIOD_US}")
    _write(os.path.join(group, "memory.max"), str(limits.memory_bytes))
    if os.path.exists(os.path.join(group, "memory.swap.max")):
        _write(os.path.join(group, "memory.swap.max"), "0")
    _write(os.path.join(group, "memory.oom.group"), "1")
    _write(os.path.join(group, "pids.max"), str(limits.pids_max))


def _set_limits_v1(group: str, limits: Limits) -> None:
    if os.path.exists(os.path.join(group, "cpu.cfs_quota_us")):
        quota = -1 if limits.cpu_quota_percent == 0 else limits.cpu_quota_percent * _CFS_PERIOD_US // 100
        _write(os.path.join(group, "cpu.cfs_period_us"), str(_CFS_PERIOD_US))
        _write(os.path.join(group, "cpu.cfs_quota_us"), str(quota))
    if os.path.exists(os.path.join(group, "memory.limit_in_bytes")):
        _write(os.path.join(group, "memory.limit_in_bytes"), str(limits.memory_bytes))
        # memsw (memory + swap) must be >= the memory limit, hence second; absent without swap accounting.
        if os.path.exists(os.path.join(group, "memory.memsw.limit_in_bytes")):
            _write(os.path.join(group, "memory.memsw.limit_in_bytes"), str(limits.memory_bytes))
    if os.path.exists(os.path.join(group, "pids.max")):
        _write(os.path.join(group, "pids.max"), str(limits.pids_max))


def create(tree: Tree, owner_dirs_: tuple[str, ...], name: str, limits: Limits) -> tuple[str, ...]:
    """Make group `name` in every hierarchy with `limits`; returns its directories. On any failure
    what was made is removed again and the OSError propagates."""
    if not _SAFE_NAME.match(name):
        raise ValueError(f"cgroup name {name!r} is not a plain directory name")
    made: list[str] = []
    try:
        for parent in owner_dirs_:
            path = os.path.join(parent, name)
            os.mkdir(path, 0o755)
            made.append(path)
            (_set_limits_v2 if tree.version == 2 else _set_limits_v1)(path, limits)
    except BaseException:
        remove(tuple(made))
        raise
    return tuple(made)


def _pids(group: str) -> list[int]:
    try:
        return [int(p) for p in _read(os.path.join(group, "cgroup.procs")).split()]
    except FileNotFoundError:
        return []


def kill(dirs: tuple[str, ...], budget: float = 0.5) -> int:
    """SIGKILL every process in the group (cgroup.kill where the kernel has it); returns how many
    processes were listed. Waits up to `budget` seconds for the group to empty."""
    listed = 0
    deadline = time.monotonic() + budget
    for group in dirs:
        killer = os.path.join(group, "cgroup.kill")
        while (pids := _pids(group)) and time.monotonic() < deadline:
            listed += len(pids)
            if os.path.exists(killer):
                _write(killer, "1")
            else:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)  # a killed task leaves cgroup.procs once it has fully exited
    return listed


def remove(dirs: tuple[str, ...]) -> list[str]:
    """rmdir each directory; returns those still there (busy: a task not yet gone)."""
    left = []
    for group in dirs:
        try:
            os.rmdir(group)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            left.append(group)
    return left


def oom_kills(dirs: tuple[str, ...]) -> int:
    """How many processes the kernel's OOM killer ended in this group (memory hierarchy only)."""
    for group in dirs:
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            with contextlib.suppress(OSError):
                for line in _read(os.path.join(group, name)).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
    return 0


def _counters(path: str) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines) as numbers; {} when it is not there."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                found[key] = int(value)
    return found


_PEAK_SLACK = 2 << 20  # a charge refused at the limit: at most a huge page (the batch is 64 small ones)


def _limit_reached(group: str, *, has_children: bool) -> bool | None:
    """Whether allocations in `group` ever met the group's own memory limit (None: no memory files).
    v2: memory.events.local `oom` (the limit reached and reclaim failed); for a group with no
    children, as a worker's, memory.events says the same on a kernel without .local (before 5.2).
    v1 keeps no such event (memory.oom_control counts kills, in the victim's group only, and
    failcnt is not kept by every kernel: 6.18 reads 0 after an OOM at the limit), so the peak:
    memory.max_usage_in_bytes within `_PEAK_SLACK` of memory.limit_in_bytes."""
    for name in ("memory.events.local",) if has_children else ("memory.events.local", "memory.events"):
        events = _counters(os.path.join(group, name))
        if events:
            return events.get("oom", 0) > 0
    try:
        peak = int(_read(os.path.join(group, "memory.max_usage_in_bytes")))
        limit = int(_read(os.path.join(group, "memory.limit_in_bytes")))
    except (OSError, ValueError):
        return None
    return limit < _UNLIMITED and peak >= limit - _PEAK_SLACK


def oom_limit(dirs: tuple[str, ...]) -> str:
    """Whose memory limit an OOM kill in this worker group followed: "own" (the group's), "total"
    (its owner's: all workers together), "" when the kernel's counters do not tell (no memory
    files, or neither limit reached: e.g. the machine-wide OOM killer). Call before the group is
    removed. Exact on v2 (the kernel counts an `oom` event at the group whose limit was reached).
    On v1 it reads peaks, so a group that once filled its own limit and reclaimed, then died at
    the total, reads "own"; and once the total was reached, any later kill not at a worker's own
    limit reads "total"."""
    for group in dirs:
        own = _limit_reached(group, has_children=False)
        if own is None:
            continue
        if own:
            return "own"
        return "total" if _limit_reached(os.path.dirname(group), has_children=True) else ""
    return ""


def cpu_usage_ns(dirs: tuple[str, ...]) -> int | None:
    """CPU time the group used so far, in nanoseconds (cpuacct.usage on v1, cpu.stat on v2)."""
    for group in dirs:
        with contextlib.suppress(OSError):
            return int(_read(os.path.join(group, "cpuacct.usage")))
        with contextlib.suppress(OSError):
            for line in _read(os.path.join(group, "cpu.stat")).splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) * 1000
    return None


def read_limits(dirs: tuple[str, ...]) -> dict[str, str]:
    """The limits the kernel holds for this group, as found in its files (for reports)."""
    found: dict[str, str] = {}
    files = {
        "cpu": ("cpu.max", "cpu.cfs_quota_us"),
        "memory": ("memory.max", "memory.limit_in_bytes"),
        "pids": ("pids.max",),
    }
    for group in dirs:
        for key, names in files.items():
            for name in names:
                with contextlib.suppress(OSError):
                    found.setdefault(key, f"{name}={_read(os.path.join(group, name))}")
    return found


_UNLIMITED = 1 << 62  # v1 writes "no limit" as LONG_MAX rounded down to a page


def _limit_of(group: str, version: int) -> Totals:
    """The limits a group itself holds (0: none, or no such file)."""
    cpu = memory = pids = 0
    with contextlib.suppress(OSError, ValueError):
        if version == 2:
            quota, _, period = _read(os.path.join(group, "cpu.max")).partition(" ")
            cpu = 0 if quota == "max" else max(1, int(quota) * 100 // int(period))
        else:
            quota_us = int(_read(os.path.join(group, "cpu.cfs_quota_us")))
            period_us = int(_read(os.path.join(group, "cpu.cfs_period_us")))
            cpu = 0 if quota_us < 0 else max(1, quota_us * 100 // period_us)
    with contextlib.suppress(OSError, ValueError):
        raw = _read(os.path.join(group, "memory.max" if version == 2 else "memory.limit_in_bytes"))
        memory = 0 if raw == "max" or int(raw) >= _UNLIMITED else int(raw)
    with contextlib.suppress(OSError, ValueError):
        raw = _read(os.path.join(group, "pids.max"))
        pids = 0 if raw == "max" else int(raw)
    return Totals(cpu, memory, pids)


def held(dirs: tuple[str, ...]) -> Totals:
    """The limits the kernel holds for one group, read back as numbers (0: none): `dirs` are its
    directories, one per hierarchy (v1) or one (v2, the one that lists cgroup.controllers)."""
    found = Totals(0, 0, 0)
    for group in dirs:
        own = _limit_of(group, 2 if os.path.exists(os.path.join(group, "cgroup.controllers")) else 1)
        found = Totals(found.cpu_quota_percent or own.cpu_quota_percent, found.memory_bytes or own.memory_bytes,
                       found.pids_max or own.pids_max)
    return found


def _machine() -> Totals:
    """The machine's own: CPUs this process may run on (x 100 %), MemTotal, and the tasks the
    kernel can have (the lesser of kernel.pid_max and kernel.threads-max)."""
    with open("/proc/meminfo") as f:
        memory = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    pids = min(int(_read("/proc/sys/kernel/pid_max")), int(_read("/proc/sys/kernel/threads-max")))
    return Totals(len(os.sched_getaffinity(0)) * 100, memory, pids)


def capacity(tree: Tree) -> Totals:
    """What the worker groups under `tree` could ever get: the machine's, or less where a group
    above them already has a limit (each base and its ancestors up to the hierarchy's root: what
    a service manager set, e.g. systemd's MemoryMax=, CPUQuota=, TasksMax=)."""
    found = _machine()
    for base in tree.bases:
        group = base
        while os.path.exists(os.path.join(group, "cgroup.procs")):
            limit = _limit_of(group, tree.version)
            found = Totals(*(min(f, h) if h else f for f, h in zip(
                (found.cpu_quota_percent, found.memory_bytes, found.pids_max),
                (limit.cpu_quota_percent, limit.memory_bytes, limit.pids_max), strict=True)))
            parent = os.path.dirname(group)
            if parent == group:
                break
            group = parent
    return found


def stale_owners(tree: Tree) -> list[str]:
    """`plugbox-<pid>` directories under each base whose owner process is gone."""
    stale = []
    for base in tree.bases:
        with contextlib.suppress(OSError):
            for name in os.listdir(base):
                if name.startswith("plugbox-") and name[8:].isdigit() and not _alive(int(name[8:])):
                    stale.append(os.path.join(base, name))
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
