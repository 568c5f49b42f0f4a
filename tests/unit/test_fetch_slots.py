"""Fetch slots (max_concurrent_fetches, images.py): `fetch` calls and auto-fetches share
them; past them a fetch waits, and a `fetch` whose deadline comes first fails. Under
trio's autojump_clock, with the slot logic alone (no network, no store)."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from gossipchat.daemon.errors import FetchTimeout
from gossipchat.daemon.images import FetchSlotStats, ImageService


def _slots(n: int) -> ImageService:
    service = object.__new__(ImageService)
    service._fetch_limiter = trio.CapacityLimiter(n)
    service.fetch_slots = FetchSlotStats()
    return service


async def _hold(service: ImageService, seconds: float, deadline: float | None,
                log: list[str], name: str) -> None:
    async with service._fetch_slot(deadline):
        log.append(f"{name} in at {trio.current_time():.0f}")
        await trio.sleep(seconds)


async def test_extra_fetches_wait_for_a_slot_in_order(
        autojump_clock: trio.testing.MockClock) -> None:
    service = _slots(2)
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        for i in range(4):
            # Auto-fetches (no deadline) and calls with ample time share the slots.
            deadline = None if i % 2 else trio.current_time() + 100
            nursery.start_soon(_hold, service, 10, deadline, log, f"f{i}")
            await trio.lowlevel.checkpoint()
    assert sorted(log) == ["f0 in at 0", "f1 in at 0", "f2 in at 10", "f3 in at 10"]
    assert service.fetch_slots == FetchSlotStats(waited=2, timed_out=0)
    assert service._fetch_limiter.borrowed_tokens == 0


async def test_a_fetch_whose_deadline_comes_first_fails_and_names_the_key(
        autojump_clock: trio.testing.MockClock) -> None:
    service = _slots(1)
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, service, 30, None, log, "auto")
        await trio.sleep(1)
        with pytest.raises(FetchTimeout, match="max_concurrent_fetches"):
            await _hold(service, 1, trio.current_time() + 5, log, "impatient")
        assert trio.current_time() == pytest.approx(6)
        # The slot is still the auto-fetch's; a patient call gets it when it ends.
        await _hold(service, 1, trio.current_time() + 60, log, "patient")
    assert log == ["auto in at 0", "patient in at 30"]
    assert service.fetch_slots == FetchSlotStats(waited=2, timed_out=1)
