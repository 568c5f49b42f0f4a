"""Members behind NAT find each other through the DHT and meet on a relay.

r is public (198.18.0.1), a DHT server and a relay, and in no room, so no room
directory or gossip on r can tell a and b of each other. a sits behind nat1 and b
behind nat2 (harness/netns.py `Scenario.nat`), each bootstrapped to r only, and both
join room `porch`. Neither can be dialed at its own address. Each reserves a slot on
r, announces the room's key on the DHT with its relayed address, and finds the
other's record there: one dials the other's relayed address, and they chat. Until
2026-12-03 a provider record cut each address at its first /p2p/, so it carried the
relay's own address instead of the relayed one, and they never met.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.daemons import texts, wait_for
from harness.nat import ROOM, addrs_of, circuit_addrs
from harness.netns import Network, Scenario
from harness.system_packages import ensure_apt

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


@pytest.mark.usefixtures("iptables")
def test_members_behind_nat_find_each_other_through_the_dht_and_meet_on_a_relay(
        netns: Build) -> None:
    net = netns(Scenario.nat(["r"], ["a"], ["b"]))
    net.masquerade_all(stealth=True)
    r = net.start_daemon("r", "r", listen="/ip4/0.0.0.0/tcp/4001")
    a = net.start_daemon("a", "a", "--bootstrap", r.addr)
    b = net.start_daemon("b", "b", "--bootstrap", r.addr)
    started = time.monotonic()
    for d in (a, b):
        d.call("join", room=ROOM)
    for d in (a, b):
        wait_for(lambda d=d: bool(circuit_addrs(d)), timeout=40,
                 message=f"{d.name} to hold a reservation on r")
    try:
        wait_for(lambda: addrs_of(a, b) and addrs_of(b, a), timeout=120,
                 message="a and b to find each other through the DHT")
    except Exception:
        for d in (a, b):
            print(d.name, d.call("status")["discovery"]["dht"])
        raise
    met = round(time.monotonic() - started, 1)
    # They met on r: one of them accepted the other's call through the relay. The
    # accepting side logs that once its upgrade returns, which can be a moment after
    # both list each other, and the log reaches us through a reader thread.
    wait_for(lambda: any(f"inbound circuit from {other.peer_id}" in line
                         for d, other in ((a, b), (b, a)) for line in list(d.stderr_lines)),
             timeout=10, message="a relayed connection between a and b")
    assert all(d.call("status")["discovery"]["dht"]["providers_found"] >= 1 for d in (a, b))
    a.call("send", room=ROOM, text="found you through the DHT")
    wait_for(lambda: "found you through the DHT" in texts(b, ROOM), timeout=20,
             message="b to get a's message")
    b.call("send", room=ROOM, text="and I you")
    wait_for(lambda: "and I you" in texts(a, ROOM), timeout=20, message="a to get b's message")
    print(f"met through the DHT {met} s after joining; dht "
          f"{ {d.name: d.call('status')['discovery']['dht'] for d in (a, b)} }")
