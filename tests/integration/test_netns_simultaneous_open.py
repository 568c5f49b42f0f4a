"""TCP simultaneous open through the NAT routers of tests/netns.py, with plain
sockets.

DCUtR's hole punch for TCP (daemon/adapters/dcutr.py) rests on this: both home hosts
dial each other's public address at the same moment, each from its own listen port
(SO_REUSEPORT, so the listener keeps its port). Each outgoing SYN makes its router's
conntrack expect replies from the other router's public address and port; with a
port-preserving MASQUERADE the other's SYN arrives from exactly that address, counts
as a reply, and both sockets end up connected (TCP simultaneous open). With
`--random-fully` the routers pick fresh source ports, the SYNs match nothing, and the
routers refuse them. Measured: connected in 0.4 ms on a quiet machine, or 11 ms when
the first SYN met a RST and was sent again; up to 4.8 s (over 1,000 refused tries
each) with the 2 cores loaded, since the two SYNs must cross within about 0.1 ms.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from harness.daemons import wait_for
from harness.netns import Network, Scenario
from harness.system_packages import ensure_apt

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")
PORT = 4101

# Listens on PORT with SO_REUSEPORT (as the daemon's listener does), waits for "go"
# on stdin, then dials the peer's public address from the same port until it connects
# or the listener accepts, for up to argv[3] seconds. A router answers a SYN that reaches its own
# address before its host's SYN went out with a RST (ECONNREFUSED): dial again at once,
# the other side's SYN is then in flight and its router expects ours.
PUNCH = """
import random, socket, sys, time
port, peer, window = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
listener = socket.socket()
for opt in (socket.SO_REUSEADDR, socket.SO_REUSEPORT):
    listener.setsockopt(socket.SOL_SOCKET, opt, 1)
listener.bind(("0.0.0.0", port))
listener.listen()
print("listening", flush=True)
sys.stdin.readline()
listener.setblocking(False)
started = time.monotonic()
tries = 0
while time.monotonic() - started < window:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        pass
    else:
        how = "accepted"
        break
    s = socket.socket()
    for opt in (socket.SO_REUSEADDR, socket.SO_REUSEPORT):
        s.setsockopt(socket.SOL_SOCKET, opt, 1)
    s.bind(("0.0.0.0", port))
    s.settimeout(1)
    tries += 1
    try:
        s.connect((peer, port))
    except OSError as exc:
        s.close()
        error = exc.errno or type(exc).__name__
        time.sleep(random.uniform(0, 0.006))  # jittered, as the daemon redials
        continue
    conn, how = s, "connected"
    break
else:
    print("error", error, tries, flush=True)
    sys.exit()
conn.settimeout(2)
conn.sendall(b"hi")
got = conn.recv(2)
print(how, conn.getpeername()[0], got.decode(), tries,
      round(time.monotonic() - started, 4), flush=True)
"""


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


def punch(net: Network, window: float) -> tuple[str, str]:
    """a and b dial each other's router at once, for up to `window` seconds; what
    each says."""
    procs = []
    for host, peer_router in (("a", "nat2"), ("b", "nat1")):
        proc = net.popen(host, [sys.executable, "-c", PUNCH, str(PORT), net.ip(peer_router, 0),
                          str(window)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "listening"
        procs.append(proc)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    out = []
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdin is not None
        out.append(proc.stdout.readline().strip())
        proc.wait(window + 10)
        proc.stdout.close()
        proc.stdin.close()
    return out[0], out[1]


def warm_up(net: Network) -> None:
    """Wait for ARP through both routers (a refused dial of r's closed port)."""
    for host in ("a", "b"):
        wait_for(lambda h=host: "113" not in net.run(h, [
            sys.executable, "-c",
            "import socket,sys\ns=socket.socket();s.settimeout(2)\n"
            "try: s.connect((sys.argv[1], 9))\nexcept OSError as e: print(e.errno)",
            net.ip("r")]).stdout, timeout=10, message=f"ARP from {host}")


@pytest.mark.usefixtures("iptables")
def test_simultaneous_open_crosses_port_preserving_nat(netns: Build) -> None:
    net = netns(Scenario.nat(["r"], ["a"], ["b"]))
    net.masquerade_all()
    warm_up(net)
    started = time.monotonic()
    # Under a loaded CPU the SYNs may take hundreds of tries to cross (4 s seen).
    a_says, b_says = punch(net, 20)
    print(f"simultaneous open: a {a_says!r}, b {b_says!r}")
    assert a_says.split()[1:3] == [net.ip("nat2", 0), "hi"], a_says
    assert b_says.split()[1:3] == [net.ip("nat1", 0), "hi"], b_says
    print(f"{time.monotonic() - started:.2f} s with process start")


@pytest.mark.usefixtures("iptables")
def test_simultaneous_open_fails_under_random_fully(netns: Build) -> None:
    net = netns(Scenario.nat(["r"], ["a"], ["b"]))
    net.masquerade_all(random_fully=True)
    warm_up(net)
    a_says, b_says = punch(net, 3)
    assert a_says.startswith("error"), a_says
    assert b_says.startswith("error"), b_says
    print(f"random-fully: a {a_says!r}, b {b_says!r}")
