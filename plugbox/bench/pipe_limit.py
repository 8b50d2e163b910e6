"""Anchor: the physical floor under the bridge on this machine.

Two CPython processes, an AF_UNIX stream socketpair, length-prefixed 64-byte frames, blocking I/O,
no event loop, no serialization, no validation. Whatever plugbox's bridge does on top (msgspec
frames, asyncio protocols, the capability router) can only add to this, so plugbox's round trip is
reported as a multiple of it.

Run as its own process, so the host under test shares nothing with it:

    python -I -m plugbox.bench.pipe_limit RTT_N PIPELINED_TOTAL [DEPTH]
    python -I -m plugbox.bench.pipe_limit serve

Prints one JSON object: rtt_p50_us / rtt_p99_us (one frame in flight) and pipelined_per_s
(`DEPTH` frames in flight, default 64). The echo side is a fork of this small process (never of
the host); it exits when its end of the socketpair reads EOF, so it cannot outlive the prober.

`serve` keeps the pair and answers commands on stdin with one JSON line each, so the bench can
interleave bursts of it with bursts of plugbox's bridge: `rtt N` -> {"lat_ns": [...]},
`pipe N` -> {"per_s": x} (64 in flight); {"ready": true} first; it exits at the end of stdin.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

HEADER = struct.Struct("!I")
BODY_BYTES = 64
FRAME = HEADER.pack(BODY_BYTES) + b"\x5a" * BODY_BYTES


def _read_frame(sock: socket.socket, buf: bytearray) -> bool:
    """Read one frame into `buf` (header then body). False on EOF."""
    view = memoryview(buf)
    if sock.recv_into(view[:4], 4, socket.MSG_WAITALL) < 4:
        return False
    size: int = HEADER.unpack_from(buf)[0]
    return sock.recv_into(view[4 : 4 + size], size, socket.MSG_WAITALL) == size


def _echo(sock: socket.socket) -> None:
    buf = bytearray(len(FRAME))
    while _read_frame(sock, buf):
        sock.sendall(buf)
    os._exit(0)


def _round_trips(sock: socket.socket, n: int) -> list[int]:
    buf = bytearray(len(FRAME))
    clock = time.perf_counter_ns
    lat = [0] * n
    for i in range(n):
        t0 = clock()
        sock.sendall(FRAME)
        _read_frame(sock, buf)
        lat[i] = clock() - t0
    return lat


def _pipelined(sock: socket.socket, total: int, depth: int) -> float:
    """Frames answered per second with a window of `depth` requests in flight."""
    buf = bytearray(len(FRAME))
    t0 = time.perf_counter()
    sent = min(depth, total)
    sock.sendall(FRAME * sent)
    for _ in range(total):
        _read_frame(sock, buf)
        if sent < total:
            sock.sendall(FRAME)
            sent += 1
    return total / (time.perf_counter() - t0)


def _pct(sorted_ns: list[int], q: float) -> float:
    rank = max(1, -(-len(sorted_ns) * q // 1))  # nearest rank: ceil(q * n)
    return sorted_ns[int(rank) - 1] / 1000


def _pair() -> tuple[socket.socket, int]:
    """Our end of a socketpair whose other end a forked echo child serves."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        side_b = os.environ.get("PLUGBOX_BENCH_SIDE_B_CPU")
        if side_b is not None:  # --placement split: the echo side runs on the other CPU
            os.sched_setaffinity(0, {int(side_b)})
        mine.close()
        _echo(theirs)
    theirs.close()
    return mine, pid


def _serve() -> int:
    mine, pid = _pair()
    try:
        _round_trips(mine, 2000)  # warm-up
        _pipelined(mine, 5000, 64)
        sys.stdout.write(json.dumps({"ready": True, "python": sys.version.split()[0]}) + "\n")
        sys.stdout.flush()
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            n = int(arg) if arg.isdigit() and int(arg) > 0 else 0
            if n and cmd == "rtt":
                reply: dict[str, object] = {"lat_ns": _round_trips(mine, n)}
            elif n and cmd == "pipe":
                reply = {"per_s": _pipelined(mine, n, 64)}
            else:
                reply = {"error": f"bad command {line.strip()[:80]!r}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        mine.close()
        os.waitpid(pid, 0)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "serve":
        return _serve()
    rtt_n = int(argv[1]) if len(argv) > 1 else 20000
    total = int(argv[2]) if len(argv) > 2 else 100000
    depth = int(argv[3]) if len(argv) > 3 else 64
    mine, pid = _pair()
    try:
        _round_trips(mine, min(rtt_n, 2000))  # warm-up: page in both sides, settle the scheduler
        lat = sorted(_round_trips(mine, rtt_n))
        _pipelined(mine, min(total, 5000), depth)
        per_s = _pipelined(mine, total, depth)
    finally:
        mine.close()
        os.waitpid(pid, 0)
    report = {
        "anchor": "cpython-socketpair-limit",
        "python": sys.version.split()[0],
        "rtt_p50_us": round(_pct(lat, 0.50), 1),
        "rtt_p99_us": round(_pct(lat, 0.99), 1),
        "pipelined_per_s": round(per_s),
        "params": {"rtt_n": rtt_n, "pipelined_total": total, "in_flight": depth, "frame_bytes": len(FRAME)},
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
