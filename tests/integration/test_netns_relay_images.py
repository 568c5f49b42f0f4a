"""An image over a relayed connection whose relay cuts circuits at a small byte limit.

r1 and r2 are public relays outside the room with `relay_circuit_bytes` = 1 MiB;
a sits behind nat1, b behind nat2, both bootstrapped to both relays, and a is given
b's circuit address once. a sends a 2.4 MB image: b's fetch crosses several
circuits, each reset at the limit (nothing is written into the data), and the pair
dials a new one each time. Over a relayed connection a sends one block per bitswap
message, so every block that fits in what is left of a circuit arrives; b's fetch
asks again on the new circuit for what the cut one lost. b ends up with the image
byte for byte, and the chat history is intact.

A second scenario has a direct member c beside the relayed pair: b fetches a's image
over the relay until c, directly connected to both, gets the image too; c's HAVEs move
b's wants to c, and b's status shows which peer served how many blocks.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from harness.daemons import DaemonProcess, texts, wait_for
from harness.netns import Network, Scenario
from harness.system_packages import ensure_apt

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")
ROOM = "pics"
CIRCUIT_BYTES = 1024 * 1024


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


def noisy_png(path: Path, width: int, height: int) -> bytes:
    """Random pixels: a PNG that does not compress."""
    rng = random.Random(7)
    Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)).save(path)
    return path.read_bytes()


def relays_of(daemon: DaemonProcess, other: DaemonProcess) -> set[str]:
    """The relays daemon's connections to other run through (empty if none)."""
    for peer in daemon.call("peers"):
        if peer["peer_id"] == other.peer_id:
            return {a.split("/p2p/")[1].split("/")[0]
                    for a in peer["addrs"] if "/p2p-circuit" in a}
    return set()


def start_relay(net: Network, name: str, *extra: str) -> DaemonProcess:
    return net.start_daemon(name, name, *extra, listen="/ip4/0.0.0.0/tcp/4001",
                            config=f"relay_circuit_bytes = {CIRCUIT_BYTES}\n")


@pytest.mark.usefixtures("iptables")
def test_an_image_larger_than_the_circuit_limit_arrives_whole_over_new_circuits(
        netns: Build) -> None:
    net = netns(Scenario.nat(["r1", "r2"], ["a"], ["b"]))
    net.masquerade_all()
    r1 = start_relay(net, "r1")
    r2 = start_relay(net, "r2", "--bootstrap", r1.addr)
    # The routers preserve ports, so DCUtR would take a and b off the relays after the
    # first cut circuit (test_netns_holepunch.py); what is tested here is an image over
    # circuits that keep being cut.
    no_punch = "hole_punching = false\n"
    a = net.start_daemon("a", "a", "--bootstrap", r1.addr, "--bootstrap", r2.addr,
                         config=no_punch)
    b = net.start_daemon("b", "b", "--bootstrap", r1.addr, "--bootstrap", r2.addr,
                         config=no_punch)
    for d in (a, b):
        d.call("join", room=ROOM)
    for d in (a, b):
        wait_for(lambda d=d: any("/p2p-circuit" in x for x in d.call("id")["addrs"]),
                 timeout=60, message=f"{d.name} to hold a reservation")
    a.call("connect", addr=next(x for x in b.call("id")["addrs"] if "/p2p-circuit" in x))
    wait_for(lambda: relays_of(a, b) and relays_of(b, a), timeout=20,
             message="a and b to connect through a relay")
    a.call("send", room=ROOM, text="an image follows")
    wait_for(lambda: "an image follows" in texts(b, ROOM), timeout=20,
             message="b to get a's message")

    original = noisy_png(net.cluster.root / "big.png", 1000, 800)
    assert len(original) > 2 * CIRCUIT_BYTES
    started = time.monotonic()
    cid = a.call("send_image", room=ROOM, path=str(net.cluster.root / "big.png"),
                 caption="bigger than a circuit")["image"]["cid"]
    # b fetches it by itself (auto-fetch): its fetch takes a in again when a new
    # circuit comes up and asks it again for what the cut circuit lost.
    wait_for(lambda: b.call("status")["images"]["auto_fetched"] == 1, timeout=60,
             message="b to fetch the whole image over several circuits")
    fetched = round(time.monotonic() - started, 2)
    images = b.call("status")["images"]
    assert images["auto_fetch_failed"] == 0, images
    assert images["exchange"]["bad_blocks"] == 0, images
    out = net.cluster.root / "copy.png"
    result = b.call("fetch", cid=cid, path=str(out))
    assert result["size"] == len(original)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(original).digest()

    cut = {r.name: r.call("status")["relay"]["circuits_cut"] for r in (r1, r2)}
    assert sum(cut.values()) >= 2, cut
    a.call("send", room=ROOM, text="after the image")
    wait_for(lambda: "after the image" in texts(b, ROOM), timeout=30,
             message="b to get a's message after the image")
    assert texts(b, ROOM) == texts(a, ROOM)
    print(f"{len(original)} bytes over circuits of {CIRCUIT_BYTES}: auto-fetched in "
          f"{fetched} s, circuits cut {cut}")


def served_by(daemon: DaemonProcess) -> dict[str, int]:
    """Blocks each peer served this daemon's fetches (status images.exchange.peers)."""
    peers = daemon.call("status")["images"]["exchange"]["peers"]
    return {peer: counters["blocks_received"] for peer, counters in peers.items()}


@pytest.mark.usefixtures("iptables")
def test_a_relayed_fetch_moves_to_a_direct_member_that_gets_the_image(netns: Build) -> None:
    net = netns(Scenario.nat(["r1", "c"], ["a"], ["b"]))
    net.masquerade_all()
    r1 = start_relay(net, "r1")
    # The relay is slow (1 MB/s each way) and cuts circuits at 1 MiB: b's fetch over it
    # takes seconds and several circuits, so c gets the image while b still fetches.
    net.rate_limit("r1", "8mbit", burst="64kb")
    # c is a public member that relays nothing and fetches only when told to.
    c = net.start_daemon("c", "c", "--bootstrap", r1.addr, listen="/ip4/0.0.0.0/tcp/4001",
                         config="relay_service = false\nauto_fetch_max = 0\n")
    no_punch = "hole_punching = false\n"
    a = net.start_daemon("a", "a", "--bootstrap", r1.addr, "--bootstrap", c.addr,
                         config=no_punch)
    b = net.start_daemon("b", "b", "--bootstrap", r1.addr, "--bootstrap", c.addr,
                         config=no_punch)
    for d in (a, b, c):
        d.call("join", room=ROOM)
    wait_for(lambda: any("/p2p-circuit" in x for x in b.call("id")["addrs"]),
             timeout=60, message="b to hold a reservation")
    a.call("connect", addr=next(x for x in b.call("id")["addrs"] if "/p2p-circuit" in x))
    wait_for(lambda: relays_of(a, b) and relays_of(b, a), timeout=20,
             message="a and b to connect through the relay")
    for d, other in ((a, c), (b, c)):
        wait_for(lambda d=d, other=other: other.peer_id in {
                     p["peer_id"] for p in d.call("peers")} and not relays_of(d, other),
                 timeout=20, message=f"{d.name} to be directly connected to c")

    original = noisy_png(net.cluster.root / "big.png", 1000, 800)
    cid = a.call("send_image", room=ROOM, path=str(net.cluster.root / "big.png"))["image"]["cid"]
    # b fetches by itself, over the relay: a is the only peer that has the image.
    wait_for(lambda: served_by(b).get(a.peer_id, 0) >= 1, timeout=60,
             message="b to get a first block from a over the relay")
    assert b.call("status")["images"]["auto_fetched"] == 0, "b finished before c started"
    got = c.call("fetch", cid=cid, timeout=120)  # directly from a, and from b
    assert got["size"] == len(original)
    wait_for(lambda: b.call("status")["images"]["auto_fetched"] == 1, timeout=120,
             message="b to complete its fetch")

    served = served_by(b)
    exchange = b.call("status")["images"]["exchange"]
    print(f"b's blocks: {served.get(a.peer_id, 0)} from a (relayed), "
          f"{served.get(c.peer_id, 0)} from c (direct); "
          f"{exchange['wants_moved_to_direct']} wants moved off the relay; "
          f"circuits cut: {r1.call('status')['relay']['circuits_cut']}")
    assert served.get(c.peer_id, 0) > 0, served
    assert exchange["bad_blocks"] == 0
    assert relays_of(b, a), "a and b stayed on the relay: the move was bitswap's"
    out = net.cluster.root / "copy.png"
    b.call("fetch", cid=cid, path=str(out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(original).digest()
    # The fetch logs where its blocks came from, direct or relayed.
    b.wait_logged("blocks from", "(direct)")
