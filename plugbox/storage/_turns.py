"""Fair ordering of pending writes, shared by both database backends.

A write names its owner (a plugin id; None for the host). `Turns` hands writes out round-robin
across owners and in submission order within one owner, so one plugin's queue of large writes
delays another plugin's write by at most one write, not by the whole queue. It owns no thread and
no connection: `submit` queues a job and hands the backend's single writer thread one task that
runs the next job in turn (`run_next`), so both backends share the same turn-taking and the same
handling of a cancelled caller.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from typing import Any

__all__ = ["Job", "Turns"]


class Job:
    __slots__ = ("after", "fn", "future", "owner")

    def __init__(self, fn: Callable[[Any], object], after: Callable[[], None] | None, owner: Hashable) -> None:
        self.fn = fn
        self.after = after
        self.owner = owner
        self.future: Future[object] = Future()


class Turns:
    """Pending writes by owner, handed out round-robin across owners, FIFO within one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[Hashable, deque[Job]] = {}
        self._order: deque[Hashable] = deque()  # owners with pending jobs, next turn first

    def push(self, job: Job) -> None:
        with self._lock:
            lane = self._lanes.get(job.owner)
            if lane is None:
                lane = self._lanes[job.owner] = deque()
                self._order.append(job.owner)
            lane.append(job)

    def waiting(self, owner: Hashable) -> int:
        """Jobs of `owner` queued and not started yet."""
        with self._lock:
            return len(self._lanes.get(owner, ()))

    def pop(self) -> Job:
        with self._lock:
            owner = self._order.popleft()
            lane = self._lanes[owner]
            job = lane.popleft()
            if lane:
                self._order.append(owner)
            else:
                del self._lanes[owner]
            return job

    async def submit(self, job: Job, executor: Executor, transact: Callable[[Job], object],
                     then: Callable[[], None] | None = None) -> object:
        """Queue `job` and wait for its result. One executor task per job, so the executor's own
        queue still orders a close() after every write submitted before it; which job each task
        runs is the turns' choice."""
        self.push(job)
        executor.submit(self.run_next, transact, then)
        return await asyncio.wrap_future(job.future)

    def run_next(self, transact: Callable[[Job], object], then: Callable[[], None] | None = None) -> None:
        """On the writer thread: run the next job in turn with `transact` and resolve its future;
        `then` runs after a job that succeeded, before its caller learns so. A job whose caller was
        cancelled before it started is dropped."""
        job = self.pop()
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            result = transact(job)
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            if then is not None:
                then()
            job.future.set_result(result)
