"""Room rendezvous over the DHT: 12 daemons, each in its own namespace (tests/netns.py).

Each daemon knows one random other daemon (a seeded random tree, so the network is
connected). Four daemons, none of which knows another, join room `x`: they find
each other only through the DHT (each provides the room's key and asks for its
providers) and then chat. Every member provided the key before it looked, so a
provider finds the others, not only itself (py-libp2p's KadDHT would answer a
provider from its own store: tests/upstream/test_kad_dht_defects.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from harness.daemons import DaemonProcess, texts, wait_for
from harness.netns import Network, Scenario

Build = Callable[[Scenario], Network]
ROOM = "x"
HOSTS = [f"h{i}" for i in range(12)]
SEED = 10


def room_peers(daemon: DaemonProcess) -> set[str]:
    return {p["peer_id"] for p in daemon.call("peers") if ROOM in p["rooms"]}


def pick_members(rng: random.Random, parent: dict[int, int], count: int) -> list[int]:
    """count daemons, no two of which are linked in the tree."""
    edges = {frozenset((child, p)) for child, p in parent.items()}
    while True:
        chosen = rng.sample(range(len(HOSTS)), count)
        if all(frozenset((a, b)) not in edges for a in chosen for b in chosen if a != b):
            return chosen


def test_members_that_know_no_member_find_each_other_through_the_dht(netns: Build) -> None:
    t0 = time.monotonic()
    net = netns(Scenario.lan(*HOSTS))
    rng = random.Random(SEED)
    with ThreadPoolExecutor(2) as pool:  # 2 cores: more at once only slows each start
        daemons = list(pool.map(lambda h: net.start_daemon(h, h), HOSTS))
    parent = {i: rng.randrange(i) for i in range(1, len(HOSTS))}
    for child, p in parent.items():
        assert daemons[p].addr.startswith(f"/ip4/{net.ip(HOSTS[p])}/"), daemons[p].addr
        daemons[child].call("connect", addr=daemons[p].addr)
    members = [daemons[i] for i in pick_members(rng, parent, 4)]
    for daemon in daemons:
        wait_for(lambda d=daemon: d.call("status")["discovery"]["dht"]["routing_table"] >= 1,
                 timeout=30, message=f"{daemon.name}'s routing table")
    assert all(not room_peers(m) for m in members)

    ids = {m.peer_id for m in members}
    linked = sum(len(ids & {p["peer_id"] for p in m.call("peers")}) for m in members) // 2
    print(f"\n12 daemons up and connected in {time.monotonic() - t0:.1f} s; "
          f"member pairs already connected by DHT walks: {linked} of 6")
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: m.call("join", room=ROOM), members))
    try:
        for member in members:
            wait_for(lambda m=member: room_peers(m) >= ids - {m.peer_id}, timeout=60,
                     interval=0.2, message=f"{member.name} to connect to the 3 other members")
    except AssertionError:
        for m in members:  # what each member saw, for the failure report
            print(m.name, m.peer_id[-6:], [p[-6:] for p in room_peers(m)],
                  len(m.call("peers")), m.call("status")["discovery"]["dht"],
                  m.call("status")["connections"])
            print("\n".join(m.stderr_lines[-15:]))
        raise
    found_s = time.monotonic() - started
    print(f"\nDHT room discovery: all 4 members connected {found_s:.1f} s after joining")

    for member in members:
        wait_for(lambda m=member: m.call("status")["discovery"]["dht"]["rooms_provided"] == 1,
                 timeout=30, message=f"{member.name} to provide the room's key")
        # Its own record is in its own store by now; its later walks (the room still
        # has fewer than room_peers_min members) find the three others all the same.
        wait_for(lambda m=member: m.call("status")["discovery"]["dht"]["providers_found"] >= 3,
                 timeout=40, message=f"{member.name}, a provider, to find the others")
        dht = member.call("status")["discovery"]["dht"]
        assert dht["mode"] == "server"
        assert dht["providers_announced"] >= 1, dht

    for member in members:
        member.call("send", room=ROOM, text=f"hello from {member.name}")
    expected = {f"hello from {m.name}" for m in members}
    for member in members:
        wait_for(lambda m=member: expected <= set(texts(m, ROOM)), timeout=30,
                 message=f"{member.name} to hear all four members")
    assert sum(d.call("status")["discovery"]["dht"]["provider_records"]
               for d in daemons) >= 4
    print(f"test body took {time.monotonic() - t0:.1f} s")
