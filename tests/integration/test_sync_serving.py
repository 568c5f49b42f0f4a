"""What sync serves from a real SQLite store: envelopes that only a gossip signature
vouched for are checked before they leave, once, without holding the event loop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import cbor2
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.adapters.store import Store
from gossipchat.daemon.core import envelope, peerid
from gossipchat.daemon.sync import CHECKS_PER_YIELD, SyncService

NOW = 1_800_000_000_000


def _heard_live(count: int, broken: set[int]) -> list[envelope.Envelope]:
    """`count` envelopes as a gossip message by their author delivers them; those in
    `broken` carry a signature of their own that fails."""
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    out = []
    for i in range(count):
        wire = envelope.create(room="r", author=author, lamport=i + 1, ts_ms=NOW + i,
                               kind="text", body={"text": f"m{i}"}, sign=key.sign).wire
        if i in broken:
            items = cbor2.loads(wire)
            items[7] = bytes(64)
            wire = cbor2.dumps(items, canonical=True)
        out.append(envelope.decode(wire, now_ms=NOW, signed_by=author))
    return out


async def test_served_envelopes_are_checked_once_and_the_checks_yield(tmp_path: Path) -> None:
    count = 4 * CHECKS_PER_YIELD
    envs = _heard_live(count, broken={5, 70})
    store = Store(tmp_path / "store.sqlite")
    try:
        store.add_messages(envs, NOW)
        # Only the store and the counters take part in serving.
        sync = SyncService(cast(Any, None), store, cast(Any, None), interval_s=10.0,
                           depth=100)
        ran = 0

        async def other_task() -> None:
            nonlocal ran
            while True:
                ran += 1
                await trio.lowlevel.checkpoint()

        ids = [e.id for e in envs]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)  # runnable from here on, never blocked
            served = await sync._servable(ids)
            during = ran
            nursery.cancel_scope.cancel()
        assert sorted(served) == sorted(e.wire for i, e in enumerate(envs) if i not in (5, 70))
        assert sync.stats.withheld == 2
        assert during >= count // CHECKS_PER_YIELD - 1  # it let the loop run meanwhile
        # The good ones are recorded as checked; the broken ones stay unchecked and
        # withheld, each time they are asked for.
        assert sum(not checked for _, checked in store.wires(ids)) == 2
        assert sorted(await sync._servable(ids)) == sorted(served)
        assert sync.stats.withheld == 4
    finally:
        store.close()
