"""`plugbox bench`: an honest, reproducible measurement of the sandbox tier, beside anchors
measured in the same invocation on the same machine.

Metrics (all against real, confined workers spawned through the host's own zygote):

1. capability round trip p50/p99: plugin → host `storage.get` → plugin, timed inside the plugin;
2. hook dispatch p50/p99: host-side `await host.bus.execute(...)` to one confined sync handler;
3. pipelined hook dispatches per second, 64 in flight;
4. cold start: enable → `enabled`, median of 20 (the zygote is started before timing);
5. memory per idle confined worker: PSS and USS from /proc/<pid>/smaps_rollup;
6. scale (scale.py): N confined plugins enabled at once (`--plugins`, default 200; issue 17's targets
   are written for 1,000), one hook delivered to all of them and to each alone, memory of the
   workers and the zygote with all alive, host RSS and fds, leaks after disable-all.

Anchors: the raw CPython socketpair round trip (`pipe_limit.py`, the floor nothing in the bridge
can beat) and, when `node` is installed, Node worker_threads (`node_anchor.js`, the transport of the
system plugbox is modelled on). `run_bench` returns one JSON-able report; `table.py` renders it
for the terminal, `htmlreport.py` as a self-contained HTML page (`--report DIR`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugbox.bench.suite import BenchError, BenchOptions, run_bench

__all__ = ["BenchError", "BenchOptions", "run_bench"]


def __getattr__(name: str) -> Any:
    # Lazy: `python -m plugbox.bench.pipe_limit` (an anchor process) must not import the host.
    if name in __all__:
        from plugbox.bench import suite

        return getattr(suite, name)
    raise AttributeError(f"module 'plugbox.bench' has no attribute {name!r}")
