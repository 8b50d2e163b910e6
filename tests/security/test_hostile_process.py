"""Hostile plugins against processes and IPC: signals to the host and the zygote, ptrace and
cross-process memory reads, new processes (fork, vfork, clone, exec, posix_spawn, subprocess,
fork and thread bombs), inherited file descriptors, privilege and namespace escapes, kernel
attack surface (keyrings, bpf, perf, userfaultfd), and a foreign-ABI syscall.

Landlock's signal scope keeps signals inside the worker's domain (EPERM, even at the same uid);
seccomp refuses new processes, exec, ptrace, process_vm_*, namespaces, raising rlimits and the
kernel surfaces (EPERM), and kills a foreign-ABI syscall; the fds layer closes every inherited fd.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
import sys

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status

from .conftest import Attack, alive, assert_refused, reported, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]

# -- signals --------------------------------------------------------------------------------------

SIGNALS = {
    "kill_host_sigkill": "os.kill(cfg['host'], signal.SIGKILL)",
    "kill_host_sigterm": "os.kill(cfg['host'], signal.SIGTERM)",
    "tgkill_host_sigterm": "syscall(234, cfg['host'], cfg['host'], int(signal.SIGTERM))",  # tgkill
    "sigqueue_host_sigterm": "syscall(129, cfg['host'], int(signal.SIGTERM), ctypes.create_string_buffer(128))",
    "killpg_host_sigterm": "os.killpg(os.getpgid(cfg['host']), signal.SIGTERM)",
    "kill_zygote_sigkill": "os.kill(cfg['zygote'], signal.SIGKILL)",
    # kill(-1) returns 0 even when every signal was refused: the handler below is the witness.
    # SIGWINCH because its default action is to do nothing, should it reach anyone else.
    "kill_everyone_sigwinch": "os.kill(-1, signal.SIGWINCH)",
    "pidfd_signal_host": "syscall(424, syscall(434, cfg['host'], 0), int(signal.SIGTERM), None, 0)",
}


@pytest.mark.parametrize("how", sorted(SIGNALS))
async def test_hostile_signal_outside_the_domain_is_refused(attack: Attack, host: Host, how: str) -> None:
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, frame: received.append(sig))
                for sig in (signal.SIGTERM, signal.SIGWINCH)}
    try:
        run = await attack.run(f"""
            import signal
            def attack(ctx, cfg):
                {SIGNALS[how]}
                return "signalled"
        """, {"host": os.getpid(), "zygote": host.zygote.pid})
        await asyncio.sleep(0.05)  # a signal that got through has run its handler by now
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if how == "kill_everyone_sigwinch":
        assert run.result["ran"] is True  # kill(-1) says 0 even if every target refused it
    else:
        assert_refused(run.result, errno.EPERM, errno.ESRCH)
    assert received == [], "the host received the plugin's signal"
    assert host.zygote.alive
    await attack.aftermath()


# -- reading another process ----------------------------------------------------------------------

async def test_hostile_ptrace_attach_to_the_host_is_refused(attack: Attack) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            syscall(101, 16, cfg["host"], 0, 0)  # ptrace(PTRACE_ATTACH, host)
            return "attached"
    """, {"host": os.getpid()})
    assert_refused(run.result, errno.EPERM)
    await attack.aftermath()


async def test_hostile_process_vm_readv_of_the_host_environment_is_refused(attack: Attack) -> None:
    """Reads the host's memory where its environment lives (the canary is there)."""
    environ = ctypes_environ_address()
    run = await attack.run("""
        def attack(ctx, cfg):
            buf = ctypes.create_string_buffer(65536)
            local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 65536)
            remote = (ctypes.c_void_p * 2)(cfg["addr"], 65536)
            n = syscall(310, cfg["host"], local, 1, remote, 1, 0)  # process_vm_readv
            return buf.raw[:n].decode(errors="replace")
    """, {"host": os.getpid(), "addr": environ})
    assert_refused(run.result, errno.EPERM)
    attack.assert_no_leak(run)
    await attack.aftermath()


def ctypes_environ_address() -> int:
    import ctypes

    libc = ctypes.CDLL(None)
    environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
    return ctypes.cast(environ[0], ctypes.c_void_p).value or 0


# -- new processes --------------------------------------------------------------------------------

SPAWN = {
    "os_fork": "pid = os.fork()\n    if pid == 0: os._exit(0)",
    "subprocess_run": "import subprocess\n    subprocess.run(['/bin/cat', cfg['canary']], check=True)",
    "os_system": "import subprocess\n    rc = os.system('cat ' + cfg['canary'])\n"
                 "    if rc != 0: raise PermissionError(errno.EPERM, f'system() returned {rc}')",
    "os_execv": "os.execv('/bin/cat', ['cat', cfg['canary']])",
    "posix_spawn": "os.posix_spawn('/bin/cat', ['cat', cfg['canary']], {})",
    "vfork_syscall": "pid = syscall(58)\n    if pid == 0: _libc._exit(0)",  # vfork
    "clone_process": "pid = syscall(56, int(signal.SIGCHLD), 0, 0, 0, 0)\n    if pid == 0: _libc._exit(0)",
    # CLONE_THREAD | CLONE_VM | CLONE_SIGHAND | CLONE_NEWUSER: a "thread" in a new namespace
    "clone_thread_newuser": "syscall(56, 0x10000 | 0x100 | 0x800 | 0x10000000, 0, 0, 0, 0)",
    "multiprocessing": "import multiprocessing\n    p = multiprocessing.get_context('fork').Process(target=print)\n"
                       "    p.start()\n    p.join()",
}


@pytest.mark.parametrize("how", sorted(SPAWN))
async def test_hostile_new_process_is_refused(attack: Attack, canary: object, how: str) -> None:
    code = "import signal\ndef attack(ctx, cfg):\n    " + SPAWN[how] + "\n    return 'spawned'\n"
    run = await attack.run(code, {"canary": str(canary.data_file)})  # type: ignore[attr-defined]
    assert_refused(run.result, errno.EPERM)
    attack.assert_no_leak(run)
    await attack.aftermath()


async def test_hostile_clone3_answers_enosys(attack: Attack) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            args = (ctypes.c_uint64 * 11)()
            args[4] = 17  # exit_signal = SIGCHLD: a new process
            pid = syscall(435, args, ctypes.sizeof(args))
            if pid == 0:
                _libc._exit(0)
            return pid
    """)
    assert_refused(run.result, errno.ENOSYS, errno.EPERM)
    await attack.aftermath()


async def test_hostile_fork_bomb_leaves_no_process(attack: Attack) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            made, refused = 0, 0
            for _ in range(2000):
                try:
                    pid = os.fork()
                except OSError as exc:
                    refused += 1
                    last = exc
                    continue
                if pid == 0:
                    while True:
                        os.fork()
                made += 1
            if made:
                return {"made": made}
            raise PermissionError(last.errno, f"{refused} forks refused")
    """)
    assert_refused(run.result, errno.EPERM)
    assert "2000 forks refused" in run.result["error"]
    await attack.aftermath()


async def test_hostile_thread_bomb_is_bounded_and_the_worker_still_answers(attack: Attack) -> None:
    entry_run, _outcome = await attack.run_in_hook("""
        import threading
        HOLD = threading.Event()
        def attack(ctx, cfg):
            threads = []
            try:
                for _ in range(5000):
                    t = threading.Thread(target=HOLD.wait, daemon=True)
                    t.start()
                    threads.append(t)
            except (RuntimeError, MemoryError) as exc:
                raise MemoryError(f"stopped after {len(threads)} threads: {exc}") from None
            return len(threads)
    """)
    result = entry_run.result
    assert_refused(result, types=("MemoryError",))
    started = int(result["error"].split("after ")[1].split()[0])
    assert 0 < started < 5000
    # The worker, holding all those threads, still answers the host.
    again = await attack.fire("m2")
    assert reported(again)["outcome"]["ran"] is True and not again.timed_out
    assert entry_run.entry.status == Status.ENABLED
    await attack.aftermath()


# -- file descriptors -----------------------------------------------------------------------------

def _fd_identities(pid: int) -> set[tuple[int, int]]:
    out = set()
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            st = os.stat(os.path.join(base, name))
        except OSError:
            continue
        if _comparable(st.st_mode):
            out.add((st.st_dev, st.st_ino))
    return out


def _comparable(mode: int) -> bool:
    """Char devices (/dev/null) and anonymous inodes (every epoll/eventfd shares one) say nothing
    about where an fd came from; files, pipes and sockets have inodes of their own."""
    return not stat.S_ISCHR(mode) and stat.S_IFMT(mode) != 0


async def test_hostile_inherited_fds_hold_nothing_of_the_host(attack: Attack, host: Host) -> None:
    """The worker tries every fd 0..1023: the only ones open are /dev/null on 0-2, its channel and
    what its own event loop made after confinement — none is a file or socket of the host's or of
    the zygote's."""
    run = await attack.run("""
        import stat
        def attack(ctx, cfg):
            chan = channel_fd(ctx)
            found = []
            for fd in range(1024):
                try:
                    st = os.fstat(fd)
                except OSError:
                    continue
                found.append({"fd": fd, "mode": st.st_mode, "dev": st.st_dev, "ino": st.st_ino,
                              "rdev": st.st_rdev, "channel": fd == chan})
            return found
    """)
    fds = run.result["value"]
    assert [f["fd"] for f in fds if f["channel"]] and sum(f["channel"] for f in fds) == 1
    assert len(fds) <= 16, fds
    host_side = _fd_identities(os.getpid()) | _fd_identities(host.zygote.pid)
    worker_side = {(f["dev"], f["ino"]) for f in fds if _comparable(f["mode"])}
    shared = worker_side & host_side
    assert not shared, f"the worker holds an fd of the host or the zygote: {shared} in {fds}"
    assert not [f for f in fds if stat.S_ISREG(f["mode"]) or stat.S_ISDIR(f["mode"])], fds
    null = os.stat("/dev/null").st_rdev
    assert [f["rdev"] for f in fds if f["fd"] in (0, 1, 2)] == [null, null, null]
    await attack.aftermath()


# -- privileges, namespaces, kernel surface -------------------------------------------------------

PRIVILEGED = {
    "setrlimit_as": "syscall(160, 9, (ctypes.c_uint64 * 2)(2**64 - 1, 2**64 - 1))",  # setrlimit(RLIMIT_AS, inf)
    "prlimit_raise_nofile": "syscall(302, 0, 7, (ctypes.c_uint64 * 2)(1 << 20, 1 << 20), None)",  # prlimit64
    "prlimit_host": "syscall(302, cfg['host'], 7, (ctypes.c_uint64 * 2)(1, 1), None)",
    "unshare_user": "syscall(272, 0x10000000)",  # unshare(CLONE_NEWUSER)
    "unshare_net": "syscall(272, 0x40000000)",  # unshare(CLONE_NEWNET)
    "setns": "fd = os.open('/proc/1/ns/mnt', os.O_RDONLY)\n    os.setns(fd)",
    "mount_tmpfs": "syscall(165, b'none', b'/tmp', b'tmpfs', 0, None)",
    "chroot": "os.chroot('.')",
    "keyctl": "syscall(250, 0, -1, 0, 0, 0)",  # keyctl(KEYCTL_GET_KEYRING_ID, session)
    "add_key": "syscall(248, b'user', b'pwn', b'x', 1, -3)",
    "bpf": "syscall(321, 0, ctypes.create_string_buffer(128), 128)",  # BPF_MAP_CREATE
    "perf_event_open": "syscall(298, ctypes.create_string_buffer(128), 0, -1, -1, 0)",
    "userfaultfd": "syscall(323, 0)",
    "init_module": "syscall(175, None, 0, b'')",
    "personality": "syscall(135, 0x0040000)",  # ADDR_NO_RANDOMIZE
    "open_by_handle_at": "syscall(304, -100, ctypes.create_string_buffer(128), 0)",
    "regain_capabilities": "syscall(126, ctypes.create_string_buffer(b'\\x22\\x05\\x08\\x20' + bytes(4)), "
                           "ctypes.create_string_buffer(b'\\xff' * 24))",  # capset, all caps
}


@pytest.mark.parametrize("how", sorted(PRIVILEGED))
async def test_hostile_privileged_or_kernel_surface_call_is_refused(attack: Attack, how: str) -> None:
    code = "def attack(ctx, cfg):\n    " + PRIVILEGED[how] + "\n    return 'done'\n"
    run = await attack.run(code, {"host": os.getpid()})
    # seccomp answers EPERM; setns has nothing to open (/proc is out of reach: EACCES)
    assert_refused(run.result, errno.EPERM, errno.EACCES)
    await attack.aftermath()


# -- a syscall of a foreign ABI kills the worker ----------------------------------------------------

async def test_hostile_foreign_abi_syscall_kills_only_the_worker(attack: Attack, host: Host) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the x32 ABI probe is x86_64-only")
    run, outcome = await attack.run_in_hook("""
        def attack(ctx, cfg):
            return _libc.syscall(0x40000000 | 39)  # x32 getpid: the filter kills the process
    """)
    found, started = run.entry_storage("started")
    assert found and started is True  # the hostile handler did run, up to the syscall
    assert run.entry_storage("result") == (False, None)  # and never got past it
    assert reported(outcome)["id"] == "m1"  # the hook resolved to `continue`, data unchanged
    await wait_for(lambda: any("SIGSYS" in line["message"] for line in run.entry.logs.recent), within=5)
    assert run.pid not in {p for p in _children(host.zygote.pid) if alive(p)}
    await wait_for(lambda: run.entry.status == Status.ENABLED, within=5)  # restarted
    await attack.aftermath()


def _children(ppid: int) -> set[int]:
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.add(int(name))
            except (OSError, IndexError):
                continue
    return out
