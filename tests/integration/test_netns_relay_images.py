"""An image over a relayed connection whose relay cuts circuits at a small byte limit.

r1 and r2 are public relays outside the room with `relay_circuit_bytes` = 1 MiB;
a sits behind nat1, b behind nat2, both bootstrapped to both relays, and a is given
b's circuit address once. a sends a 2.4 MB image: b's fetch crosses several
circuits, each reset at the limit (nothing is written into the data), and the pair
dials a new one each time. Over a relayed connection a sends one block per bitswap
message, so every block that fits in what is left of a circuit arrives; b's fetch
asks again on the new circuit for what the cut one lost. b ends up with the image
byte for byte, and the chat history is intact.
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
