"""Twenty daemons, each told only of daemon 1: the room forms no hub and outlives it.

Every daemon runs in its own network namespace on one LAN (tests/netns.py) and is
started with daemon 1 as its only bootstrap peer, so at first daemon 1 holds a
connection to every other member. Presence tells each member of the others, the
connection manager dials a random few of them and trims what is above
`room_peers_max`, so after a minute daemon 1 holds not many more than that, and soon
no daemon does. Then daemon 1
is killed -9: every message sent afterwards still reaches every one of the 19 left.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from tests.harness import DaemonProcess, texts, wait_for
from tests.netns import Network, Scenario

Build = Callable[[Scenario], Network]
ROOM = "crowd"
MEMBERS = 20
PORT = 4001
SETTLE_S = 60.0
ROOM_PEERS_MAX = 10  # the default, which this test keeps
A_FEW = 3


def room_connections(daemon: DaemonProcess) -> int:
    return int(daemon.call("status")["presence"]["rooms"][ROOM]["connected"])


def test_twenty_members_bootstrapped_to_one_form_no_hub_and_survive_its_death(
        netns: Build) -> None:
    hosts = [f"n{i}" for i in range(1, MEMBERS + 1)]
    net = netns(Scenario.lan(*hosts))
    listen = f"/ip4/0.0.0.0/tcp/{PORT}"
    first = net.start_daemon(hosts[0], hosts[0], listen=listen)
    first.call("join", room=ROOM)
    bootstrap = f"/ip4/{net.ip(hosts[0])}/tcp/{PORT}/p2p/{first.peer_id}"
    rest = [net.start_daemon(h, h, "--bootstrap", bootstrap, listen=listen) for h in hosts[1:]]
    everyone = [first, *rest]
    for daemon in rest:
        daemon.call("join", room=ROOM)
    joined = time.monotonic()
    wait_for(lambda: all(len(d.call("members", room=ROOM)) == MEMBERS for d in everyone),
             timeout=90, message="every member to know all twenty")
    print(f"directory complete everywhere {time.monotonic() - joined:.1f} s after the joins")
    # At the start daemon 1 is the hub: everyone is connected to it.
    time.sleep(max(0.0, SETTLE_S - (time.monotonic() - joined)))

    counts = {d.name: room_connections(d) for d in everyone}
    print("room connections per daemon after a minute: "
          f"min {min(counts.values())}, median {statistics.median(counts.values())}, "
          f"max {max(counts.values())} ({counts})")
    assert counts[first.name] <= ROOM_PEERS_MAX + A_FEW, counts
    # Trims make waves: a member trimmed below room_peers_min dials another at random,
    # whose new connection no trim may touch for GRACE_S (30 s). So one sample can
    # catch a member a few over (14-16 in 3 of 35 CI runs) on its way back down; what
    # must hold is that every member is near the bound at once, soon.
    def near_the_bound() -> bool:
        counts.update({d.name: room_connections(d) for d in everyone})
        return max(counts.values()) <= ROOM_PEERS_MAX + A_FEW
    wait_for(near_the_bound, timeout=SETTLE_S, interval=2.0,
             message=f"every member at most {ROOM_PEERS_MAX + A_FEW} room connections")
    print(f"then: max {max(counts.values())} ({counts})")

    first.kill()
    killed = time.monotonic()
    sent = []
    for daemon in rest:
        text = f"after the hub, from {daemon.name}"
        daemon.call("send", room=ROOM, text=text)
        sent.append(text)

    def everyone_has_everything() -> bool:
        return all(set(sent) <= set(texts(d, ROOM)) for d in rest)

    wait_for(everyone_has_everything, timeout=60, interval=1.0,
             message="every message sent after daemon 1 died to reach all 19")
    print(f"{len(sent)} messages reached all {len(rest)} members "
          f"{time.monotonic() - killed:.1f} s after kill -9 of daemon 1")
