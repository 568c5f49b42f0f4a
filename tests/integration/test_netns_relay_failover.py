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


@pytest.mark.usefixtures("iptables")
def test_a_relayed_pair_fails_over_to_the_other_relay_when_theirs_is_killed(
        netns: Build) -> None:
    net = netns(Scenario.nat(["r1", "r2"], ["a"], ["b"]))
    net.masquerade_all()
    r1 = net.start_daemon("r1", "r1", listen="/ip4/0.0.0.0/tcp/4001")
    r2 = net.start_daemon("r2", "r2", "--bootstrap", r1.addr, listen="/ip4/0.0.0.0/tcp/4001")
    a = net.start_daemon("a", "a", "--bootstrap", r1.addr)
    b = net.start_daemon("b", "b", "--bootstrap", r1.addr)
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

    (used,) = relays_of(a, b)
    dead = relays[used]
    survivor = next(r for r in relays.values() if r is not dead)
    dead.kill()
    killed = time.monotonic()
    # Sent in the gap: gossip through the survivor or sync on the new circuit carries it.
    a.call("send", room=ROOM, text="during the gap from a")
    b.call("send", room=ROOM, text="during the gap from b")

    # Each wanted outcome is timed from the kill on its own.
    wanted: dict[str, Callable[[], bool]] = {
        "reconnected": lambda: relays_of(a, b) == {survivor.peer_id}
        and relays_of(b, a) == {survivor.peer_id},
        "a's gap message at b": lambda: "during the gap from a" in texts(b, ROOM),
        "b's gap message at a": lambda: "during the gap from b" in texts(a, ROOM),
    }
    after: dict[str, float] = {}

    def all_seen() -> bool:
        for name, seen in wanted.items():
            if name not in after and seen():
                after[name] = round(time.monotonic() - killed, 2)
        return len(after) == len(wanted)

    wait_for(all_seen, timeout=30,
             message=f"a and b to reconnect through {survivor.name} and get the gap messages")
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
        wait_for(lambda d=d: d.call("status")["relay"]["reserved_on"] == [survivor.peer_id],
                 timeout=10, message=f"{d.name} to drop its reservation on {dead.name}")
        wait_for(lambda d=d: all(dead.peer_id not in x for x in d.call("id")["addrs"]),
                 timeout=10, message=f"{d.name} to stop announcing {dead.name}'s circuit")
    print(f"killed {dead.name}, after the kill (s): {after}; through {survivor.name} "
          f"then a->b {a_to_b} s, b->a {b_to_a} s")
