"""Coverage-guided fuzzing of the host's frame reader and message handling, for long offline runs
(not collected by pytest; atheris is not a dependency):

    pip install atheris
    python tests/fuzz/atheris_bridge.py -max_total_time=3600 -rss_limit_mb=2048 [corpus_dir]

Each input is a byte stream from a worker, fed in chunks whose sizes come from the input's first
byte. The properties are those of tests/fuzz/test_frame_reader.py: the reader raises nothing but
FrameTooLarge, and its buffer never holds more than one capped frame plus its header; every frame
it yields survives the handling steps the host applies to worker data (log relay rendering, the
hook-result check, the router's argument conversion).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

try:
    import atheris
except ImportError:  # pragma: no cover - an optional tool
    atheris = None

CAP = 1 << 16


def _setup() -> Any:
    with atheris.instrument_imports():
        import msgspec

        from plugbox.bridge import runtime, wire
        from plugbox.capabilities.verbs import VERBS
        from plugbox.logrelay import LogRelay
    relay = LogRelay("fuzz", secrets=lambda: ["s3cret"], lines_per_window=10**9, window_s=1.0, max_chars=8192)
    return msgspec, runtime, wire, VERBS, relay


def main() -> int:
    if atheris is None:
        sys.stderr.write("atheris is not installed: pip install atheris\n")
        return 2
    msgspec, runtime, wire, verbs, relay = _setup()

    def one_input(data: bytes) -> None:
        if not data:
            return
        step = data[0] % 64 + 1
        stream = data[1:]
        reader = wire.FrameReader(wire.WorkerMsg, CAP)
        for pos in range(0, len(stream), step):
            try:
                messages = reader.feed(stream[pos:pos + step])
            except wire.FrameTooLarge:
                return
            if len(reader._buf) >= CAP + 4:
                raise AssertionError(f"reader buffer grew to {len(reader._buf)} bytes")
            for msg in messages:
                if type(msg) is wire.Log:
                    relay.emit(msg.level, msg.message, msg.fields)
                elif type(msg) is wire.Result:
                    runtime._hook_result(msg)
                elif type(msg) is wire.Call and msg.verb in verbs:
                    with contextlib.suppress(msgspec.ValidationError):
                        msgspec.convert(msg.args, verbs[msg.verb].args)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
