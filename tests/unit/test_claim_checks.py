"""A claim check (does the fetched file match what its image message says?) runs once
per (root, claim) in images.py: a second check of the same waits for the one under way
and takes its verdict, and later ones reuse it. A CID names its bytes, so the verdict
cannot change. The check itself (`imaging.check_claim`, pure) is replaced here by a
counting stand-in that takes real time in its worker thread."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import pytest
import trio

from gossipchat.daemon import images
from gossipchat.daemon.core import imaging
from gossipchat.daemon.images import ImageService

ROOT = b"\x01root"
GOOD = imaging.ImageClaim(mime="image/png", size=5, width=1, height=1)
BAD = imaging.ImageClaim(mime="image/png", size=9, width=1, height=1)


class Checks:
    """Stands in for imaging.check_claim: counts calls, refuses the BAD claim."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.calls: list[imaging.ImageClaim] = []
        self._lock = threading.Lock()

    def __call__(self, data: bytes, claim: imaging.ImageClaim,
                 limits: imaging.ImageLimits) -> None:
        with self._lock:
            self.calls.append(claim)
        time.sleep(self.seconds)
        if claim.size != len(data):
            raise imaging.ImageMismatch(f"{len(data)} bytes, the message says {claim.size}")


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Checks:
    stand_in = Checks()
    monkeypatch.setattr(images.imaging, "check_claim", stand_in)
    return stand_in


def _service() -> ImageService:
    service = object.__new__(ImageService)
    service.limits = imaging.ImageLimits()
    service._pillow = trio.CapacityLimiter(1)
    service._verdicts = OrderedDict()
    service._checking = {}
    return service


def test_checks_of_the_same_claim_at_once_share_one(checks: Checks) -> None:
    service = _service()
    verdicts: list[str | None] = []

    async def check() -> None:
        verdicts.append(await service._mismatch(ROOT, b"image", GOOD))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(check)
        await check()  # later: from the verdicts kept

    trio.run(main)
    assert verdicts == [None] * 4
    assert checks.calls == [GOOD]


def test_a_refusal_is_shared_and_other_claims_are_checked(checks: Checks) -> None:
    service = _service()

    async def main() -> list[str | None]:
        results: list[str | None] = [None, None]

        async def check(i: int) -> None:
            results[i] = await service._mismatch(ROOT, b"image", BAD)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check, 0)
            nursery.start_soon(check, 1)
        good = await service._mismatch(ROOT, b"image", GOOD)
        other_root = await service._mismatch(b"\x01other", b"image", BAD)
        return [*results, good, other_root]

    first, second, good, other_root = trio.run(main)
    assert first == second == other_root == "5 bytes, the message says 9"
    assert good is None
    assert checks.calls == [BAD, GOOD, BAD]


def test_a_check_cancelled_while_it_waits_leaves_the_next_to_check(checks: Checks) -> None:
    service = _service()

    async def main() -> str | None:
        await service._pillow.acquire()  # another image's check holds the thread slot
        with trio.move_on_after(0.05):
            await service._mismatch(ROOT, b"image", GOOD)
        assert not service._checking
        assert not service._verdicts
        service._pillow.release()
        return await service._mismatch(ROOT, b"image", GOOD)

    assert trio.run(main) is None
    assert checks.calls == [GOOD]


def test_verdicts_kept_are_bounded(checks: Checks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "CLAIM_VERDICTS_KEPT", 2)
    checks.seconds = 0.0
    service = _service()

    async def main() -> None:
        for root in (b"\x01a", b"\x01b", b"\x01a", b"\x01c", b"\x01a", b"\x01b"):
            await service._mismatch(root, b"image", GOOD)

    trio.run(main)
    # a, b; a kept (and freshest); c pushes b out; a kept; b checked again.
    assert checks.calls == [GOOD] * 4
    assert list(service._verdicts) == [(b"\x01a", GOOD), (b"\x01b", GOOD)]
