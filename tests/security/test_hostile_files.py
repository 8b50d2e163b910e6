"""Hostile plugins against the file system: the host's data dir and database, homes, /proc of the
host, symlinks and hard links planted in or made by the plugin, writes into its own code and into
the shared Python runtime, metadata changes on host files.

Landlock is the layer that answers each of these (read-only runtime + plugin dir, read-write
scratch, nothing else — EACCES); the credentials layer keeps the uid from mattering where it can.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import pytest

import plugbox
from plugbox.host import Host

from .conftest import Attack, Canary, assert_refused

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]

READ = """
    def attack(ctx, cfg):
        with open(cfg["path"], "rb") as f:
            return f.read(4096).decode(errors="replace")
"""

LIST = """
    def attack(ctx, cfg):
        return os.listdir(cfg["path"])
"""


def _targets(host: Host, canary: Canary) -> dict[str, str]:
    hostpid, zygote = os.getpid(), host.zygote.pid
    return {
        "data_canary": str(canary.data_file),
        "host_db": str(canary.db_path),
        "home_key": str(canary.home_file),
        "host_proc_environ": f"/proc/{hostpid}/environ",
        "host_proc_mem": f"/proc/{hostpid}/mem",
        "host_proc_cmdline": f"/proc/{hostpid}/cmdline",
        "zygote_proc_environ": f"/proc/{zygote}/environ",
        "own_proc_environ": "/proc/self/environ",
        "etc_shadow": "/etc/shadow",
        "etc_passwd": "/etc/passwd",
        "data_via_dotdot": "{scratch}/../../host-secret.txt",
    }


@pytest.mark.parametrize("target", ["data_canary", "host_db", "home_key", "host_proc_environ", "host_proc_mem",
                                    "host_proc_cmdline", "zygote_proc_environ", "own_proc_environ", "etc_shadow",
                                    "etc_passwd", "data_via_dotdot"])
async def test_hostile_read_outside_its_domain_is_refused(
    attack: Attack, host: Host, canary: Canary, target: str
) -> None:
    path = _targets(host, canary)[target]
    if "{scratch}" in path:
        path = path.format(scratch=host.settings.data_path / "scratch" / "hostile")
        assert Path(os.path.normpath(path)) == canary.data_file  # noqa: ASYNC240 - pure path arithmetic
    run = await attack.run(READ, {"path": path})
    assert_refused(run.result, errno.EACCES)
    attack.assert_no_leak(run)
    await attack.aftermath()


@pytest.mark.parametrize("target", ["data_dir", "home", "root", "proc", "filesystem_root", "tmp"])
async def test_hostile_listing_outside_its_domain_is_refused(
    attack: Attack, host: Host, canary: Canary, target: str
) -> None:
    path = {"data_dir": str(canary.data_file.parent), "home": str(canary.home), "root": "/root", "proc": "/proc",
            "filesystem_root": "/", "tmp": "/tmp"}[target]
    run = await attack.run(LIST, {"path": path})
    assert_refused(run.result, errno.EACCES)
    attack.assert_no_leak(run)
    await attack.aftermath()


async def test_hostile_sqlite_open_of_the_host_database_fails(attack: Attack, canary: Canary) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            import sqlite3
            db = sqlite3.connect(cfg["db"])
            return db.execute("select * from kv").fetchall()
    """, {"db": str(canary.db_path)})
    assert_refused(run.result, types=("OperationalError",))
    assert "unable to open" in run.result["error"]
    attack.assert_no_leak(run)
    await attack.aftermath()


async def test_hostile_environment_holds_no_host_secret(attack: Attack, canary: Canary) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            return {"environ": dict(os.environ), "home": os.path.expanduser("~"), "cwd": os.getcwd()}
    """)
    value = run.result["value"]
    assert canary.secret not in repr(value)
    assert "PLUGBOX_SECURITY_CANARY" not in value["environ"]
    assert value["home"] != str(canary.home) and value["home"] == value["cwd"]  # home is the scratch dir
    attack.assert_no_leak(run)
    await attack.aftermath()


@pytest.mark.parametrize("kind", ["file", "dir"])
async def test_hostile_symlink_in_the_package_to_host_data_is_refused(
    attack: Attack, canary: Canary, kind: str
) -> None:
    """The package ships a symlink (made by the test: an author could zip one) to the host's data;
    Landlock checks the resolved target, so reading through it fails."""
    plugin = attack.plugin("""
        def attack(ctx, cfg):
            here = os.path.dirname(__file__)
            link = os.path.join(here, "leak")
            target = os.path.join(link, "host-secret.txt") if cfg["kind"] == "dir" else link
            with open(target) as f:
                return f.read()
    """, {"kind": kind})
    (plugin / "leak").symlink_to(canary.data_file if kind == "file" else canary.data_file.parent)
    run = await attack.start(plugin)
    assert_refused(run.result, errno.EACCES)
    attack.assert_no_leak(run)
    await attack.aftermath()


async def test_hostile_symlink_made_in_scratch_is_refused(attack: Attack, canary: Canary) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            os.symlink(cfg["path"], "leak")  # cwd is the scratch dir, where links may be made
            with open("leak") as f:
                return f.read()
    """, {"path": str(canary.data_file)})
    assert_refused(run.result, errno.EACCES)
    attack.assert_no_leak(run)
    await attack.aftermath()


async def test_hostile_hard_link_to_host_data_is_refused(attack: Attack, canary: Canary) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            os.link(cfg["path"], "stolen")
            with open("stolen") as f:
                return f.read()
    """, {"path": str(canary.data_file)})
    assert_refused(run.result, errno.EACCES, errno.EXDEV, errno.EPERM)
    attack.assert_no_leak(run)
    await attack.aftermath()


async def test_hostile_o_path_handle_cannot_be_reopened_or_read(attack: Attack, canary: Canary) -> None:
    """O_PATH opens are outside Landlock's reach, but such a handle reads nothing: read() is EBADF,
    reopening through /proc/self/fd is refused, and handle-based opens are filtered."""
    run = await attack.run("""
        def attack(ctx, cfg):
            fd = os.open(cfg["path"], os.O_PATH)
            tries = {}
            for name, fn in (("read", lambda: os.read(fd, 100)),
                             ("reopen", lambda: open(f"/proc/self/fd/{fd}").read()),
                             ("openat", lambda: os.open("", os.O_RDONLY, dir_fd=fd))):
                try:
                    tries[name] = fn()
                    return {"leaked_by": name, "content": tries[name]}
                except OSError as exc:
                    tries[name] = exc.errno
            raise PermissionError(errno.EACCES, f"every reopen failed: {tries}")
    """, {"path": str(canary.data_file)})
    assert_refused(run.result, errno.EACCES)
    attack.assert_no_leak(run)
    await attack.aftermath()


WRITE_OWN = {
    "overwrite_main": """
        def attack(ctx, cfg):
            with open(__file__, "w") as f:
                f.write("pwned = True")
    """,
    "create_in_package": """
        def attack(ctx, cfg):
            with open(os.path.join(os.path.dirname(__file__), "backdoor.py"), "w") as f:
                f.write("pwned = True")
    """,
    "rename_main": """
        def attack(ctx, cfg):
            os.rename(__file__, __file__ + ".bak")
    """,
    "unlink_manifest": """
        def attack(ctx, cfg):
            os.unlink(os.path.join(os.path.dirname(__file__), "manifest.json"))
    """,
    "mkdir_pycache": """
        def attack(ctx, cfg):
            os.mkdir(os.path.join(os.path.dirname(__file__), "__pycache__"))
    """,
    "truncate_main": """
        def attack(ctx, cfg):
            os.truncate(__file__, 0)
    """,
}


@pytest.mark.parametrize("how", sorted(WRITE_OWN))
async def test_hostile_writes_into_its_own_package_are_refused(attack: Attack, how: str) -> None:
    package = attack.plugin(WRITE_OWN[how])
    before = {p.name: p.read_bytes() for p in package.iterdir()}
    run = await attack.start(package)
    assert_refused(run.result, errno.EACCES)
    assert {p.name: p.read_bytes() for p in package.iterdir()} == before
    await attack.aftermath()


async def test_hostile_write_into_the_shared_python_runtime_is_refused(attack: Attack) -> None:
    """The host imports the same plugbox package: a worker that could append to it would own the
    host at its next restart. The probe opens for append and writes nothing."""
    target = Path(plugbox.__file__)
    before = target.stat()  # noqa: ASYNC240 - one stat in a test
    run = await attack.run("""
        def attack(ctx, cfg):
            fd = os.open(cfg["path"], os.O_WRONLY | os.O_APPEND)
            os.close(fd)
            return "opened for writing"
    """, {"path": str(target)})
    assert_refused(run.result, errno.EACCES)
    after = target.stat()  # noqa: ASYNC240
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    await attack.aftermath()


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm", "data_dir"])
async def test_hostile_file_creation_outside_scratch_is_refused(attack: Attack, canary: Canary, where: str) -> None:
    directory = str(canary.data_file.parent) if where == "data_dir" else where
    name = "plugbox-hostile-" + canary.secret[-8:]
    run = await attack.run("""
        def attack(ctx, cfg):
            with open(os.path.join(cfg["dir"], cfg["name"]), "w") as f:
                f.write("dropped")
    """, {"dir": directory, "name": name})
    assert_refused(run.result, errno.EACCES)
    assert not os.path.exists(os.path.join(directory, name))  # noqa: ASYNC240
    await attack.aftermath()


METADATA = {
    "chmod": "os.chmod(cfg['path'], 0o777)",
    "utime": "os.utime(cfg['path'], (0, 0))",
    "setxattr": "os.setxattr(cfg['path'], 'user.plugbox', b'pwned')",
    "chmod_data_dir": "os.chmod(os.path.dirname(cfg['path']), 0o777)",
}


@pytest.mark.parametrize("how", sorted(METADATA))
async def test_hostile_metadata_change_on_host_data_is_refused(attack: Attack, canary: Canary, how: str) -> None:
    """A file the worker cannot open must not be re-permissioned, re-dated or tagged by it either:
    chmod 0777 on the host's data exposes it to every local user, chmod 0 or a changed mtime
    breaks the host. Landlock has no right for metadata, so this rests on the uid (when the worker
    runs as another uid) or on seccomp (when it keeps uid 0 without capabilities)."""
    data_dir = canary.data_file.parent
    before = (canary.data_file.stat(), data_dir.stat())
    run = await attack.run(f"""
        def attack(ctx, cfg):
            {METADATA[how]}
            return "changed"
    """, {"path": str(canary.data_file)})
    after = (canary.data_file.stat(), data_dir.stat())
    try:
        assert_refused(run.result, errno.EPERM, errno.EACCES)
        assert stat.S_IMODE(after[0].st_mode) == stat.S_IMODE(before[0].st_mode)
        assert stat.S_IMODE(after[1].st_mode) == stat.S_IMODE(before[1].st_mode)
        assert after[0].st_mtime_ns == before[0].st_mtime_ns
        assert b"pwned" not in _xattrs(canary.data_file)
    finally:
        os.chmod(canary.data_file, stat.S_IMODE(before[0].st_mode))
        os.chmod(data_dir, stat.S_IMODE(before[1].st_mode))
    await attack.aftermath()


def _xattrs(path: Path) -> bytes:
    try:
        return b"".join(os.getxattr(path, name) for name in os.listxattr(path))
    except OSError:
        return b""
