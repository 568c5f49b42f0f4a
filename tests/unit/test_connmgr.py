"""The connection manager's policy under a fake clock and a seeded rng."""

from __future__ import annotations

import itertools
import random
from collections import Counter

from gossipchat.daemon.core import connmgr
from gossipchat.daemon.core.connmgr import AddressBackoff, Limits, Member, RoomView

NOW_MS = 1_800_000_000_000
SELF = "self"


def member(i: int, *, online: bool = True, seen_ms: int = NOW_MS, addrs: int = 1) -> Member:
    return Member(f"p{i}", tuple(f"/ip4/198.18.{k}.{i}/tcp/4001" for k in range(addrs)),
                  online, seen_ms)


def room(*members: Member, name: str = "lobby") -> RoomView:
    return RoomView(name, tuple(members))


def plan(rooms: list[RoomView], *, connected: dict[str, float] | None = None,
         blocked: tuple[str, ...] = (), dialing: tuple[str, ...] = (),
         backoff: AddressBackoff | None = None, limits: Limits | None = None,
         now: float = 1000.0, seed: int = 1) -> connmgr.Plan:
    return connmgr.plan(rooms=rooms, connected=connected or {}, self_id=SELF,
                        blocked=blocked, dialing=dialing,
                        backoff=backoff or AddressBackoff(), limits=limits or Limits(),
                        now=now, now_ms=NOW_MS, rng=random.Random(seed))


def test_a_room_below_the_minimum_dials_members_up_to_it_and_never_itself() -> None:
    me = Member(SELF, ("/ip4/198.18.0.99/tcp/1",), True, NOW_MS)
    view = room(me, *(member(i) for i in range(1, 9)))
    out = plan([view], connected={"p1": 0.0})
    assert len(out.dials) == 3
    assert all(peer not in (SELF, "p1") for peer, _ in out.dials)
    assert out.trims == ()


def test_choices_are_random_so_no_member_becomes_the_hub() -> None:
    view = room(*(member(i) for i in range(1, 21)))
    picks: Counter[str] = Counter()
    for seed in range(200):
        for peer, _ in plan([view], seed=seed).dials:
            picks[peer] += 1
    assert len(picks) == 20
    # 800 picks over 20 members: each about 40; none near a hub's 200.
    assert max(picks.values()) < 80, picks


def test_online_members_come_before_recent_ones_and_old_ones_never() -> None:
    view = room(member(1, online=False, seen_ms=NOW_MS - 1000), member(2),
                member(3, online=False, seen_ms=NOW_MS - connmgr.RECENT_MS - 1))
    out = plan([view], limits=Limits(room_peers_min=1))
    assert [p for p, _ in out.dials] == ["p2"]
    out = plan([view], limits=Limits(room_peers_min=4))
    assert sorted(p for p, _ in out.dials) == ["p1", "p2"]


def test_blocked_dialing_and_connected_members_are_skipped() -> None:
    view = room(*(member(i) for i in range(1, 7)))
    out = plan([view], connected={"p1": 0.0}, blocked=("p2",), dialing=("p3",))
    dialed = {p for p, _ in out.dials}
    assert len(dialed) == 2
    assert dialed <= {"p4", "p5", "p6"}


def test_dials_in_flight_and_the_global_cap_bound_the_dials() -> None:
    view = room(*(member(i) for i in range(1, 30)))
    out = plan([view], limits=Limits(room_peers_min=20))
    assert len(out.dials) == connmgr.MAX_DIALS_IN_FLIGHT
    out = plan([view], connected={"x": 0.0, "y": 0.0},
               limits=Limits(room_peers_min=20, max_connections=3))
    assert len(out.dials) == 1


def test_one_dial_serves_every_room_the_member_is_in() -> None:
    shared = member(1)
    out = plan([room(shared, name="a"), room(shared, name="b")],
               limits=Limits(room_peers_min=1))
    assert out.dials == (("p1", shared.addrs[0]),)


def test_an_address_is_dialed_a_few_times_then_ever_more_rarely() -> None:
    backoff = AddressBackoff()
    addr = "/ip4/203.0.113.7/tcp/22"
    attempts: list[float] = []
    now = 0.0
    while now < 4 * 3600:
        if backoff.allowed(addr, now):
            attempts.append(now)
            backoff.failed(addr, now)
        now += 0.25
    assert len([t for t in attempts if t < 60]) == 6
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == sorted(gaps)
    assert max(gaps) <= connmgr.MAX_BACKOFF_S + 0.25
    # Four hours of a dead address: about 15 dials, not thousands.
    assert len(attempts) < 16, attempts
    backoff.succeeded(addr)
    assert backoff.allowed(addr, now)
    assert backoff.attempts(addr) == 0


def test_loopback_addresses_never_back_off_the_whole_host() -> None:
    backoff = AddressBackoff()
    for port in range(1000, 1000 + 2 * connmgr.HOST_FAILURES):
        backoff.failed(f"/ip4/127.0.0.1/tcp/{port}", 0.0)
    assert backoff.allowed("/ip4/127.0.0.1/tcp/4001", 0.0)
    for port in range(1000, 1000 + connmgr.HOST_FAILURES):
        backoff.failed(f"/ip4/203.0.113.7/tcp/{port}", 0.0)
    assert not backoff.allowed("/ip4/203.0.113.7/tcp/4001", 1.0)


def test_a_hostile_member_cannot_make_the_room_flood_a_third_party() -> None:
    """Fifty sybil members all announce the victim's 16 ports; one node dials on each
    tick of an hour, as the manager does. The victim sees a bounded number of dials."""
    victim = tuple(f"/ip4/203.0.113.7/tcp/{port}" for port in range(1000, 1016))
    sybils = [Member(f"s{i}", victim, True, NOW_MS) for i in range(50)]
    backoff = AddressBackoff()
    rng = random.Random(7)
    dials = 0
    for tick in range(3600):
        out = connmgr.plan(rooms=[room(*sybils)], connected={}, self_id=SELF, blocked=(),
                           dialing=(), backoff=backoff, limits=Limits(), now=float(tick),
                           now_ms=NOW_MS, rng=rng)
        for _peer, addr in out.dials:
            dials += 1
            backoff.failed(addr, float(tick))  # the Noise handshake fails: wrong peer
    # The IP backs off as a whole after HOST_FAILURES, then one try per long backoff.
    assert dials <= connmgr.HOST_FAILURES + 3600 / connmgr.LONG_BACKOFF_S * 4, dials


def test_a_member_with_every_address_backing_off_is_passed_over() -> None:
    backoff = AddressBackoff()
    dead = member(1)
    for _ in range(3):
        backoff.failed(dead.addrs[0], 0.0)
    out = plan([room(dead, member(2))], backoff=backoff, now=1.0)
    assert [p for p, _ in out.dials] == ["p2"]
    two = member(3, addrs=2)
    backoff.failed(two.addrs[0], 0.0)
    assert plan([room(two)], backoff=backoff, now=0.5).dials == (("p3", two.addrs[1]),)


def test_a_crowded_room_is_trimmed_to_its_maximum_but_new_connections_are_spared() -> None:
    view = room(*(member(i) for i in range(1, 16)))
    connected = {f"p{i}": 0.0 for i in range(1, 16)}
    connected["p15"] = 990.0  # connected 10 s ago: within the grace period
    out = plan([view], connected=connected)
    assert len(out.trims) == 5
    assert "p15" not in out.trims
    assert out.dials == ()


def test_a_member_another_room_needs_is_not_trimmed_for_a_crowded_one() -> None:
    crowded = room(*(member(i) for i in range(1, 13)), name="big")
    small = room(member(1), member(2), name="small")
    connected = {f"p{i}": 0.0 for i in range(1, 13)}
    out = plan([crowded, small], connected=connected)
    assert len(out.trims) == 2
    assert not {"p1", "p2"} & set(out.trims)


def test_over_the_global_cap_the_least_useful_go_first() -> None:
    view = room(*(member(i) for i in range(1, 5)))
    connected = {f"p{i}": 0.0 for i in range(1, 5)}
    connected.update({"stranger1": 0.0, "stranger2": 0.0})
    out = plan([view], connected=connected, limits=Limits(max_connections=5))
    assert len(out.trims) == 1
    assert out.trims[0].startswith("stranger")
    out = plan([view], connected=connected, limits=Limits(max_connections=3))
    assert {"stranger1", "stranger2"} <= set(out.trims)
    assert len(out.trims) == 3


def test_backoff_memory_is_bounded() -> None:
    backoff = AddressBackoff()
    for i in range(connmgr.MAX_TRACKED_ADDRS + 100):
        backoff.failed(f"/ip4/10.{i // 65536}.{i // 256 % 256}.{i % 256}/tcp/1", float(i))
    assert len(backoff.addrs) == connmgr.MAX_TRACKED_ADDRS
    assert len(backoff.hosts) == connmgr.MAX_TRACKED_ADDRS


R1, R2 = "12D3KooWRelayOne", "12D3KooWRelayTwo"
LAN = "/ip4/192.168.2.2/tcp/4001"
VIA_R1 = f"/ip4/198.18.0.1/tcp/4001/p2p/{R1}/p2p-circuit"
VIA_R2 = f"/ip4/198.18.0.2/tcp/4001/p2p/{R2}/p2p-circuit"


def test_relay_of_names_the_relay_of_a_circuit_address_only() -> None:
    assert connmgr.relay_of(VIA_R1) == R1
    assert connmgr.relay_of(f"{VIA_R2}/p2p/12D3KooWPeer") == R2
    assert connmgr.relay_of(LAN) is None
    assert connmgr.relay_of("/p2p-circuit") is None


def test_direct_addresses_first_then_circuits_through_live_relays() -> None:
    addrs = (VIA_R1, LAN, VIA_R2)
    assert connmgr.dial_order(addrs, relayed_last=False, connected={R1, R2}) \
        == (LAN, VIA_R1, VIA_R2)
    # r1 died: its circuit goes last.
    assert connmgr.dial_order(addrs, relayed_last=False, connected={R2}) \
        == (LAN, VIA_R2, VIA_R1)


def test_after_a_relayed_connection_is_lost_its_circuits_come_first() -> None:
    addrs = (LAN, VIA_R1, VIA_R2)
    assert connmgr.dial_order(addrs, relayed_last=True, connected={R2}) \
        == (VIA_R2, VIA_R1, LAN)
    assert connmgr.dial_order((LAN,), relayed_last=True, connected=()) == (LAN,)


def test_a_connection_dialed_for_a_moment_is_kept_only_to_reach_the_minimum() -> None:
    limits = Limits(room_peers_min=2, room_peers_max=6)
    room = RoomView("r", tuple(Member(f"m{i}", (), True, 0) for i in range(8)))
    other = RoomView("s", (Member("x", (), True, 0),))

    def keeps(peer: str, connected: set[str]) -> bool:
        return connmgr.worth_keeping(peer, [room, other], connected | {peer}, limits)

    assert keeps("m0", set())
    assert keeps("m0", {"m1"})  # one other member: below the minimum of 2
    # Two others reach the minimum: a DHT query's connection is closed again, though
    # the room is still below its maximum (6).
    assert not keeps("m0", {"m1", "m2"})
    assert not keeps("stranger", set())  # in no joined room
    assert keeps("x", {"m1", "m2"})  # the other room has nobody else
