"""Circuit relay v2 through real NAT: two daemons behind their own masquerading
routers chat through a public relay daemon, with no `connect` between them.

r is public (198.18.0.1); a sits behind nat1, b behind nat2 (tests/netns.py
`Scenario.nat`), each bootstrapped to r only. AutoNAT tells a and b they are private
and r public; a and b reserve a slot on r, announce `.../p2p/<r>/p2p-circuit` in
presence, and the connection manager dials the other member through r. GossipSub
and sync then run over the relayed connection.
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
NO_PUNCH = "hole_punching = false\n"


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


def relayed_peer(daemon: DaemonProcess, other: DaemonProcess) -> list[str]:
    """The circuit addresses of daemon's connection to other ([] if none)."""
    for peer in daemon.call("peers"):
        if peer["peer_id"] == other.peer_id:
            return [a for a in peer["addrs"] if "/p2p-circuit" in a]
    return []


@pytest.mark.usefixtures("iptables")
@pytest.mark.parametrize("random_fully", [False, True], ids=["port-preserving", "symmetric"])
def test_two_daemons_behind_nat_chat_both_ways_through_a_public_relay(
        netns: Build, random_fully: bool) -> None:
    net = netns(Scenario.nat(["r"], ["a"], ["b"]))
    net.masquerade_all(random_fully=random_fully)
    r = net.start_daemon("r", "r", listen="/ip4/0.0.0.0/tcp/4001")
    r.call("join", room=ROOM)
    started = time.monotonic()
    # What is tested is the relayed connection itself: with port-preserving routers
    # DCUtR would replace it by a direct one (test_netns_holepunch.py).
    a = net.start_daemon("a", "a", "--bootstrap", r.addr, config=NO_PUNCH)
    b = net.start_daemon("b", "b", "--bootstrap", r.addr, config=NO_PUNCH)
    for d in (a, b):
        d.call("join", room=ROOM)

    for d, verdict in ((a, "private"), (b, "private"), (r, "public")):
        wait_for(lambda d=d, v=verdict: d.call("status")["reachability"] == v, timeout=30,
                 message=f"{d.name} to be told {verdict}")
    for d in (a, b):
        wait_for(lambda d=d: any("/p2p-circuit" in x for x in d.call("id")["addrs"]),
                 timeout=30, message=f"{d.name} to hold a reservation on r")
        circuit = [x for x in d.call("id")["addrs"] if "/p2p-circuit" in x]
        assert circuit[0] == f"/ip4/{net.ip('r')}/tcp/4001/p2p/{r.peer_id}/p2p-circuit" \
                             f"/p2p/{d.peer_id}", circuit
    reserved = round(time.monotonic() - started, 2)
    verdicts = {d.name: d.call("status")["autonat"]["first_verdict_after_s"] for d in (a, b, r)}
    assert r.call("status")["relay"]["reservations"] == 2

    # Nobody connects a and b: presence tells each the other's circuit address.
    wait_for(lambda: relayed_peer(a, b) and relayed_peer(b, a), timeout=60,
             message="a and b to connect through r")
    connected = round(time.monotonic() - started, 2)
    assert relayed_peer(a, b) == [f"/p2p/{r.peer_id}/p2p-circuit/p2p/{b.peer_id}"]

    sent = time.monotonic()
    a.call("send", room=ROOM, text="hello from behind nat1")
    wait_for(lambda: "hello from behind nat1" in texts(b, ROOM), timeout=20,
             message="b to get a's message")
    a_to_b = round(time.monotonic() - sent, 2)
    sent = time.monotonic()
    b.call("send", room=ROOM, text="hello from behind nat2")
    wait_for(lambda: "hello from behind nat2" in texts(a, ROOM), timeout=20,
             message="a to get b's message")
    b_to_a = round(time.monotonic() - sent, 2)

    relay = r.call("status")["relay"]
    assert relay["circuits"] >= 1, relay
    # Still relayed, never direct: the routers let nothing in.
    assert all("/p2p-circuit" in x for x in next(
        p for p in a.call("peers") if p["peer_id"] == b.peer_id)["addrs"])
    print(f"verdicts after start {verdicts}, reservations after {reserved} s, "
          f"a-b connected after {connected} s, a->b {a_to_b} s, b->a {b_to_a} s, relay {relay}")
