"""Each confinement layer holds against the attack it exists for.

Every test starts a fresh interpreter running `_confined_probe.py`, which applies the full strict
confinement exactly as a worker does, attempts ONE attack and reports over a pipe. Each test
asserts that the attack ran ("attempted" came back), that it failed the way the responsible layer
makes it fail, and that ordinary work (imports, threads, asyncio, tempfile, sqlite, zoneinfo,
randomness) still succeeds afterwards.

Linux only. As root the probe drops to uid 65534, which must be able to read the interpreter's
runtime: when this venv's Python lives under a 0700 home (pyenv in /root), the probe runs the
system Python of the same minor version with this venv's site-packages instead, or, if there is
none, this venv's base interpreter hard-linked into a directory under /tmp that uid 65534 can reach.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugbox.confine import _cgroupfs
from plugbox.confine.cgroups import Groups, Request
from plugbox.confine.credentials import unreachable_for
from plugbox.confine.policy import NOBODY

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="confinement layers are Linux-only")

PROBE = Path(__file__).with_name("_confined_probe.py")
# The probe's cgroup is made here, as the zygote makes a worker's: before the process starts.
GROUPS = Groups()
PROBE_CGROUP = Request(mode="required", cpu_quota_percent=100, memory_bytes=512 << 20, pids_max=64)
IS_ROOT = os.geteuid() == 0
EXPECTED_ORDER = ["session", "cgroups", "fds", "env", "rlimits", "userns", "scratch", "credentials", "namespaces",
                  "nnp", "landlock", "seccomp"]
BENIGN = {
    "json_roundtrip",
    "thread",
    "asyncio_loop",
    "uvloop_loop",
    "tempfile_in_scratch",
    "sqlite_memory",
    "zoneinfo_lookup",
    "randomness",
    "stdlib_imports",
}


def _runtime_readable(prefix: str) -> bool:
    return not IS_ROOT or not unreachable_for(NOBODY, NOBODY, [prefix])


def _interpreter() -> tuple[str, str | None]:
    """(python, extra site dir): this venv's Python if uid 65534 can read its stdlib, else the
    system Python of the same minor version with the venv's site-packages added."""
    if _runtime_readable(sysconfig.get_paths()["stdlib"]):
        return sys.executable, None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = f"/usr/bin/python{version}"
    if os.path.exists(system) and _runtime_readable(f"/usr/lib/python{version}"):
        return system, sysconfig.get_paths()["purelib"]
    copy = _linked_copy_of_runtime()
    if copy is not None:
        return copy, sysconfig.get_paths()["purelib"]
    pytest.skip(f"no Python runtime readable by uid {NOBODY}: {sys.base_prefix} is not, there is no "
                f"{system}, and it cannot be hard-linked under /tmp")


@functools.cache
def _linked_copy_of_runtime() -> str | None:
    """This venv's base interpreter, hard-linked (no data copied) under a 0755 directory in /tmp, so
    uid 65534 can reach it; removed when the tests end. None when the link fails (another file
    system) or the copy is still not readable."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(tempfile.mkdtemp(prefix="plugbox-runtime-", dir="/tmp"))
    base.chmod(0o755)
    atexit.register(subprocess.run, ["rm", "-rf", str(base)], check=False)
    copy = base / "python"
    linked = subprocess.run(["cp", "-al", sys.base_prefix, str(copy)], capture_output=True, check=False)
    python = copy / "bin" / f"python{version}"
    if linked.returncode != 0 or not python.exists() or not _runtime_readable(str(copy / "lib" / f"python{version}")):
        return None
    return str(python)


@dataclass
class Sandbox:
    base: Path
    scratch: Path
    plugin: Path
    data: Path
    canary: Path
    fds: list[int] = field(default_factory=list)


@pytest.fixture(scope="module", autouse=True)
def _probe_groups() -> Iterator[None]:
    yield
    GROUPS.close()  # this test process owns the probes' groups, as a zygote owns its workers'


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Under /tmp with mode 0755, not pytest's 0700 tmp_path: uid 65534 must be able to get in, so
    # that every denial below comes from a confinement layer and not from plain file permissions.
    base = Path(tempfile.mkdtemp(prefix="plugbox-sec-", dir="/tmp"))
    base.chmod(0o755)
    scratch, plugin, data = base / "scratch", base / "plugin", base / "data"
    scratch.mkdir(mode=0o700)
    plugin.mkdir()
    plugin.chmod(0o777)  # world-writable on purpose: only Landlock keeps the worker out
    (plugin / "plugin.py").write_text("VALUE = 1\n")
    data.mkdir()
    data.chmod(0o755)
    canary = data / "canary.txt"
    canary.write_text("host secret\n")
    canary.chmod(0o644)
    if IS_ROOT:
        os.chown(scratch, NOBODY, NOBODY)
    box = Sandbox(base, scratch, plugin, data, canary)
    yield box
    for fd in box.fds:
        os.close(fd)
    subprocess.run(["rm", "-rf", str(base)], check=True)


@dataclass
class Run:
    returncode: int
    records: list[dict[str, Any]]

    def stage(self, name: str) -> dict[str, Any]:
        matches = [r for r in self.records if r["stage"] == name]
        assert matches, f"no {name!r} record in {self.records}"
        return matches[0]

    @property
    def attempted(self) -> bool:
        return any(r["stage"] == "attempted" for r in self.records)

    @property
    def outcome(self) -> dict[str, Any]:
        return self.stage("outcome")

    @property
    def layers(self) -> list[list[Any]]:
        layers: list[list[Any]] = self.stage("confined")["report"]
        return layers

    def assert_benign_work_ok(self) -> None:
        results = self.stage("benign")["results"]
        assert set(results) == BENIGN
        assert all(v == "ok" for v in results.values()), results


def confined(box: Sandbox, attack: str, arg: dict[str, Any] | None = None, *, keep: tuple[int, ...] = (),
             netns: bool = False, pass_fds: tuple[int, ...] = (), plugin: Path | None = None,
             may_crash: bool = False, without: tuple[str, ...] = (), cgroup: Request = PROBE_CGROUP,
             after: Callable[[tuple[str, ...]], None] | None = None) -> Run:
    """Run the probe; `after(group dirs)` sees its cgroup once it exited, before the group goes."""
    python, site = _interpreter()
    read_end, write_end = os.pipe()
    placement = GROUPS.place(f"probe-{uuid.uuid4().hex[:12]}", cgroup)
    config = {
        "result_fd": write_end,
        "scratch": str(box.scratch),
        "plugin": str(plugin or box.plugin),
        "attack": attack,
        "arg": arg or {},
        "keep": list(keep),
        "netns": netns,
        "site": site,
        "without": list(without),
        "cgroup": {"dirs": list(placement.dirs), "required": placement.required, "note": placement.note},
    }
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PLUGBOX_API_KEY": "host-secret-key"}
    try:
        proc = subprocess.Popen(
            [python, str(PROBE), json.dumps(config)],
            pass_fds=(write_end, *keep, *pass_fds),
            env=env,
            cwd=str(box.base),
        )
    finally:
        os.close(write_end)
    GROUPS.adopt(proc.pid, placement)
    try:
        returncode = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if after is not None:
            after(placement.dirs)
        GROUPS.release(proc.pid)
    with os.fdopen(read_end, "rb") as r:
        lines = r.read().decode().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    crashed = [r for r in records if r["stage"] == "crashed"]
    assert may_crash or not crashed, crashed
    return Run(returncode, records)


def assert_denied(run: Run, error: str, errno_: int | None = None) -> None:
    assert run.attempted, "the attack never ran"
    assert run.returncode == 0, run.records
    assert run.outcome["ok"] is False, f"attack succeeded: {run.outcome}"
    assert run.outcome["error"] == error, run.outcome
    if errno_ is not None:
        assert run.outcome["errno"] == errno_, run.outcome
    run.assert_benign_work_ok()


# --- the report -------------------------------------------------------------------------------------


def test_every_layer_applies_in_order_and_benign_work_runs(sandbox: Sandbox) -> None:
    run = confined(sandbox, "none")
    assert [layer[0] for layer in run.layers] == EXPECTED_ORDER
    for name, applied, skipped, detail in run.layers:
        if name == "namespaces" or (name == "userns" and IS_ROOT):  # opt-in; a root host has uids to give
            assert (applied, skipped) == (False, True), detail
        else:
            assert applied, f"{name}: {detail}"
    assert run.outcome["ok"] is True
    run.assert_benign_work_ok()


def test_cgroups_report_names_the_limits_the_kernel_holds(sandbox: Sandbox) -> None:
    run = confined(sandbox, "none", cgroup=Request(mode="required", cpu_quota_percent=30, memory_bytes=200 << 20,
                                                   pids_max=20))
    detail = next(layer[3] for layer in run.layers if layer[0] == "cgroups")
    assert "pids.max=20" in detail
    assert "cpu.max=30000 100000" in detail or "cpu.cfs_quota_us=30000" in detail
    assert f"={200 << 20}" in detail
    run.assert_benign_work_ok()


def test_required_cgroups_that_cannot_be_made_run_nothing(sandbox: Sandbox) -> None:
    run = confined(sandbox, "none", may_crash=True,
                   cgroup=Request(mode="required", parent="/no-such-parent", memory_bytes=1 << 30, pids_max=9))
    crash = run.stage("crashed")
    assert "ConfinementError" in crash["error"] and "'cgroups'" in crash["error"]
    assert "no-such-parent" in crash["error"]
    assert not run.attempted and run.returncode == 1


def test_auto_cgroups_that_cannot_be_made_are_reported_skipped(sandbox: Sandbox) -> None:
    run = confined(sandbox, "none", cgroup=Request(mode="auto", parent="/no-such-parent", memory_bytes=1 << 30,
                                                   pids_max=9))
    assert run.layers[1][:3] == ["cgroups", False, True]
    assert "no-such-parent" in run.layers[1][3]
    assert run.outcome["ok"] is True


def test_threads_beyond_pids_max_fail_to_start(sandbox: Sandbox) -> None:
    events: list[str] = []
    run = confined(sandbox, "many_threads", {"max": 1000}, after=lambda dirs: events.extend(_pids_events(dirs)),
                   cgroup=Request(mode="required", cpu_quota_percent=100, memory_bytes=512 << 20, pids_max=6))
    value = run.outcome["value"]
    assert value["started"] < 6 and value["stopped_by"], value  # the main thread is one of the six tasks
    assert any(line.startswith("max ") and int(line.split()[1]) > 0 for line in events), events
    run.assert_benign_work_ok()


def test_memory_beyond_the_cgroup_limit_is_oom_killed_in_its_group(sandbox: Sandbox) -> None:
    """The address-space limit (256 MiB) is above the group's 64 MiB: only the cgroup can stop it."""
    kills: list[int] = []
    run = confined(sandbox, "memory_bomb", may_crash=True, after=lambda dirs: kills.append(_cgroupfs.oom_kills(dirs)),
                   cgroup=Request(mode="required", cpu_quota_percent=100, memory_bytes=64 << 20, pids_max=64))
    assert run.attempted
    assert run.returncode == -signal.SIGKILL
    assert kills == [1]


def _pids_events(dirs: tuple[str, ...]) -> list[str]:
    for group in dirs:
        events = Path(group, "pids.events")
        if events.exists():
            return events.read_text().splitlines()
    return []


def test_strict_mode_runs_nothing_when_a_layer_cannot_apply(sandbox: Sandbox) -> None:
    run = confined(sandbox, "none", plugin=sandbox.base / "no-such-plugin", may_crash=True)
    crash = run.stage("crashed")
    assert "ConfinementError" in crash["error"] and "'landlock'" in crash["error"]
    assert not run.attempted
    assert run.returncode == 1


def test_environment_is_scrubbed_and_credentials_dropped(sandbox: Sandbox) -> None:
    run = confined(sandbox, "environment")
    assert run.attempted
    value = run.outcome["value"]
    assert value["environ"] == {
        "LANG": "C.UTF-8",
        "TMPDIR": str(sandbox.scratch),
        "HOME": str(sandbox.scratch),
        "PATH": "/usr/bin:/bin",
    }
    assert value["cwd"] == str(sandbox.scratch)
    if IS_ROOT:
        assert value["uid"] == [NOBODY] * 3
        assert value["gid"] == [NOBODY] * 3
    run.assert_benign_work_ok()


# --- Landlock: filesystem ------------------------------------------------------------------------------


def test_host_data_file_cannot_be_read(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "read_file", {"path": str(sandbox.canary)}), "PermissionError", 13)


def test_etc_passwd_cannot_be_read(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "read_file", {"path": "/etc/passwd"}), "PermissionError", 13)


def test_init_environ_cannot_be_read(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "read_file", {"path": "/proc/1/environ"}), "PermissionError", 13)


def test_parent_environ_cannot_be_read(sandbox: Sandbox) -> None:
    run = confined(sandbox, "read_file", {"path": f"/proc/{os.getpid()}/environ"})
    assert_denied(run, "PermissionError", 13)


def test_plugin_dir_is_read_only(sandbox: Sandbox) -> None:
    run = confined(sandbox, "write_file", {"path": str(sandbox.plugin / "evil.py")})
    assert_denied(run, "PermissionError", 13)
    assert not (sandbox.plugin / "evil.py").exists()


def test_plugin_dir_is_readable(sandbox: Sandbox) -> None:
    run = confined(sandbox, "read_file", {"path": str(sandbox.plugin / "plugin.py")})
    assert (run.outcome["ok"], run.outcome["value"]) == (True, "VALUE = 1\n")
    run.assert_benign_work_ok()


# --- seccomp: sockets, processes, kernel attack surface ----------------------------------------------


def test_inet_socket_cannot_be_created(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "socket_create", {"family": socket.AF_INET}), "PermissionError", 1)


def test_unix_socket_cannot_be_created(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "socket_create", {"family": socket.AF_UNIX}), "PermissionError", 1)


def test_datagram_socketpair_is_refused(sandbox: Sandbox) -> None:
    run = confined(sandbox, "socketpair", {"type": socket.SOCK_DGRAM})
    assert_denied(run, "PermissionError", 1)


def test_stream_socketpair_still_works_for_asyncio(sandbox: Sandbox) -> None:
    run = confined(sandbox, "socketpair", {"type": socket.SOCK_STREAM})
    assert run.outcome["value"] == "created"
    run.assert_benign_work_ok()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.setblocking(False)
        yield srv


def assert_no_connection(srv: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        srv.accept()[0].close()


def test_loopback_tcp_connect_is_refused(sandbox: Sandbox, listener: socket.socket) -> None:
    run = confined(sandbox, "connect_tcp", {"port": listener.getsockname()[1]})
    assert_denied(run, "PermissionError", 1)
    assert_no_connection(listener)


def test_inherited_tcp_socket_cannot_connect(sandbox: Sandbox, listener: socket.socket) -> None:
    # seccomp cannot see a socket created before it; Landlock's TCP rules still refuse (EACCES).
    smuggled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sandbox.fds.append(smuggled.detach())
    fd = sandbox.fds[-1]
    run = confined(sandbox, "connect_inherited_tcp", {"fd": fd, "port": listener.getsockname()[1]}, keep=(fd,))
    assert_denied(run, "PermissionError", 13)
    assert_no_connection(listener)


def test_inherited_tcp_socket_cannot_bind(sandbox: Sandbox) -> None:
    smuggled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sandbox.fds.append(smuggled.detach())
    fd = sandbox.fds[-1]
    assert_denied(confined(sandbox, "bind_inherited_tcp", {"fd": fd}, keep=(fd,)), "PermissionError", 13)


def test_host_abstract_unix_socket_is_out_of_scope(sandbox: Sandbox) -> None:
    name = f"plugbox-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as host_side:
        host_side.bind("\0" + name)
        host_side.setblocking(False)
        smuggled = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sandbox.fds.append(smuggled.detach())
        fd = sandbox.fds[-1]
        run = confined(sandbox, "sendto_abstract_unix", {"fd": fd, "name": name}, keep=(fd,))
        assert_denied(run, "PermissionError", 1)
        with pytest.raises(BlockingIOError):
            host_side.recv(64)


def test_fork_is_refused(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "fork"), "PermissionError", 1)


def test_raw_clone_of_a_process_is_refused(sandbox: Sandbox) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the probe issues the x86_64 clone number")
    assert_denied(confined(sandbox, "clone_new_process"), "PermissionError", 1)


def test_subprocess_is_refused(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "subprocess_run"), "PermissionError", 1)


def test_exec_is_refused(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "execv"), "PermissionError", 1)


def test_ptrace_is_refused(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "ptrace_attach", {"pid": os.getpid()}), "PermissionError", 1)


def test_io_uring_is_refused(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "io_uring_setup"), "PermissionError", 1)


def test_unshare_is_refused(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "unshare_userns"), "PermissionError", 1)


def test_foreign_abi_syscall_kills_the_worker(sandbox: Sandbox) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("x32 is an x86_64 ABI")
    run = confined(sandbox, "x32_syscall")
    assert run.attempted
    assert run.returncode == -signal.SIGSYS
    assert not any(r["stage"] == "outcome" for r in run.records)


# --- signals ---------------------------------------------------------------------------------------------


def test_parent_cannot_be_signalled(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "kill", {"pid": os.getpid()}), "PermissionError", 1)
    # (the test process received no SIGTERM: pytest would have died here)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A process running as the worker's uid, outside its Landlock domain."""
    as_worker: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if IS_ROOT else {}
    proc = subprocess.Popen(["sleep", "30"], **as_worker)
    yield proc
    proc.kill()
    proc.wait()


def test_same_uid_process_outside_the_domain_cannot_be_signalled(
    sandbox: Sandbox, victim: subprocess.Popen[bytes]
) -> None:
    # Not protected by uids (same uid as the worker): only Landlock's signal scope stops this.
    assert_denied(confined(sandbox, "kill", {"pid": victim.pid}), "PermissionError", 1)
    assert victim.poll() is None


# --- credentials and rlimits ---------------------------------------------------------------------------


@pytest.mark.skipif(not IS_ROOT, reason="only a root-started worker has root to lose")
def test_root_cannot_be_regained(sandbox: Sandbox) -> None:
    assert_denied(confined(sandbox, "setuid_root"), "PermissionError", 1)


def test_address_space_limit_cannot_be_raised(sandbox: Sandbox) -> None:
    run = confined(sandbox, "raise_rlimit_as")
    assert_denied(run, "ValueError")
    assert "not allowed to raise" in run.outcome["detail"]


def test_memory_bomb_ends_in_memory_error_not_host_death(sandbox: Sandbox) -> None:
    run = confined(sandbox, "memory_bomb")
    assert_denied(run, "MemoryError")


def test_threads_start_but_are_bounded_by_the_address_space(sandbox: Sandbox) -> None:
    run = confined(sandbox, "many_threads", {"max": 1000})
    assert run.attempted
    value = run.outcome["value"]
    assert 8 <= value["started"] < 200, value
    assert value["stopped_by"] is not None
    run.assert_benign_work_ok()


# --- fds ---------------------------------------------------------------------------------------------------


def test_inherited_fd_is_closed(sandbox: Sandbox) -> None:
    leaked = os.open(sandbox.canary, os.O_RDONLY)  # no O_CLOEXEC, inherited on purpose
    os.set_inheritable(leaked, True)
    sandbox.fds.append(leaked)
    run = confined(sandbox, "use_inherited_fd", {"fd": leaked}, pass_fds=(leaked,))
    assert_denied(run, "OSError", 9)


# --- optional namespaces -----------------------------------------------------------------------------


def _userns_available() -> bool:
    # The kernel's answer, not this host's: the probe here runs a runtime the unprivileged uid can
    # read, so the uid drop (and with it the namespace mapping) works even where this host's own
    # workers keep uid 0.
    from plugbox.confine import namespaces

    return namespaces.kernel_refusal() is None


@pytest.mark.skipif(not _userns_available(), reason="unprivileged user namespaces are disabled")
def test_netns_layer_applies_when_requested(sandbox: Sandbox) -> None:
    run = confined(sandbox, "environment", netns=True)
    layers = {name: (applied, detail) for name, applied, _skipped, detail in run.layers}
    assert layers["namespaces"][0], layers["namespaces"]
    if IS_ROOT:
        assert run.outcome["value"]["uid"] == [NOBODY] * 3
    run.assert_benign_work_ok()


# --- the tests have teeth: remove the responsible layer and the same attack lands -------------------------


def test_without_seccomp_a_socket_can_be_created(sandbox: Sandbox) -> None:
    run = confined(sandbox, "socket_create", {"family": socket.AF_INET}, without=("seccomp",))
    assert run.outcome["ok"] is True, run.outcome


def test_without_landlock_the_host_data_file_is_readable(sandbox: Sandbox) -> None:
    run = confined(sandbox, "read_file", {"path": str(sandbox.canary)}, without=("landlock",))
    assert run.outcome["value"] == "host secret\n"


def test_without_landlock_the_plugin_dir_is_writable(sandbox: Sandbox) -> None:
    run = confined(sandbox, "write_file", {"path": str(sandbox.plugin / "evil.py")}, without=("landlock",))
    assert run.outcome["ok"] is True and (sandbox.plugin / "evil.py").exists()


def test_without_landlock_an_inherited_tcp_socket_connects(sandbox: Sandbox, listener: socket.socket) -> None:
    smuggled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sandbox.fds.append(smuggled.detach())
    fd = sandbox.fds[-1]
    port = listener.getsockname()[1]
    run = confined(sandbox, "connect_inherited_tcp", {"fd": fd, "port": port}, keep=(fd,), without=("landlock",))
    assert run.outcome["ok"] is True, run.outcome
    listener.setblocking(True)
    listener.settimeout(5)
    listener.accept()[0].close()


def test_without_landlock_a_same_uid_process_can_be_signalled(
    sandbox: Sandbox, victim: subprocess.Popen[bytes]
) -> None:
    run = confined(sandbox, "kill", {"pid": victim.pid}, without=("landlock",))
    assert run.outcome["ok"] is True, run.outcome
    assert victim.wait(timeout=5) == -signal.SIGTERM


def test_without_fds_an_inherited_fd_stays_usable(sandbox: Sandbox) -> None:
    leaked = os.open(sandbox.canary, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    sandbox.fds.append(leaked)
    run = confined(sandbox, "use_inherited_fd", {"fd": leaked}, pass_fds=(leaked,), without=("fds",))
    assert run.outcome["value"] == len("host secret\n")
