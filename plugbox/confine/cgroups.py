"""Layer 2, cgroups: the worker runs in a control group of its own, with kernel-enforced limits.

    cpu      a quota (cpu.max / cpu.cfs_quota_us): past it the worker is throttled, not killed —
             the CPU watchdog still ends one that keeps a CPU busy for a whole window
    memory   memory.max / memory.limit_in_bytes, counting all it makes the kernel hold (heap, tmpfs
             scratch, page cache, kernel memory) with no swap: past it the OOM killer ends the worker,
             inside its group, never the host
    pids     pids.max: threads count as tasks, so a thread bomb stops at the limit
    on exit  every process left in the group is killed (cgroup.kill, or each pid on v1) and the
             group removed, when the zygote reaps the worker

All workers together: per-worker limits multiply with the number of plugins (100 x 288 MiB is more
than most machines have, two workers at 100 % take both CPUs of a 2-CPU host), so the common parent
of one zygote's groups (`plugbox-<zygote pid>`) holds totals too (see _cgroupfs): memory, past
which the kernel OOM-kills the largest worker inside that subtree, never the host; CPU, past which
the workers are throttled and share what is left evenly, so the host's loop keeps its CPU; pids.
The operator sets them (workers_*_total settings) or they are derived from what this host could
ever get (`_cgroupfs.capacity`: the machine, or less where a cgroup above already limits it):

    memory   capacity minus a reserve for the host and the OS of 1/8 of it, at least 1 GiB (the
             host's own heap grows with the plugins it serves); never below half the capacity
    cpu      capacity minus half a CPU for the host's event loop (which does all messaging); at
             least 50 %
    pids     capacity minus 1/8 of it, at least 256 tasks, for the host's and the OS's forks

A total below one worker's limit is the limit that binds (a worker's CPU quota is clamped to it).

Who does what: the zygote, which stays unconfined, makes the group and writes its limits before
the fork (`Groups.place`, on the host's `Request`), and removes it after reaping (`Groups.release`).
The child joins it (writes itself to cgroup.procs) as this layer. Its place is second, right after
`session`: as early as possible, so nearly everything the worker allocates is charged to its group
(v1 does not move charges made before the join); before `credentials`, after which the worker's uid
can no longer write the group's files; long before `seccomp`. Limits are read back from the kernel
after the join and named in the detail.

Modes (the operator's `worker_cgroups` setting): "required" fails closed when groups cannot be
made (the layer fails, so a strict host starts no plugin and names this layer); "auto" uses them
where the host can make them and reports them skipped with the reason otherwise; "off".
"""

from __future__ import annotations

import os

import msgspec

from plugbox.confine import _cgroupfs
from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import CgroupPlacement, Policy

__all__ = ["LAYER", "MODES", "NAME", "Groups", "Request", "describe_totals", "probe_for", "totals_for"]

NAME = "cgroups"

MODES = ("required", "auto", "off")


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the host asks of a worker's cgroup (from its settings)."""

    mode: str = "off"
    parent: str = ""  # relative to each hierarchy's root; "" = the zygote's own cgroup
    cpu_quota_percent: int = 0  # of one CPU; 0 = no quota
    memory_bytes: int = 0
    pids_max: int = 0
    # All workers together (see the module docstring); None = derived from the machine, 0 = none.
    total_cpu_percent: int | None = None
    total_memory_bytes: int | None = None
    total_pids: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"cgroup mode must be one of {', '.join(MODES)}, not {self.mode!r}")


_MEMORY_RESERVE_MIN = 1 << 30
_PIDS_RESERVE_MIN = 256
_HOST_CPU_PERCENT = 50  # of one CPU, kept from the workers for the host's event loop


def _less_reserve(room: int, least: int) -> int:
    return max(room - max(least, room // 8), room // 2)


def totals_for(tree: _cgroupfs.Tree, request: Request) -> _cgroupfs.Totals:
    """The totals all workers under `tree` get: the request's, each one it leaves to the machine
    (None) derived from `_cgroupfs.capacity` as the module docstring says."""
    asked = (request.total_cpu_percent, request.total_memory_bytes, request.total_pids)
    if None not in asked:
        return _cgroupfs.Totals(*(a or 0 for a in asked))
    room = _cgroupfs.capacity(tree)
    return _cgroupfs.Totals(
        max(_HOST_CPU_PERCENT, room.cpu_quota_percent - _HOST_CPU_PERCENT) if asked[0] is None else asked[0],
        _less_reserve(room.memory_bytes, _MEMORY_RESERVE_MIN) if asked[1] is None else asked[1],
        _less_reserve(room.pids_max, _PIDS_RESERVE_MIN) if asked[2] is None else asked[2],
    )


def describe_totals(totals: _cgroupfs.Totals) -> str:
    parts = (f"cpu {totals.cpu_quota_percent} %" if totals.cpu_quota_percent else "cpu: no total",
             f"memory {totals.memory_bytes >> 20} MiB" if totals.memory_bytes else "memory: no total",
             f"pids {totals.pids_max}" if totals.pids_max else "pids: no total")
    return "all workers together: " + ", ".join(parts)


class Groups:
    """The zygote's groups: one per live worker, made before its fork and removed after its reaping."""

    def __init__(self) -> None:
        self._trees: dict[str, tuple[_cgroupfs.Tree, tuple[str, ...], _cgroupfs.Totals] | str] = {}
        self._by_pid: dict[int, tuple[str, ...]] = {}
        self._unowned: list[tuple[str, ...]] = []  # placed, no worker adopted them yet
        self._busy: list[tuple[str, ...]] = []

    def _tree(self, request: Request) -> tuple[_cgroupfs.Tree, tuple[str, ...], _cgroupfs.Totals] | str:
        parent = request.parent
        if parent not in self._trees:
            tree = _cgroupfs.find_tree(parent)
            if isinstance(tree, str):
                self._trees[parent] = tree
            else:
                try:
                    for stale in _cgroupfs.stale_owners(tree):  # left by a zygote that was killed
                        self._sweep(stale)
                    totals = totals_for(tree, request)  # the host's settings: the same for every worker
                    self._trees[parent] = (tree, _cgroupfs.owner_dirs(tree, os.getpid(), totals), totals)
                except OSError as exc:
                    self._trees[parent] = f"{tree.description}: {exc}"
        return self._trees[parent]

    def _sweep(self, owner: str) -> None:
        for name in os.listdir(owner):
            group = (os.path.join(owner, name),)
            if os.path.isdir(group[0]):
                _cgroupfs.kill(group)
                _cgroupfs.remove(group)
        _cgroupfs.remove((owner,))

    def place(self, name: str, request: Request) -> CgroupPlacement:
        """Make the group for worker `name` (call before the fork). Never raises: a group that
        cannot be made is a placement with no dirs and the reason, which the layer reports."""
        required = request.mode == "required"
        if request.mode == "off":
            return CgroupPlacement(note="off (worker_cgroups = off)")
        found = self._tree(request)
        if isinstance(found, str):
            return CgroupPlacement(required=required, note=found)
        tree, owners, totals = found
        limits = _cgroupfs.within(_cgroupfs.Limits(request.cpu_quota_percent, request.memory_bytes,
                                                   request.pids_max), totals)
        try:
            dirs = _cgroupfs.create(tree, owners, name, limits)
        except (OSError, ValueError) as exc:
            return CgroupPlacement(required=required, note=f"{tree.description}: making {name}: {exc}")
        self._unowned.append(dirs)
        return CgroupPlacement(dirs=dirs, required=required, note=f"v{tree.version}")

    def adopt(self, pid: int, placement: CgroupPlacement) -> None:
        """Remember that worker `pid` owns this placement's group (call after the fork)."""
        if placement.dirs:
            self._unowned.remove(placement.dirs)
            self._by_pid[pid] = placement.dirs

    def release(self, pid: int) -> tuple[int, str]:
        """After reaping `pid`: kill what is left in its group and remove the group. Returns the
        number of OOM kills the group saw (0 when it had none or no memory hierarchy) and, when
        there were any, whose limit was reached (`_cgroupfs.oom_limit`: "own", "total" or "")."""
        dirs = self._by_pid.pop(pid, None)
        if dirs is None:
            return 0, ""
        ooms = _cgroupfs.oom_kills(dirs)
        limit = _cgroupfs.oom_limit(dirs) if ooms else ""
        self._discard(dirs)
        for busy in self._busy[:]:
            self._busy.remove(busy)
            self._discard(busy)
        return ooms, limit

    def close(self) -> None:
        """Release every group (killing what is in it) and remove this process's owner directories."""
        for pid in list(self._by_pid):
            self.release(pid)
        for dirs in self._unowned + self._busy:
            self._discard(dirs)
        for found in self._trees.values():
            if not isinstance(found, str):
                _cgroupfs.remove(found[1])
        self._trees.clear()

    def _discard(self, dirs: tuple[str, ...]) -> None:
        try:
            _cgroupfs.kill(dirs)
            left = _cgroupfs.remove(dirs)
        except OSError:
            left = list(dirs)  # retried at the next release
        if left:
            self._busy.append(tuple(left))


def prepare(policy: Policy, _shared: None) -> CgroupPlacement:
    return policy.cgroup


def _join(dirs: tuple[str, ...]) -> None:
    pid = str(os.getpid())
    for group in dirs:
        fd = os.open(os.path.join(group, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, pid.encode())
        finally:
            os.close(fd)


def _members(dirs: tuple[str, ...]) -> list[str]:
    """Which of `dirs` list this process, per /proc/self/cgroup."""
    with open("/proc/self/cgroup") as f:
        own = [line.split(":", 2)[2].strip() for line in f]
    return [group for group in dirs if any(group.endswith(path) and path != "/" for path in own)]


def apply(placement: CgroupPlacement) -> LayerResult:
    if not placement.dirs:
        if placement.required:
            return LayerResult.failed(NAME, f"required but unavailable: {placement.note}")
        return LayerResult.not_requested(NAME, placement.note)
    try:
        _join(placement.dirs)
        joined = _members(placement.dirs)
    except OSError as exc:
        return LayerResult.failed(NAME, f"joining {placement.dirs[0]}: {exc}")
    if len(joined) != len(placement.dirs):
        missing = sorted(set(placement.dirs) - set(joined))
        return LayerResult.failed(NAME, f"not a member of {', '.join(missing)} after joining")
    limits = _cgroupfs.read_limits(placement.dirs)
    owners = tuple(os.path.dirname(group) for group in placement.dirs)
    totals = _cgroupfs.read_limits(owners)
    group, owner = os.path.basename(placement.dirs[0]), os.path.basename(owners[0])
    return LayerResult.ok(NAME, f"cgroup {placement.note} group {group}: "
                                + ", ".join(limits[key] for key in sorted(limits))
                                + f"; all workers ({owner}): " + ", ".join(totals[key] for key in sorted(totals)))


def probe_for(parent: str, request: Request | None = None) -> LayerProbe:
    """`probe` for groups made under an operator-named `parent` (setting cgroup_parent); with the
    host's `request`, also the totals all its workers would get there."""
    tree = _cgroupfs.find_tree(parent)
    if isinstance(tree, str):
        return LayerProbe(NAME, False, tree)
    detail = (f"{tree.description}; controllers {', '.join(_cgroupfs.CONTROLLERS)}; "
              f"groups can be made by uid {os.geteuid()}")
    if request is not None:
        try:
            detail += "; " + describe_totals(totals_for(tree, request))
        except OSError as exc:
            detail += f"; totals unknown: {exc}"
    return LayerProbe(NAME, True, detail)


def probe() -> LayerProbe:
    return probe_for("")


LAYER: Layer[None, CgroupPlacement] = Layer(NAME, no_share, prepare, apply, probe)
