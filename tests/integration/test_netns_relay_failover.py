"""Relay failover through real NAT: the relay a circuit runs over is killed, and the
two private daemons reconnect through the other public relay they knew.

r1 and r2 are public (198.18.0.1, .2) and members of the room; a sits behind nat1, b
behind nat2 (harness/netns.py `Scenario.nat`, masquerading, nothing comes in). a, b
and r2 are bootstrapped to r1 only: a and b meet r2 through the room's directory and
the connection manager. AutoNAT tells a and b they are private; each reserves a slot
on both relays (relay_reservations = 2) and announces both circuit addresses in
presence, and a and b connect through one of them. That relay is killed (SIGKILL):
within seconds a and b must be connected again through the other, and messages sent
after the kill, during the gap too, reach the other side.

With three relays, the one a and b fail over to is killed too: by then each has
replaced the reservation it lost on the first with one on the last relay and
announced the new circuit address, which is the only way left to reach it.

With relays outside the room (a and b bootstrapped to both, a given b's circuit
address once), nothing but the circuit carries the room: messages sent in the gap
arrive by history sync over the new circuit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.daemons import DaemonProcess, texts, wait_for
from harness.netns import Network, Scenario
from harness.system_packages import ensure_apt

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")
ROOM = "porch"
# a and b keep to the relays: the routers preserve ports, so DCUtR would take them
# direct (test_netns_holepunch.py), and these tests are about relay failover.
NO_PUNCH = "hole_punching = false\n"


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


def relays_of(daemon: DaemonProcess, other: DaemonProcess) -> set[str]:
    """The relays daemon's connections to other run through (empty if none)."""
    for peer in daemon.call("peers"):
        if peer["peer_id"] == other.peer_id:
            return {a.split("/p2p/")[1].split("/")[0]
                    for a in peer["addrs"] if "/p2p-circuit" in a}
    return set()


def wait_timed(wanted: dict[str, Callable[[], bool]], since: float, message: str
               ) -> dict[str, float]:
    """Seconds from `since` until each condition first held (all within 30 s)."""
    after: dict[str, float] = {}

    def all_seen() -> bool:
        for name, seen in wanted.items():
            if name not in after and seen():
                after[name] = round(time.monotonic() - since, 2)
        return len(after) == len(wanted)

    wait_for(all_seen, timeout=30, message=f"{message} (seen after: {after})")
    return after


def kill_their_relay(a: DaemonProcess, b: DaemonProcess, relays: dict[str, DaemonProcess],
                     tag: str) -> tuple[DaemonProcess, dict[str, float]]:
    """SIGKILL the relay a and b's circuit runs over; time their reconnection through
    another and the delivery of a message each sent right after the kill."""
    # Simultaneous dials from both sides may leave two circuits: one relay dies here.
    used = sorted(relays_of(a, b))
    dead = relays.pop(used[0])
    dead.kill()
    killed = time.monotonic()
    # Sent in the gap: gossip through another relay or sync on the new circuit carries it.
    a.call("send", room=ROOM, text=f"{tag}: during the gap from a")
    b.call("send", room=ROOM, text=f"{tag}: during the gap from b")
    after = wait_timed({
        "reconnected": lambda: bool(relays_of(a, b)) and relays_of(a, b) <= set(relays)
        and bool(relays_of(b, a)) and relays_of(b, a) <= set(relays),
        "a's gap message at b": lambda: f"{tag}: during the gap from a" in texts(b, ROOM),
        "b's gap message at a": lambda: f"{tag}: during the gap from b" in texts(a, ROOM),
    }, killed, f"a and b to reconnect without {dead.name} and get the gap messages")
    after["circuits before"] = len(used)
    return dead, after


def reserved_on_live(d: DaemonProcess, relays: dict[str, DaemonProcess], n: int) -> bool:
    """d holds n reservations, all on live relays, and announces exactly those circuits."""
    reserved = set(d.call("status")["relay"]["reserved_on"])
    circuits = {x.split("/p2p/")[1] for x in d.call("id")["addrs"] if "/p2p-circuit" in x}
    return len(reserved) == n and reserved <= set(relays) \
        and circuits == {f"{r}/p2p-circuit" for r in reserved}


@pytest.mark.usefixtures("iptables")
def test_a_relayed_pair_fails_over_to_the_other_relay_when_theirs_is_killed(
        netns: Build) -> None:
    net = netns(Scenario.nat(["r1", "r2"], ["a"], ["b"]))
    net.masquerade_all()
    r1 = net.start_daemon("r1", "r1", listen="/ip4/0.0.0.0/tcp/4001")
    r2 = net.start_daemon("r2", "r2", "--bootstrap", r1.addr, listen="/ip4/0.0.0.0/tcp/4001")
    a = net.start_daemon("a", "a", "--bootstrap", r1.addr, config=NO_PUNCH)
    b = net.start_daemon("b", "b", "--bootstrap", r1.addr, config=NO_PUNCH)
    for d in (r1, r2, a, b):
        d.call("join", room=ROOM)
    relays = {r1.peer_id: r1, r2.peer_id: r2}

    for d in (a, b):
        wait_for(lambda d=d: set(d.call("status")["relay"]["reserved_on"]) == set(relays),
                 timeout=60, message=f"{d.name} to hold reservations on r1 and r2")
        wait_for(lambda d=d: sum("/p2p-circuit" in x for x in d.call("id")["addrs"]) == 2,
                 timeout=10, message=f"{d.name} to announce both circuit addresses")
    wait_for(lambda: relays_of(a, b) and relays_of(b, a), timeout=60,
             message="a and b to connect through a relay")
    a.call("send", room=ROOM, text="before the kill")
    wait_for(lambda: "before the kill" in texts(b, ROOM), timeout=20,
             message="b to get a's first message")

    dead, after = kill_their_relay(a, b, relays, "r")
    (survivor,) = relays.values()
    assert relays_of(a, b) == {survivor.peer_id}
    sent = time.monotonic()
    a.call("send", room=ROOM, text="after the failover from a")
    wait_for(lambda: "after the failover from a" in texts(b, ROOM), timeout=20,
             message="b to get a's message after the failover")
    a_to_b = round(time.monotonic() - sent, 2)
    sent = time.monotonic()
    b.call("send", room=ROOM, text="after the failover from b")
    wait_for(lambda: "after the failover from b" in texts(a, ROOM), timeout=20,
             message="a to get b's message after the failover")
    b_to_a = round(time.monotonic() - sent, 2)

    # The dead relay's reservation and circuit address are gone from both.
    for d in (a, b):
        wait_for(lambda d=d: reserved_on_live(d, relays, 1), timeout=10,
                 message=f"{d.name} to drop its reservation on {dead.name} and its circuit")
    print(f"killed {dead.name}, after the kill (s): {after}; through {survivor.name} "
          f"then a->b {a_to_b} s, b->a {b_to_a} s")


@pytest.mark.usefixtures("iptables")
def test_a_lost_reservation_is_replaced_and_announced_and_carries_the_next_failover(
        netns: Build) -> None:
    net = netns(Scenario.nat(["r1", "r2", "r3"], ["a"], ["b"]))
    net.masquerade_all()
    r1 = net.start_daemon("r1", "r1", listen="/ip4/0.0.0.0/tcp/4001")
    r2 = net.start_daemon("r2", "r2", "--bootstrap", r1.addr, listen="/ip4/0.0.0.0/tcp/4001")
    r3 = net.start_daemon("r3", "r3", "--bootstrap", r1.addr, listen="/ip4/0.0.0.0/tcp/4001")
    a = net.start_daemon("a", "a", "--bootstrap", r1.addr, config=NO_PUNCH)
    b = net.start_daemon("b", "b", "--bootstrap", r1.addr, config=NO_PUNCH)
    for d in (r1, r2, r3, a, b):
        d.call("join", room=ROOM)
    relays = {r.peer_id: r for r in (r1, r2, r3)}
    for d in (a, b):
        wait_for(lambda d=d: reserved_on_live(d, relays, 2), timeout=60,
                 message=f"{d.name} to hold and announce reservations on two relays")
    wait_for(lambda: relays_of(a, b) and relays_of(b, a), timeout=60,
             message="a and b to connect through a relay")

    first, after_first = kill_their_relay(a, b, relays, "first")
    # Each replaces the reservation it lost: two again, both on live relays.
    replaced = wait_timed({d.name: lambda d=d: reserved_on_live(d, relays, 2) for d in (a, b)},
                          time.monotonic(), "a and b to reserve on the last relay")
    # The new circuit address has to reach the other side in presence before the next
    # kill: the last relay may be in neither's first record.
    time.sleep(6)  # presence re-announces a change at most every 5 s (CHANGE_GAP_S)
    second, after_second = kill_their_relay(a, b, relays, "second")
    (last,) = relays.values()
    assert relays_of(a, b) == {last.peer_id}, relays_of(a, b)
    a.call("send", room=ROOM, text="after both kills")
    wait_for(lambda: "after both kills" in texts(b, ROOM), timeout=20,
             message="b to get a's message after both kills")
    print(f"killed {first.name}: {after_first}; reservations replaced after {replaced} s; "
          f"killed {second.name}: {after_second}; now through {last.name}")


@pytest.mark.usefixtures("iptables")
def test_with_relays_outside_the_room_sync_on_the_new_circuit_brings_the_gap(
        netns: Build) -> None:
    net = netns(Scenario.nat(["r1", "r2"], ["a"], ["b"]))
    net.masquerade_all()
    r1 = net.start_daemon("r1", "r1", listen="/ip4/0.0.0.0/tcp/4001")
    r2 = net.start_daemon("r2", "r2", "--bootstrap", r1.addr, listen="/ip4/0.0.0.0/tcp/4001")
    a = net.start_daemon("a", "a", "--bootstrap", r1.addr, "--bootstrap", r2.addr,
                         config=NO_PUNCH)
    b = net.start_daemon("b", "b", "--bootstrap", r1.addr, "--bootstrap", r2.addr,
                         config=NO_PUNCH)
    for d in (a, b):
        d.call("join", room=ROOM)
    relays = {r.peer_id: r for r in (r1, r2)}
    for d in (a, b):
        wait_for(lambda d=d: reserved_on_live(d, relays, 2), timeout=60,
                 message=f"{d.name} to hold and announce reservations on r1 and r2")
    # a is given b's first circuit address; presence tells it the other one.
    a.call("connect", addr=next(x for x in b.call("id")["addrs"] if "/p2p-circuit" in x))
    wait_for(lambda: relays_of(a, b) and relays_of(b, a), timeout=20,
             message="a and b to connect through a relay")
    a.call("send", room=ROOM, text="before the kill")
    wait_for(lambda: "before the kill" in texts(b, ROOM), timeout=20,
             message="b to get a's first message")
    # Only presence tells a of b's other circuit (and b of a's): wait for the records.
    for d, other in ((a, b), (b, a)):
        wait_for(lambda d=d, o=other: o.peer_id in {m["peer_id"] for m in
                                                    d.call("members", room=ROOM)},
                 timeout=20, message=f"{d.name} to hold {other.name}'s presence record")

    dead, after = kill_their_relay(a, b, relays, "outside")
    (survivor,) = relays.values()
    assert relays_of(a, b) == {survivor.peer_id}, relays_of(a, b)
    sent = time.monotonic()
    b.call("send", room=ROOM, text="after the failover from b")
    wait_for(lambda: "after the failover from b" in texts(a, ROOM), timeout=20,
             message="a to get b's message after the failover")
    b_to_a = round(time.monotonic() - sent, 2)
    print(f"relays outside the room, killed {dead.name}: {after}; "
          f"through {survivor.name} then b->a {b_to_a} s")
