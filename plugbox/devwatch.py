"""`plugbox dev run --watch`: the author's loop again every time the plugin directory changes.

Owns the loop (run, wait for changes, run again, until Ctrl-C) and which changes count. The run
itself is `plugbox.devrun.dev_run`, its printing the CLI's. Changes come from watchfiles (native
file notifications, a burst of saves grouped into one batch; caches, editor swap files and VCS
directories ignored) in real use, and from any iterable of batches in tests, so a test
drives the loop with a change it makes itself instead of sleeping until a watcher notices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = ["plugin_changes", "watch_runs"]


def plugin_changes(plugin_dir: Path) -> Iterator[set[str]]:
    """Batches of changed paths under `plugin_dir`, as they happen; KeyboardInterrupt on Ctrl-C."""
    import watchfiles

    for batch in watchfiles.watch(plugin_dir, watch_filter=watchfiles.DefaultFilter(), raise_interrupt=True):
        yield {path for _change, path in batch}


def watch_runs(run_once: Callable[[], int], changes: Iterable[set[str]],
               announce: Callable[[set[str]], None]) -> int:
    """Run once, then once more after each batch of `changes` (told to `announce` first). Ctrl-C,
    while waiting or during a run, ends the loop; returns the exit code of the last finished run."""
    code = 0
    try:
        code = run_once()
        for batch in changes:
            announce(batch)
            code = run_once()
    except KeyboardInterrupt:
        pass
    return code
