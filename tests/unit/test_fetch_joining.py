"""A second fetch of an image that is being fetched joins the first (images.py): it
waits for it, hearing its progress, then takes the bytes the first got if they fit its
own limits, or runs itself (from the peers if the first failed). Under trio's
autojump_clock, with a stand-in for the block exchange (no network, no store)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import trio
import trio.testing

from gossipchat.daemon.errors import FetchTimeout, NotFound
from gossipchat.daemon.images import ImageService

ROOT = b"\x01root"


class Exchange:
    """Fetches take `seconds` from the peers, or no time once `held`."""

    def __init__(self, seconds: float, fail_first: bool = False) -> None:
        self.seconds = seconds
        self.fail_first = fail_first
        self.held = False
        self.calls: list[tuple[float, str]] = []

    async def fetch(self, root: bytes, peers: list[str], *, max_size: int, timeout_s: float,
                    fallback: list[str], patience_s: float, expected_size: int | None,
                    on_progress: Callable[[int, int], None] | None) -> bytes:
        self.calls.append((trio.current_time(), "store" if self.held else "peers"))
        if self.held:
            return b"image"
        with trio.move_on_after(timeout_s):
            for have in (1, 2):
                await trio.sleep(self.seconds / 2)
                if on_progress is not None:
                    on_progress(have, 2)
            if self.fail_first:
                self.fail_first = False
                raise NotFound("not found: nobody has it")
            self.held = True
            return b"image"
        raise FetchTimeout("not found: timed out")


def _service(exchange: Exchange) -> ImageService:
    service = object.__new__(ImageService)
    service.exchange = exchange  # type: ignore[assignment]
    service._running = {}
    service.fetches_joined = 0
    return service


async def _fetch(service: ImageService, timeout_s: float, heard: list[tuple[int, int]] | None,
                 out: list[object], *, max_size: int = 100,
                 expected_size: int | None = None) -> None:
    def on_progress(have: int, total: int) -> None:
        assert heard is not None
        heard.append((have, total))

    try:
        out.append(await service._exchange_fetch(
            ROOT, ["p"], max_size=max_size, timeout_s=timeout_s, fallback=[], patience_s=0.0,
            expected_size=expected_size, on_progress=on_progress if heard is not None else None))
    except (NotFound, FetchTimeout) as exc:
        out.append(type(exc).__name__)


async def _one_then_another(service: ImageService, heard: list[tuple[int, int]] | None = None,
                            **second: int) -> list[object]:
    """A fetch at 0 and another of the same image at 1 s, both with 60 s to go."""
    out: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fetch, service, 60, None, out)
        await trio.sleep(1)
        nursery.start_soon(partial(_fetch, service, 60, heard, out, **second))
    return out


async def test_a_second_fetch_waits_for_the_first_and_takes_its_bytes(
        autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(seconds=10)
    service = _service(exchange)
    heard: list[tuple[int, int]] = []
    assert await _one_then_another(service, heard) == [b"image", b"image"]
    # The peers were asked once, and the store not at all: the second fetch took the
    # bytes the first got.
    assert exchange.calls == [(0, "peers")]
    assert heard == [(1, 2), (2, 2)]  # the first one's progress, heard while it waited
    assert service.fetches_joined == 1
    assert service._running == {}


@pytest.mark.parametrize("limits", [{"max_size": 3}, {"expected_size": 4}])
async def test_bytes_that_do_not_fit_the_second_fetch_make_it_run_itself(
        autojump_clock: trio.testing.MockClock, limits: dict[str, int]) -> None:
    exchange = Exchange(seconds=10)
    service = _service(exchange)
    # 5 bytes: over a max_size of 3, or not the 4 the second one expects. It runs
    # itself (here, from the store the first filled), so the exchange applies its limits.
    assert await _one_then_another(service, **limits) == [b"image", b"image"]
    assert exchange.calls == [(0, "peers"), (10, "store")]


async def test_when_the_first_fails_the_second_asks_the_peers_itself(
        autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(seconds=10, fail_first=True)
    service = _service(exchange)
    assert await _one_then_another(service) == ["NotFound", b"image"]
    assert exchange.calls == [(0, "peers"), (10, "peers")]


async def test_a_joined_fetch_keeps_its_own_deadline(
        autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(seconds=100)
    service = _service(exchange)
    out: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fetch, service, 200, None, out)
        await trio.sleep(1)
        nursery.start_soon(_fetch, service, 5, None, out)
        await trio.sleep(6)
        # The impatient one gave up at its deadline (an exchange timeout, as if alone).
        assert out == ["FetchTimeout"]
        assert trio.current_time() == pytest.approx(7)
    assert out == ["FetchTimeout", b"image"]
