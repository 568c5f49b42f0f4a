"""The NAT scenario of tests/netns.py: home networks behind masquerading routers.

Plain TCP sockets (python in each namespace) show what the daemons' NAT tests rely on:
a home host reaches the public segment and is seen there at its router's public
address, nothing from outside reaches a home host, and only `--random-fully` changes
the source port.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from harness.daemons import wait_for
from harness.netns import Network, Scenario
from harness.system_packages import ensure_apt

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")
PORT = 4100

SERVER = """
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen()
    print("listening", flush=True)
    conn, peer = s.accept()
    print(f"{peer[0]}:{peer[1]}", flush=True)
"""

CLIENT = """
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(2)
    if len(sys.argv) > 3:
        s.bind(("0.0.0.0", int(sys.argv[3])))
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
    except OSError as exc:
        print("error", exc.errno or type(exc).__name__)
    else:
        print("connected")
"""


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


def serve_once(net: Network, host: str) -> subprocess.Popen[str]:
    proc = net.popen(host, [sys.executable, "-c", SERVER, str(PORT)], stdout=subprocess.PIPE,
                     text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "listening"
    return proc


def dial(net: Network, host: str, ip: str, *, source_port: int | None = None) -> str:
    argv = [sys.executable, "-c", CLIENT, ip, str(PORT)]
    if source_port is not None:
        argv.append(str(source_port))
    return net.run(host, argv, check=True).stdout.strip()


def seen_from(net: Network, client: str, server: str, source_port: int) -> str:
    """Where the server sees a connection from client's source_port come from."""
    proc = serve_once(net, server)
    assert dial(net, client, net.ip(server), source_port=source_port) == "connected"
    assert proc.stdout is not None
    seen = proc.stdout.readline().strip()
    proc.wait(10)
    proc.stdout.close()
    return seen


@pytest.mark.usefixtures("iptables")
def test_home_hosts_reach_out_through_their_router_and_nothing_reaches_in(
        netns: Build) -> None:
    net = netns(Scenario.nat(["r"], ["a"], ["b"]))
    net.masquerade_all()
    assert net.nat_routers() == ["nat1", "nat2"]
    assert (net.ip("r"), net.ip("nat1", 0), net.ip("nat2", 0)) == (
        "198.18.0.1", "198.18.0.2", "198.18.0.3")
    assert (net.ip("nat1", 1), net.ip("a"), net.ip("b")) == (
        "192.168.1.1", "192.168.1.2", "192.168.2.2")
    routes = net.run("a", ["ip", "route", "show"], check=True).stdout
    assert "default" not in routes, routes
    assert "198.18.0.0/24 via 192.168.1.1" in routes, routes

    # Out: r sees a at its router's public address, with a's own port (port-preserving).
    wait_for(lambda: dial(net, "a", net.ip("r")) != "error 113", timeout=10,
             message="ARP through nat1")  # the refused dial of a port nobody serves
    assert seen_from(net, "a", "r", 5555) == f"{net.ip('nat1', 0)}:5555"
    assert seen_from(net, "b", "r", 5556) == f"{net.ip('nat2', 0)}:5556"

    # In: r has no route to a home network, and the router's public address forwards
    # nothing unsolicited (its own stack refuses: nothing listens there).
    listener = serve_once(net, "a")
    assert dial(net, "r", net.ip("a")) == "error 101"  # ENETUNREACH
    assert dial(net, "r", net.ip("nat1", 0)) == "error 111"  # ECONNREFUSED
    # Home to home only through the routers' public addresses, which refuse.
    assert dial(net, "b", net.ip("a")) == "error 101"
    assert dial(net, "b", net.ip("nat1", 0)) == "error 111"
    # Dropped, not refused: a packet addressed to a home host that reaches the router
    # from outside is not a reply, so the FORWARD chain drops it (the dial times out).
    net.add_route("r", "192.168.1.0/24", via=net.ip("nat1", 0))
    assert dial(net, "r", net.ip("a")) == "error TimeoutError"
    assert dial(net, "a", net.ip("r")) == "error 111"  # a still gets out (r refuses)
    listener.kill()
    listener.wait(10)
    assert listener.stdout is not None
    listener.stdout.close()


@pytest.mark.usefixtures("iptables")
def test_random_fully_changes_the_source_port(netns: Build) -> None:
    net = netns(Scenario.nat(["r"], ["a"]))
    net.masquerade_all(random_fully=True)
    wait_for(lambda: dial(net, "a", net.ip("r")) != "error 113", timeout=10,
             message="ARP through nat1")
    ports = {seen_from(net, "a", "r", 5555 + i).split(":")[1] for i in range(3)}
    assert ports.isdisjoint({"5555", "5556", "5557"}), ports
