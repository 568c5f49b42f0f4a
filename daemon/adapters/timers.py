"""One timer task for the daemon's periodic loops: waking a loop costs no exception.

trio wakes a task whose `sleep_until` (or `move_on_at`) ran out by cancelling the
task's scope: a `Cancelled` is raised through the task's awaits and caught again by
the scope. That costs about 40 us of CPU on a quiet machine and 100-170 us on a
busy one (a quiet 50-daemon room, 2026-12-06: the WAL checkpoint's and the score
watch's one-second steps, which do almost nothing else, took 168 and 161 us each).
The daemon's one-second loops share a grid (core/ticks.py), so they wake in one
round of the event loop, but each still paid for its own `Cancelled`: eight of them
a second, about half of what a quiet member spends.

Rules:
- `run_timers` is the one timer task of a trio run. It sleeps until the earliest
  deadline anyone waits for, then wakes every task whose deadline has come by
  rescheduling it (as `trio.Event.set` does): one `Cancelled` per wake-up instant
  for all of them, in the timer task alone.
- `sleep_until(deadline)` parks the calling task until then; `wait(event, deadline)`
  until the event is set or the deadline comes, whichever is first. Both are
  checkpoints, and cancelling a task that waits in them works as it does for trio's
  own: the task leaves the timer's heap at once.
- `wait` is for a wake-up event that its owner replaces after each wait (the services'
  `_wakeup`): at the deadline the timer task sets the event itself, where trio's
  `move_on_at` would leave it unset.
- An abandoned deadline (its waiter woke sooner or was cancelled) stays in the heap,
  marked dead, until it comes or reaches the top: at most one per wait, gone within
  the wait's own horizon (a second for the one-second loops).
- Without a timer task running in this trio run (unit tests that run one piece, or
  after the daemon's timer task ended) both fall back to trio's own timeouts: same
  behaviour, the old cost. When the timer task ends, every task parked on it is woken
  early; its loop sleeps again, on trio's timeouts.
- A second `run_timers` in the same run (tests that run several daemons in one
  process) finds the first running and leaves the work to it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["run_timers", "sleep_until", "wait"]


class _Entry:
    __slots__ = ("callback", "live")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.live = True  # False once fired, or its waiter left: skipped in the heap


class _Timers:
    """The heap of deadlines and the timer task's cancel scope (set while it runs)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Entry]] = []
        self.order = itertools.count()
        self.scope: trio.CancelScope | None = None

    def call_at(self, deadline: float, callback: Callable[[], object]) -> _Entry:
        entry = _Entry(callback)
        heapq.heappush(self.heap, (deadline, next(self.order), entry))
        assert self.scope is not None
        if deadline < self.scope.deadline:
            self.scope.deadline = deadline
        return entry

    def fire(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.live:
                entry.live = False
                entry.callback()

    def next_deadline(self) -> float:
        heap = self.heap
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def release_all(self) -> None:
        heap, self.heap = self.heap, []
        for _, _, entry in heap:
            if entry.live:
                entry.live = False
                entry.callback()


_TIMERS: trio.lowlevel.RunVar[_Timers | None] = trio.lowlevel.RunVar("gossipchat_timers",
                                                                     default=None)


async def run_timers(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Be this run's timer task until cancelled (see the rules)."""
    if _TIMERS.get() is not None:
        task_status.started()
        await trio.sleep_forever()
    timers = _Timers()
    _TIMERS.set(timers)
    try:
        started = False
        while True:
            with trio.CancelScope(deadline=timers.next_deadline()) as timers.scope:
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep_forever()
            timers.fire(trio.current_time())
    finally:
        timers.scope = None
        _TIMERS.set(None)
        timers.release_all()


def _running() -> _Timers | None:
    timers = _TIMERS.get()
    return timers if timers is not None and timers.scope is not None else None


async def sleep_until(deadline: float) -> None:
    """Sleep until `deadline` on trio's clock (`trio.sleep_until`, woken by the timer
    task)."""
    timers = _running()
    if timers is None or deadline == math.inf:
        await trio.sleep_until(deadline)
        return
    if deadline <= trio.current_time():
        await trio.lowlevel.checkpoint()
        return
    task = trio.lowlevel.current_task()
    entry = timers.call_at(deadline, lambda: trio.lowlevel.reschedule(task))

    def abort(_: Any) -> trio.lowlevel.Abort:
        entry.live = False
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


async def wait(event: trio.Event, deadline: float) -> None:
    """Wait until `event` is set or `deadline` comes (`move_on_at(deadline)` around
    `event.wait()`; at the deadline the timer task sets the event)."""
    timers = _running()
    if timers is None or deadline == math.inf:
        with trio.move_on_at(deadline):
            await event.wait()
        return
    if deadline <= trio.current_time():
        await trio.lowlevel.checkpoint()
        return
    entry = timers.call_at(deadline, event.set)
    try:
        await event.wait()
    finally:
        entry.live = False
