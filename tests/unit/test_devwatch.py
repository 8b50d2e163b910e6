"""`dev run --watch`'s loop, driven by injected change batches (no watcher, no sleeps): one run,
then one per batch, each announced; Ctrl-C ends it with the last run's exit code."""

from __future__ import annotations

from collections.abc import Iterator

from plugbox.devwatch import watch_runs


def test_runs_once_then_once_per_batch_of_changes_and_returns_the_last_code() -> None:
    codes = iter([1, 0, 3])
    announced: list[set[str]] = []
    code = watch_runs(lambda: next(codes), [{"p/main.py"}, {"p/manifest.json", "p/main.py"}], announced.append)
    assert announced == [{"p/main.py"}, {"p/manifest.json", "p/main.py"}]
    assert code == 3


def test_ctrl_c_while_waiting_ends_the_loop_with_the_last_runs_code() -> None:
    runs: list[int] = []

    def changes() -> Iterator[set[str]]:
        yield {"p/main.py"}
        raise KeyboardInterrupt

    def run() -> int:
        runs.append(1)
        return 1 if len(runs) == 1 else 0

    assert watch_runs(run, changes(), lambda _: None) == 0
    assert len(runs) == 2


def test_ctrl_c_during_a_run_keeps_the_code_of_the_run_before() -> None:
    results = iter([1])

    def run() -> int:
        for code in results:
            return code
        raise KeyboardInterrupt

    assert watch_runs(run, [{"p/main.py"}, {"p/main.py"}], lambda _: None) == 1
