"""Redial (daemon/redial.py) under trio's mock clock: when dials happen, and when the
loop stops.

The network and the store are fakes that script which dials fail; the
`autojump_clock` fixture runs minutes of backoff in milliseconds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import trio
import trio.lowlevel

from gossipchat.daemon import redial
from gossipchat.daemon.errors import PeerUnreachable, StoreUnavailable
from gossipchat.daemon.redial import Redialer
from harness.services import gaps, run_for, running

SEED = 3
ADDRS = ["/ip4/127.0.0.1/tcp/4001"]


@dataclass
class FakeNetwork:
    """Dials that fail `failures[peer]` times, then connect."""

    peer_id: str = "me"
    failures: dict[str, int] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    dials: list[tuple[float, str]] = field(default_factory=list)

    def is_connected(self, peer: str) -> bool:
        return peer in self.connected

    def is_blocked(self, peer: str) -> bool:
        return peer in self.blocked

    async def dial_known(self, peer: str, addrs: Sequence[str]) -> str:
        assert list(addrs) == ADDRS
        self.dials.append((trio.current_time(), peer))
        await trio.lowlevel.checkpoint()
        if self.failures.get(peer, 0) > 0:
            self.failures[peer] -= 1
            raise PeerUnreachable(f"peer unreachable: {peer}")
        self.connected.add(peer)
        return peer

    def times(self, peer: str) -> list[float]:
        return [t for t, p in self.dials if p == peer]


@dataclass
class FakeStore:
    """Remembered peers and their addresses; `broken` makes reads fail."""

    peers: dict[str, list[str]] = field(default_factory=dict)
    broken: bool = False

    def known_peers(self) -> list[tuple[str, list[str]]]:
        return list(self.peers.items())

    def peer_addrs(self, peer: str) -> list[str]:
        if self.broken:
            raise StoreUnavailable("disk I/O error")
        return self.peers.get(peer, [])


def make(failures: dict[str, int] | None = None, known: Sequence[str] = ()
         ) -> tuple[Redialer, FakeNetwork, FakeStore]:
    network = FakeNetwork(failures=dict(failures or {}))
    store = FakeStore({peer: list(ADDRS) for peer in known})
    return Redialer(network, store, rng=random.Random(SEED)), network, store  # type: ignore[arg-type]


def expected_gaps(count: int) -> list[float]:
    """The backoff the loop sleeps after each failed dial, jitter included."""
    jitter = random.Random(SEED)
    delay, out = redial.FIRST_DELAY_S, []
    for _ in range(count):
        out.append(delay * jitter.uniform(0.8, 1.2))
        delay = min(redial.MAX_DELAY_S, delay * 2)
    return out




async def test_remembered_peers_are_dialled_at_start_with_doubling_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    redialer, network, _ = make({"p": 6}, known=["p"])
    started = trio.current_time()
    await run_for(redialer, 3600)
    times = network.times("p")
    assert times[0] == pytest.approx(started)
    assert gaps(times) == pytest.approx(expected_gaps(6))  # 0.5 s doubling, jittered
    assert redialer.attempts == 7
    assert redialer.reconnected == 1
    assert "p" in network.connected


async def test_the_delay_stops_doubling_at_a_minute_and_the_loop_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    redialer, network, _ = make({"p": 10_000}, known=["p"])
    async with running(redialer):
        await trio.sleep(24 * 3600)
        assert len(network.times("p")) == redial.MAX_ATTEMPTS
        # The loop is over: a new loss starts a new one.
        redialer.lost("p")
        await trio.sleep(0.1)  # its first dial; the next is 0.4-0.6 s away
    times = network.times("p")
    assert gaps(times[: redial.MAX_ATTEMPTS]) == pytest.approx(
        expected_gaps(redial.MAX_ATTEMPTS - 1))
    assert max(gaps(times[: redial.MAX_ATTEMPTS])) <= redial.MAX_DELAY_S * 1.2 + 1e-6
    assert len(times) == redial.MAX_ATTEMPTS + 1


async def test_one_loop_per_peer_however_often_it_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    redialer, network, _ = make({"p": 3}, known=["p"])
    async with running(redialer):
        for _ in range(5):
            redialer.lost("p")
            await trio.sleep(0.1)
        await trio.sleep(60)
    assert len(network.times("p")) == 4  # three failures and the success, once
    assert gaps(network.times("p")) == pytest.approx(expected_gaps(3))


async def test_a_peer_that_comes_back_by_itself_is_not_dialled_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    redialer, network, store = make({"p": 10_000})
    async with running(redialer):
        redialer.lost("p")
        await trio.sleep(0.1)
        assert network.times("p") == []  # not remembered: no address, no dial
        store.peers["p"] = list(ADDRS)
        redialer.lost("p")
        await trio.sleep(0.1)  # one failed dial; the next is 0.4-0.6 s away
        network.connected.add("p")  # it dialled us
        await trio.sleep(600)
    assert len(network.times("p")) == 1
    assert redialer.reconnected == 0


async def test_blocked_deferred_own_and_unreadable_peers_get_no_dials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    redialer, network, store = make(known=["blocked", "room-member", "me", "q"])
    network.blocked.add("blocked")
    redialer.defer = lambda peer: peer == "room-member"  # the connection manager's
    async with running(redialer):
        await trio.sleep(60)
        assert [p for _, p in network.dials] == ["q"]
        network.connected.discard("q")
        store.broken = True
        redialer.lost("q")
        await trio.sleep(60)
    assert [p for _, p in network.dials] == ["q"]  # the store failed: nothing to dial
