"""Redial: keep reconnecting to the peers this node knew, across drops and restarts.

Rules:
- At start every peer remembered in the store (addresses saved on each connect) gets
  a redial loop; so does every peer whose last connection drops.
- A loop dials with exponential backoff and jitter (0.5 s doubling to 60 s) and ends
  when the peer is connected, blocked, or after MAX_ATTEMPTS; a later drop or restart
  starts a new one. At most one loop runs per peer.
- Peers that `defer` names are left alone: the connection manager (presence.py)
  reconnects the room members recently present, and a peer this node hung up on
  itself lately (a DHT query's connection, a trim, a block) is no drop to repair.
- The service task owns the set of running loops.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import trio

from .adapters.p2p import P2PNetwork
from .adapters.store import Store
from .errors import GossipchatError, StoreUnavailable

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 60.0
MAX_ATTEMPTS = 40


class Redialer:
    """Reconnects to known peers with backoff."""

    def __init__(self, network: P2PNetwork, store: Store, *, rng: random.Random | None = None
                 ) -> None:
        self.network = network
        self.store = store
        self.attempts = 0
        self.reconnected = 0
        self._rng = rng or random.Random()
        self._loops: set[str] = set()
        self._nursery: trio.Nursery | None = None
        # Peers someone else reconnects (the connection manager's room members).
        self.defer: Callable[[str], bool] = lambda _peer: False

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start loops for the remembered peers, then serve `lost` until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer_id, _addrs in self.store.known_peers():
                self.lost(peer_id)
            task_status.started()
            await trio.sleep_forever()

    def lost(self, peer_id: str) -> None:
        """A peer is not connected (any more): start redialling it."""
        if self._nursery is None or peer_id in self._loops:
            return
        if peer_id == self.network.peer_id or self.network.is_blocked(peer_id):
            return
        if self.defer(peer_id):
            return
        self._loops.add(peer_id)
        self._nursery.start_soon(self._loop, peer_id)

    async def _loop(self, peer_id: str) -> None:
        delay = FIRST_DELAY_S
        try:
            for _ in range(MAX_ATTEMPTS):
                if self.network.is_connected(peer_id) or self.network.is_blocked(peer_id):
                    return
                try:
                    addrs = self.store.peer_addrs(peer_id)
                except StoreUnavailable:  # counted by the node; nothing to dial from
                    return
                if not addrs:
                    return
                self.attempts += 1
                try:
                    await self.network.dial_known(peer_id, addrs)
                    self.reconnected += 1
                    log.info("redialled %s", peer_id)
                    return
                except GossipchatError as exc:
                    log.info("redial %s failed: %s", peer_id, exc.message)
                await trio.sleep(delay * self._rng.uniform(0.8, 1.2))
                delay = min(MAX_DELAY_S, delay * 2)
        finally:
            self._loops.discard(peer_id)
