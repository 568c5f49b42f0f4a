"""Two homes behind NAT routers meeting through a public relay: the set-up that the
hole-punching tests and bench/nat.py share.

`Scenario.nat(["r"], ["a"], ["b"])` (harness/netns.py) gives a public relay host r on
the 198.18.0.0/15 bridge and hosts a and b, each behind its own masquerading router.
`meet_through_relay` starts a daemon on each, has a and b reserve slots on r, and has
a dial b's relayed address, so that b accepts the circuit (and, with hole punching
on, starts DCUtR). r joins no room: what a and b say reaches the other over their own
connection, relayed or direct, never through r's gossip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .daemons import DaemonProcess
from .netns import Network
from .waiting import wait_for

ROOM = "porch"
NO_PUNCH = "hole_punching = false\n"


def addrs_of(daemon: DaemonProcess, other: DaemonProcess) -> list[str]:
    """daemon's connection addresses to other ([] when not connected)."""
    for peer in daemon.call("peers"):
        if peer["peer_id"] == other.peer_id:
            return list(peer["addrs"])
    return []


def direct_only(daemon: DaemonProcess, other: DaemonProcess) -> bool:
    """True when daemon holds connections to other and none of them is relayed."""
    addrs = addrs_of(daemon, other)
    return bool(addrs) and not any("/p2p-circuit" in a for a in addrs)


def circuit_addrs(daemon: DaemonProcess) -> list[str]:
    """The relayed (/p2p-circuit) addresses the daemon announces."""
    return [x for x in daemon.call("id")["addrs"] if "/p2p-circuit" in x]


@dataclass
class Meeting:
    """The three daemons, and how long each step took (seconds)."""

    r: DaemonProcess
    a: DaemonProcess
    b: DaemonProcess
    connected_at: float  # time.monotonic() when a and b first saw each other
    reserved_s: dict[str, float]  # from each home daemon's ready line to its circuit address
    connect_s: float  # from a's connect call to both seeing the other


def meet_through_relay(net: Network, *, random_fully: bool = False, stealth: bool = False,
                       config: str = "") -> Meeting:
    """Masquerade both homes, start r, a and b, and connect a to b through r.

    `random_fully` makes the routers symmetric NATs; `stealth` makes them drop an
    unsolicited SYN instead of refusing it; `config` goes to a's and b's config.toml.
    """
    net.masquerade_all(random_fully=random_fully, stealth=stealth)
    r = net.start_daemon("r", "r", listen="/ip4/0.0.0.0/tcp/4001")
    homes = []
    started = {}
    for name in ("a", "b"):
        homes.append(net.start_daemon(name, name, "--bootstrap", r.addr, config=config))
        started[name] = time.monotonic()
    a, b = homes
    for d in homes:
        d.call("join", room=ROOM)
    reserved: dict[str, float] = {}

    def both_reserved() -> bool:
        for d in homes:
            if d.name not in reserved and circuit_addrs(d):
                reserved[d.name] = round(time.monotonic() - started[d.name], 3)
        return len(reserved) == len(homes)

    wait_for(both_reserved, timeout=40, interval=0.05,
             message="a and b to hold a reservation on r")
    dialled = time.monotonic()
    a.call("connect", addr=circuit_addrs(b)[0])
    wait_for(lambda: addrs_of(a, b) and addrs_of(b, a), timeout=60,
             message="a and b to connect")
    connected = time.monotonic()
    return Meeting(r, a, b, connected, reserved, round(connected - dialled, 3))
