"""The sync scheduler (daemon/sync.py) under trio's mock clock: when sessions start.

The network and the sessions are fakes: a session is a scripted outcome (a number of
differences, or None for a failure), so these tests are about the schedule alone:
first meetings, the lower peer id's routine rounds, quiet doubling, failure backoff,
gaps, `forget_peer`, `sync_now`, the concurrency limit and a failing store. The
`autojump_clock` fixture makes hours of schedule run in milliseconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from gossipchat.daemon import sync
from gossipchat.daemon.core.rooms import topic_for
from gossipchat.daemon.sync import SyncService
from harness.services import gaps, run_for, running

INTERVAL = 30.0
SEED = 7
ROOM = "den"


@dataclass
class FakeNetwork:
    """What the scheduler asks of P2PNetwork: who is connected, in which topic, blocked."""

    peer_id: str
    connected: set[str] = field(default_factory=set)
    topics: dict[str, set[str]] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)

    def set_stream_handler(self, protocol: str, handler: Any) -> None:
        self.handler = handler

    def connected_peers(self) -> list[str]:
        return sorted(self.connected)

    def topic_peers(self, topic: str) -> list[str]:
        return sorted(self.topics.get(topic, ()))

    def is_blocked(self, peer: str) -> bool:
        return peer in self.blocked


class FakeHistory:
    """Joined rooms and the store's health, as SyncService reads them from History."""

    def __init__(self, rooms: Iterable[str]) -> None:
        self.rooms = list(rooms)
        self.store_health = SimpleNamespace(writes_failing=False)

    def joined_rooms(self) -> list[str]:
        return list(self.rooms)


class ScriptedSync(SyncService):
    """SyncService whose sessions return scripted outcomes instead of talking."""

    def __init__(self, history: FakeHistory, network: FakeNetwork, outcomes: list[int | None],
                 *, session_s: float = 0.0) -> None:
        # Scripted sessions never touch the store, so there is none.
        super().__init__(history, None, network,  # type: ignore[arg-type]
                         interval_s=INTERVAL, depth=1000,
                         rng=random.Random(SEED))
        self.outcomes = outcomes  # the last one repeats
        self.session_s = session_s
        self.starts: list[tuple[float, str, str]] = []
        self.untils: list[int] = []  # Hello's until of each session (0: none)
        self.running_now = 0
        self.most_at_once = 0

    async def _initiate(self, room: str, peer: str, until: int = 0) -> int | None:
        self.starts.append((trio.current_time(), room, peer))
        self.untils.append(until)
        self.running_now += 1
        self.most_at_once = max(self.most_at_once, self.running_now)
        try:
            await trio.sleep(self.session_s)
        finally:
            self.running_now -= 1
        return self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]

    def times(self, peer: str = "B") -> list[float]:
        return [t for t, _, p in self.starts if p == peer]


def setup(outcomes: list[int | None], *, me: str = "A", peers: Iterable[str] = ("B",),
          session_s: float = 0.0) -> tuple[ScriptedSync, FakeHistory, FakeNetwork]:
    peers = set(peers)
    network = FakeNetwork(me, connected=set(peers), topics={topic_for(ROOM): set(peers)})
    history = FakeHistory([ROOM])
    return ScriptedSync(history, network, outcomes, session_s=session_s), history, network




def within_a_tick(actual: list[float], due: list[float]) -> None:
    """Each session started at its due time or at the first tick after it."""
    assert len(actual) >= len(due), (actual, due)
    for got, want in zip(actual, due, strict=False):
        assert want - 1e-6 <= got <= want + sync.TICK_S + 1e-6, (actual, due)


async def test_a_first_meeting_syncs_at_once_and_quiet_rounds_double_to_8x(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, _ = setup([0])  # every round finds nothing to do
    jitter = random.Random(SEED)
    start = trio.current_time()
    await run_for(service, INTERVAL * 60)
    times = service.times()
    assert times[0] == pytest.approx(start)
    # Quiet rounds: 2x, 4x, then 8x the interval (each with its own jitter), and no more.
    factors = [2, 4, 8, 8, 8]
    due = [INTERVAL * f * jitter.uniform(0.75, 1.25) for f in factors]
    for gap, want in zip(gaps(times), due, strict=False):
        assert want - 1e-6 <= gap <= want + sync.TICK_S + 1e-6, (gaps(times), due)
    assert max(gaps(times)) <= INTERVAL * 8 * 1.25 + sync.TICK_S


async def test_a_difference_brings_the_pair_back_to_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, _ = setup([0, 0, 0, 5, 0])
    jitter = random.Random(SEED)
    await run_for(service, INTERVAL * 40)
    # After rounds finding 0, 0, 0, 5, 0 differences: 2x, 4x, 8x, 1x, 2x.
    due = [INTERVAL * f * jitter.uniform(0.75, 1.25) for f in (2, 4, 8, 1, 2)]
    for gap, want in zip(gaps(service.times()), due, strict=False):
        assert want - 1e-6 <= gap <= want + sync.TICK_S + 1e-6, (gaps(service.times()), due)


async def test_failures_back_off_doubling_to_a_minute_then_success_resets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: list[int | None] = [None] * 8 + [3]
    service, _, _ = setup(outcomes)
    await run_for(service, 400)
    times = service.times()
    backoff = [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    for gap, want in zip(gaps(times), backoff, strict=False):
        assert want - 1e-6 <= gap <= want + sync.TICK_S + 1e-6, (gaps(times), backoff)
    assert len(times) >= 10  # the success after the failures, and rounds after it
    # The round after the success is due after about the interval, not a backoff.
    assert INTERVAL * 0.75 - 1e-6 <= gaps(times)[8] <= INTERVAL * 1.25 + sync.TICK_S


async def test_routine_rounds_are_the_lower_peer_ids_but_first_meetings_are_either_sides(
    autojump_clock: trio.testing.MockClock,
) -> None:
    higher, _, _ = setup([0], me="Z", peers=("B",))
    lower, _, _ = setup([0], me="A", peers=("B",))
    async with running(higher), running(lower):
        await trio.sleep(INTERVAL * 30)
    assert len(higher.times()) == 1  # the first meeting only
    assert len(lower.times()) > 3


async def test_a_failed_pair_is_still_retried_by_the_higher_peer_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Backoff retries are not routine rounds: whoever failed tries again."""
    service, _, _ = setup([None, None, 0], me="Z")
    await run_for(service, INTERVAL * 30)
    assert len(service.times()) == 3  # two failures, then the success, then nothing


async def test_forget_peer_makes_the_next_meeting_immediate_and_resets_doubling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, network = setup([0])
    async with running(service):
        await trio.sleep(INTERVAL * 20)  # quiet rounds: now at 8x
        assert len(service.times()) >= 4
        network.connected.discard("B")
        service.forget_peer("B")
        await trio.sleep(INTERVAL)
        count = len(service.times())
        network.connected.add("B")
        back = trio.current_time()
        await trio.sleep(INTERVAL * 4)
    times = service.times()[count:]
    within_a_tick(times[:1], [back])  # at once, not after the 8x wait
    assert gaps(times)[0] <= INTERVAL * 2 * 1.25 + sync.TICK_S  # doubling starts over


async def test_a_suspected_gap_syncs_after_the_debounce(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, _ = setup([0])
    async with running(service):
        await trio.sleep(5)  # the first meeting is done; the next round is ~60 s away
        assert len(service.times()) == 1
        suspected = trio.current_time()
        wall = time.time() * 1000
        service.suspect_gap(ROOM, "B")
        service.suspect_gap(ROOM, "B")  # a second suspicion does not postpone it
        await trio.sleep(sync.GAP_DEBOUNCE_S + 2 * sync.TICK_S)
        within_a_tick(service.times()[1:], [suspected + sync.GAP_DEBOUNCE_S])
        # One follow-up, GAP_SETTLE_MS later, for what the first one left out; then
        # the routine schedule (~60 s away here).
        await trio.sleep(sync.GAP_SETTLE_MS / 1000 + 2 * sync.TICK_S)
        follow_up = service.times()[2:]
        await trio.sleep(10)
    within_a_tick(follow_up, [service.times()[1] + sync.GAP_SETTLE_MS / 1000])
    assert len(service.times()) == 3
    assert service.untils[0] == 0  # a first meeting reconciles everything
    # The gap sessions leave out the last GAP_SETTLE_MS (wall clock, ms; the mock
    # clock moves trio's time only).
    assert all(wall - sync.GAP_SETTLE_MS - 1000 < until <= time.time() * 1000
               - sync.GAP_SETTLE_MS for until in service.untils[1:]), service.untils


async def test_routine_rounds_leave_out_the_settling_seconds_but_first_meetings_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, network = setup([1])  # every round finds a difference: at the interval
    async with running(service):
        await trio.sleep(INTERVAL * 3)
        before = time.time() * 1000
        await trio.sleep(INTERVAL * 2)
        network.connected.discard("B")
        service.forget_peer("B")
        await trio.sleep(INTERVAL)
        network.connected.add("B")
        count = len(service.untils)
        await trio.sleep(sync.TICK_S * 2)
    assert service.untils[0] == 0
    routine = service.untils[1:count]
    assert len(routine) >= 3, service.untils
    assert all(until > 0 for until in routine), service.untils
    # The wall clock (ms) less SETTLE_MS: the mock clock moves trio's time only.
    assert all(before - sync.SETTLE_MS - 60_000 < until <= time.time() * 1000 - sync.SETTLE_MS
               for until in routine)
    assert service.untils[count:] == [0]  # meeting again after a disconnect


async def test_sync_now_starts_every_peer_of_the_room_at_the_next_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, _ = setup([0], peers=("B", "C"))
    async with running(service):
        await trio.sleep(5)
        asked = trio.current_time()
        service.sync_now(ROOM)
        await trio.sleep(2 * sync.TICK_S)
    for peer in ("B", "C"):
        within_a_tick(service.times(peer)[1:], [asked])


async def test_no_session_starts_while_the_store_refuses_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, history, _ = setup([0])
    history.store_health.writes_failing = True
    async with running(service):
        await trio.sleep(INTERVAL * 10)
        assert service.times() == []
        history.store_health.writes_failing = False
        healed = trio.current_time()
        await trio.sleep(sync.TICK_S * 1.5)
    within_a_tick(service.times(), [healed])


async def test_disconnected_and_blocked_peers_are_left_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, network = setup([0], peers=("B", "C", "D"))
    network.connected.discard("C")  # still listed in the topic, but gone
    network.blocked.add("D")
    await run_for(service, INTERVAL * 10)
    assert service.times("B")
    assert service.times("C") == []
    assert service.times("D") == []


async def test_a_connection_dialed_for_a_moment_gets_no_session_until_it_stays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, _ = setup([0], peers=("B", "C"))
    passing = {"C"}  # a DHT query's connection, about to be hung up on
    service.passing = passing.__contains__
    async with running(service):
        await trio.sleep(INTERVAL)
        assert service.times("B")
        assert service.times("C") == []
        passing.clear()  # the DHT kept it: the room wants it
        kept = trio.current_time()
        await trio.sleep(sync.TICK_S * 1.5)
    within_a_tick(service.times("C"), [kept])


async def test_at_most_four_sessions_run_at_once_and_never_two_per_pair(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peers = [f"P{i}" for i in range(10)]
    # Sessions longer than the interval: a pair's next round must wait for its last.
    service, _, _ = setup([0], peers=peers, session_s=INTERVAL * 3)
    await run_for(service, INTERVAL * 40)
    assert service.most_at_once == sync.MAX_CONCURRENT_SESSIONS
    for peer in peers:
        starts = service.times(peer)
        assert starts, peer
        assert all(gap >= INTERVAL * 3 for gap in gaps(starts)), (peer, starts)
