"""Running the daemon's trio services in-process, for tests of their timing rules.

A service has `async def run(self, *, task_status)`. Under pytest-trio's
`autojump_clock` fixture, `run_for(service, 3600)` runs an hour of its schedule in
milliseconds; fakes of the network and the store stand in for the I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import trio


@asynccontextmanager
async def running(service: Any) -> AsyncIterator[None]:
    """Start `service.run` (until it reports started) and cancel it on the way out."""
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield
        nursery.cancel_scope.cancel()


async def run_for(service: Any, seconds: float) -> None:
    """Run a service for `seconds` of (mock) time, then stop it."""
    async with running(service):
        await trio.sleep(seconds)


def gaps(times: Sequence[float]) -> list[float]:
    """The time between each event and the next."""
    return [b - a for a, b in pairwise(times)]
