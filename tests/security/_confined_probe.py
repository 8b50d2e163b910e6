"""Confine this process like a worker, attempt ONE attack, then check benign work still runs.

Run by tests/security/test_layers.py as `python _confined_probe.py CONFIG_JSON`. It reports over
the fd `result_fd` (kept through confinement, like a worker's channel; stdout is /dev/null by
then), one JSON object per line:

    {"stage": "confined", "report": [...], "apply_ms": float}
    {"stage": "attempted", "attack": name}        written *before* the attack runs
    {"stage": "outcome", "ok": bool, "error": str, "errno": int|null, "value": ...}
    {"stage": "benign", "results": {check: "ok" | error}}
    {"stage": "crashed", "error": repr}          when the probe itself failed (e.g. ConfinementError)

A process killed by the attack (seccomp KILL_PROCESS) stops after "attempted". Only json, os,
sys, time and plugbox.confine are imported before confinement: every other module below is
imported lazily, after it, which is itself part of what the benign checks prove.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

Attack = Callable[[dict[str, Any]], Any]
ATTACKS: dict[str, Attack] = {}


def attack(fn: Attack) -> Attack:
    ATTACKS[fn.__name__] = fn
    return fn


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _raise_errno(result: int, what: str) -> int:
    import ctypes

    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


@attack
def none(arg: dict[str, Any]) -> Any:
    return "nothing attempted"


@attack
def read_file(arg: dict[str, Any]) -> Any:
    with open(arg["path"], "rb") as f:
        return f.read(64).decode(errors="replace")


@attack
def write_file(arg: dict[str, Any]) -> Any:
    with open(arg["path"], "w") as f:
        f.write("pwned")
    return "written"


@attack
def list_dir(arg: dict[str, Any]) -> Any:
    return os.listdir(arg["path"])


@attack
def socket_create(arg: dict[str, Any]) -> Any:
    import socket

    socket.socket(arg["family"], socket.SOCK_STREAM).close()
    return "created"


@attack
def socketpair(arg: dict[str, Any]) -> Any:
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, arg["type"])
    a.close()
    b.close()
    return "created"


@attack
def connect_tcp(arg: dict[str, Any]) -> Any:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect(("127.0.0.1", arg["port"]))
    return "connected"


@attack
def connect_inherited_tcp(arg: dict[str, Any]) -> Any:
    import socket

    s = socket.socket(fileno=arg["fd"])
    s.connect(("127.0.0.1", arg["port"]))
    return "connected"


@attack
def bind_inherited_tcp(arg: dict[str, Any]) -> Any:
    import socket

    s = socket.socket(fileno=arg["fd"])
    s.bind(("127.0.0.1", 0))
    return "bound"


@attack
def sendto_abstract_unix(arg: dict[str, Any]) -> Any:
    import socket

    s = socket.socket(fileno=arg["fd"])
    return s.sendto(b"hello", "\0" + arg["name"])


@attack
def fork(arg: dict[str, Any]) -> Any:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return f"forked {pid}"


@attack
def subprocess_run(arg: dict[str, Any]) -> Any:
    import subprocess

    return subprocess.run(["/bin/true"], check=False).returncode


@attack
def execv(arg: dict[str, Any]) -> Any:
    os.execv("/bin/true", ["true"])


@attack
def kill(arg: dict[str, Any]) -> Any:
    import signal

    os.kill(arg["pid"], signal.SIGTERM)
    return "signalled"


@attack
def ptrace_attach(arg: dict[str, Any]) -> Any:
    import ctypes

    libc = _libc()
    libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
    ptrace_attach = 16
    return _raise_errno(libc.ptrace(ptrace_attach, arg["pid"], None, None), "ptrace")


@attack
def io_uring_setup(arg: dict[str, Any]) -> Any:
    import ctypes

    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    nr_io_uring_setup = 425  # same on x86_64 and aarch64
    return _raise_errno(_libc().syscall(nr_io_uring_setup, 8, params), "io_uring_setup")


@attack
def unshare_userns(arg: dict[str, Any]) -> Any:
    clone_newuser = 0x10000000
    return _raise_errno(_libc().unshare(clone_newuser), "unshare")


@attack
def clone_new_process(arg: dict[str, Any]) -> Any:
    import signal

    nr_clone = 56  # x86_64; a raw clone without CLONE_THREAD, i.e. fork
    pid = _raise_errno(_libc().syscall(nr_clone, int(signal.SIGCHLD), 0, 0, 0, 0), "clone")
    if pid == 0:
        os._exit(0)
    return pid


@attack
def setuid_root(arg: dict[str, Any]) -> Any:
    os.setuid(0)
    return "root again"


@attack
def raise_rlimit_as(arg: dict[str, Any]) -> Any:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    return "raised"


@attack
def memory_bomb(arg: dict[str, Any]) -> Any:
    hoard = []
    try:
        while True:
            hoard.append(bytearray(16 << 20))
    except MemoryError:
        got = len(hoard) * 16
        hoard.clear()
        raise MemoryError(f"stopped after {got} MiB") from None


@attack
def many_threads(arg: dict[str, Any]) -> Any:
    import threading

    release = threading.Event()
    threads = []
    try:
        for _ in range(arg["max"]):
            t = threading.Thread(target=release.wait)
            t.start()
            threads.append(t)
    except RuntimeError as exc:  # "can't start new thread": the address space is full
        return {"started": len(threads), "stopped_by": str(exc)}
    finally:
        release.set()
        for t in threads:
            t.join()
    return {"started": len(threads), "stopped_by": None}


@attack
def use_inherited_fd(arg: dict[str, Any]) -> Any:
    return os.fstat(arg["fd"]).st_size


@attack
def x32_syscall(arg: dict[str, Any]) -> Any:
    x32_getpid = 0x40000000 | 39  # x32 ABI: __X32_SYSCALL_BIT | getpid
    return _libc().syscall(x32_getpid)


@attack
def environment(arg: dict[str, Any]) -> Any:
    return {"environ": dict(os.environ), "cwd": os.getcwd(), "uid": os.getresuid(), "gid": os.getresgid()}


async def _answer() -> int:
    return 42


def _benign_checks(scratch: str) -> dict[str, str]:
    def json_roundtrip() -> None:
        assert json.loads(json.dumps({"a": [1, 2]})) == {"a": [1, 2]}

    def thread() -> None:
        import threading

        box: list[int] = []
        t = threading.Thread(target=box.append, args=(1,))
        t.start()
        t.join()
        assert box == [1]

    def asyncio_loop() -> None:
        import asyncio

        async def main() -> int:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[int] = loop.create_future()
            loop.call_soon_threadsafe(fut.set_result, 7)  # wakes the loop through its socketpair
            await asyncio.sleep(0)
            return await fut

        assert asyncio.run(main()) == 7

    def tempfile_in_scratch() -> None:
        import tempfile

        with tempfile.NamedTemporaryFile(mode="w+") as f:
            assert os.path.dirname(f.name) == scratch, f.name
            f.write("x")
            f.seek(0)
            assert f.read() == "x"

    def sqlite_memory() -> None:
        import sqlite3

        db = sqlite3.connect(":memory:")
        assert db.execute("select 40 + 2").fetchone() == (42,)
        db.close()

    def zoneinfo_lookup() -> None:
        import datetime
        import zoneinfo

        now = datetime.datetime.now(zoneinfo.ZoneInfo("Europe/Paris"))
        assert now.utcoffset() is not None

    def randomness() -> None:
        import random
        import secrets

        assert 0 <= random.random() < 1
        assert len(secrets.token_hex(8)) == 16

    def stdlib_imports() -> None:
        import decimal
        import hashlib

        assert decimal.Decimal("1.1") + decimal.Decimal("2.2") == decimal.Decimal("3.3")
        assert hashlib.sha256(b"").hexdigest().startswith("e3b0")

    def uvloop_loop() -> None:
        import uvloop  # the worker's event loop

        loop = uvloop.new_event_loop()
        try:
            assert loop.run_until_complete(_answer()) == 42
        finally:
            loop.close()

    results = {}
    for check in (
        json_roundtrip,
        thread,
        asyncio_loop,
        uvloop_loop,
        tempfile_in_scratch,
        sqlite_memory,
        zoneinfo_lookup,
        randomness,
        stdlib_imports,
    ):
        try:
            check()
            results[check.__name__] = "ok"
        except Exception as exc:
            results[check.__name__] = f"{type(exc).__name__}: {exc}"
    return results


def _outcome(name: str, arg: dict[str, Any]) -> dict[str, Any]:
    try:
        value = ATTACKS[name](arg)
    except Exception as exc:
        err = exc.errno if isinstance(exc, OSError) else None
        return {"ok": False, "error": type(exc).__name__, "errno": err, "detail": str(exc)}
    return {"ok": True, "error": None, "errno": None, "value": value}


def main() -> int:
    config = json.loads(sys.argv[1])
    fd = config["result_fd"]

    def emit(**record: Any) -> None:
        os.write(fd, json.dumps(record).encode() + b"\n")

    if config.get("site"):
        import site

        site.addsitedir(config["site"])
    from plugbox import confine

    policy = confine.Policy(
        keep_fds=(fd, *config.get("keep", ())),
        scratch_dir=config["scratch"],
        plugin_dir=config["plugin"],
        netns=config.get("netns", False),
        memory_bytes=config.get("memory_bytes", 256 << 20),
        cgroup=confine.CgroupPlacement(**{**config["cgroup"], "dirs": tuple(config["cgroup"]["dirs"])}),
    )
    # `without` exists only so the tests can show each attack lands once its layer is removed.
    layers = [layer for layer in confine.LAYERS if layer.name not in config.get("without", ())]
    shared = confine.prepare_shared(layers)  # in a worker this runs in the zygote, before the fork
    started = time.perf_counter()
    report = confine.apply(confine.prepare(policy, shared))
    apply_ms = (time.perf_counter() - started) * 1000
    emit(stage="confined", report=[[r.name, r.applied, r.skipped, r.detail] for r in report.layers], apply_ms=apply_ms)
    emit(stage="attempted", attack=config["attack"])
    emit(stage="outcome", **_outcome(config["attack"], config.get("arg", {})))
    emit(stage="benign", results=_benign_checks(os.path.realpath(config["scratch"])))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # the traceback module may not be importable any more: report the repr
        crash = {"stage": "crashed", "error": repr(exc), "cause": repr(exc.__cause__ or exc.__context__)}
        os.write(json.loads(sys.argv[1])["result_fd"], json.dumps(crash).encode() + b"\n")
        sys.exit(1)
