"""Daemons on separate hosts (network namespaces, harness/netns.py): addresses and rooms.

Each daemon runs in its own namespace with its own 198.18.0.x address and listens on
0.0.0.0, as a user's daemon does by default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from harness.daemons import DaemonProcess, connect, sees, texts, wait_mesh
from harness.netns import Network, Scenario, Segment
from harness.system_packages import ensure_apt
from harness.waiting import wait_for

Build = Callable[[Scenario], Network]
ROOM = "line"


def ready_addrs(daemon: DaemonProcess) -> list[str]:
    fields = dict(part.split("=", 1) for part in daemon.ready_line.split()[2:])
    return fields["listen"].split(",")


def test_a_wildcard_listener_advertises_addresses_a_peer_can_dial(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b"))
    a = net.start_daemon("a", "a")
    own = f"/ip4/{net.ip('a')}/tcp/"
    suffix = f"/p2p/{a.peer_id}"

    for addrs in (ready_addrs(a), json.loads(a.cli("--json", "id").stdout)["addrs"]):
        assert not [x for x in addrs if "/0.0.0.0/" in x], addrs
        assert addrs[0].startswith(own), addrs
        assert addrs[0].endswith(suffix), addrs
        loopback = [i for i, x in enumerate(addrs) if x.startswith("/ip4/127.0.0.1/")]
        assert loopback, addrs
        assert min(loopback) > 0, addrs
        assert all(x.endswith(suffix) for x in addrs), addrs

    b = net.start_daemon("b", "b")
    done = b.cli("connect", ready_addrs(a)[0])
    assert done.returncode == 0, done.stderr
    wait_for(lambda: sees(a, b), message="a to see b")
    seen = next(p for p in a.call("peers") if p["peer_id"] == b.peer_id)
    assert seen["addrs"][0].startswith(f"/ip4/{net.ip('b')}/tcp/"), seen


def test_an_address_two_peers_observe_is_advertised_and_one_peer_is_not_enough(
        netns: Build) -> None:
    """a sits behind router r, which forwards its public port 4001 to a (DNAT).

    Peers on the public segment dial r's address and report it back to a through
    identify. Once two distinct observers do, a advertises it, before its LAN address,
    and a third peer dials a at its first address. When only one observer is left,
    the address goes again: a single peer cannot make a announce a lie.
    """
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)
    net = netns(Scenario((Segment(("a", "r"), subnet="192.168.1.0/24"),
                          Segment(("r", "b", "c", "d")))))
    lan, wan = net.ip("r", 0), net.ip("r", 1)
    net.enable_forwarding("r")
    net.add_route("a", "198.18.1.0/24", via=lan)
    net.run("r", ["iptables", "-t", "nat", "-A", "PREROUTING", "-i", net.iface("r", 1),
                  "-p", "tcp", "--dport", "4001", "-j", "DNAT",
                  "--to-destination", f"{net.ip('a')}:4001"], check=True)
    net.run("r", ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", net.iface("r", 1),
                  "-j", "MASQUERADE"], check=True)

    a = net.start_daemon("a", "a", listen="/ip4/0.0.0.0/tcp/4001")
    b, c, d = (net.start_daemon(h, h) for h in "bcd")
    public = f"/ip4/{wan}/tcp/4001/p2p/{a.peer_id}"
    private = f"/ip4/{net.ip('a')}/tcp/4001/p2p/{a.peer_id}"
    assert ready_addrs(a)[0] == private, "before anyone observes a, its LAN address leads"

    def advertised() -> list[str]:
        return list(a.call("id")["addrs"])

    for peer in (b, c):
        assert peer.cli("connect", public).returncode == 0
    addrs = wait_for(lambda: public in advertised() and advertised(), timeout=30,
                     message="a to advertise what b and c observe")
    assert addrs.index(public) < addrs.index(private) < addrs.index(
        f"/ip4/127.0.0.1/tcp/4001/p2p/{a.peer_id}"), addrs

    done = d.cli("connect", addrs[0])
    assert done.returncode == 0, done.stderr
    wait_for(lambda: sees(a, d), message="a to see d")

    for peer in (c, d):
        a.call("block", peer=peer.peer_id)
    wait_for(lambda: public not in advertised(), timeout=30,
             message="a to stop advertising an address only b still reports")


def test_a_line_of_three_survives_losing_its_middle(netns: Build) -> None:
    """a - b - c in a line: b dials a, c dials b. Messages cross the line both ways.

    Then b's cable is pulled (its connections hang, no reset reaches anyone). Presence
    told a and c of each other and the connection manager joined them, so the room
    carries on without b, with no `connect` from anyone.
    """
    net = netns(Scenario.lan("a", "b", "c"))
    a, b, c = (net.start_daemon(h, h) for h in "abc")
    connect(a, b)
    connect(b, c)
    for d in (a, b, c):
        d.call("join", room=ROOM)
    wait_mesh(b, ROOM, 2)
    wait_mesh(a, ROOM, 1)
    wait_mesh(c, ROOM, 1)

    a.call("send", room=ROOM, text="from a")
    c.call("send", room=ROOM, text="from c")
    wait_for(lambda: "from a" in texts(c, ROOM), message="c to hear a through b")
    wait_for(lambda: "from c" in texts(a, ROOM), message="a to hear c through b")
    # What the cut tests is the manager acting on presence: first presence must have
    # told a and c of each other (under load c's first announcement can come late).
    wait_for(lambda: c.peer_id in {m["peer_id"] for m in a.call("members", room=ROOM)}
             and a.peer_id in {m["peer_id"] for m in c.call("members", room=ROOM)},
             timeout=30, message="presence to tell a and c of each other")

    net.cut("b")
    cut = time.monotonic()
    a.call("send", room=ROOM, text="a after the cut")
    c.call("send", room=ROOM, text="c after the cut")
    wait_for(lambda: "a after the cut" in texts(c, ROOM), timeout=30,
             message="c to hear a without b")
    wait_for(lambda: "c after the cut" in texts(a, ROOM), timeout=30,
             message="a to hear c without b")
    print(f"both ways delivered {time.monotonic() - cut:.2f} s after b's cable was pulled")
    # a and c reached each other at the addresses they announced, not at loopback.
    seen = next(p for p in a.call("peers") if p["peer_id"] == c.peer_id)
    assert seen["addrs"][0].startswith(f"/ip4/{net.ip('c')}/tcp/") \
        or seen["addrs"][0].startswith(f"/ip4/{net.ip('a')}/tcp/"), seen


def test_a_line_of_three_heals_after_its_middle_is_killed(netns: Build) -> None:
    """The same line on three hosts, each keeping a single room peer (room_peers_min =
    1), so a and c are not connected while b lives. b is killed -9 and stays down: the
    connection manager dials across the LAN at the addresses a and c announced."""
    net = netns(Scenario.lan("a", "b", "c"))
    for host in "abc":
        home = net.cluster.home(host)
        home.mkdir(parents=True, mode=0o700)
        # DHT walks would link a and c as well (Kademlia dials the servers it meets).
        (home / "config.toml").write_text("room_peers_min = 1\ndht = \"off\"\n")
    a, b, c = (net.start_daemon(h, h) for h in "abc")
    connect(a, b)
    connect(b, c)
    for d in (a, b, c):
        d.call("join", room=ROOM)
    wait_for(lambda: len(a.call("members", room=ROOM)) == 3
             and len(c.call("members", room=ROOM)) == 3, timeout=30,
             message="a and c to know all three")
    assert not sees(a, c)

    b.kill()
    killed = time.monotonic()
    a.call("send", room=ROOM, text="a after the kill")
    c.call("send", room=ROOM, text="c after the kill")
    wait_for(lambda: "a after the kill" in texts(c, ROOM), timeout=30,
             message="c to hear a without b")
    wait_for(lambda: "c after the kill" in texts(a, ROOM), timeout=30,
             message="a to hear c without b")
    print(f"both ways delivered {time.monotonic() - killed:.2f} s after kill -9 of b")
    seen = next(p for p in a.call("peers") if p["peer_id"] == c.peer_id)
    assert seen["addrs"][0].startswith((f"/ip4/{net.ip('a')}/", f"/ip4/{net.ip('c')}/")), seen
