"""A trio lock for the I/O paths, where every scheduling round costs."""

from __future__ import annotations

import trio


class QuickLock:
    """A trio.Lock whose uncontended acquire costs no scheduling round.

    trio's `Lock.acquire` yields to the scheduler even when the lock is free. Taken
    free, this one only checks for cancellation; taken held, it queues on the trio
    lock (FIFO), so mutual exclusion and fairness are trio's. Used as `async with`.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        if self._lock.locked():
            await self._lock.acquire()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._lock.acquire_nowait()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
