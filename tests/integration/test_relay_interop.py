"""Circuit relay v2 against js-libp2p's @libp2p/circuit-relay-v2 (tests/interop/
relay_peer.mjs, pinned), both ways round, on loopback.

On loopback AutoNAT cannot tell a node it is private or public, so the daemons fix
their verdict with config `reachability` (docs/limits.md), as go-libp2p's
ForceReachability* options do: a private daemon reserves on the peers it is
connected to, a public one serves hop.

- A js relay carries a chat: daemon a (private) reserves a slot on it, daemon b
  dials `<js relay addr>/p2p/<relay>/p2p-circuit/p2p/<a>` (`p2pctl connect`) and
  the two chat in a room both ways over that circuit (Noise and yamux inside a
  js-spliced stream).
- A js relay's data limit cuts a circuit: the daemons notice, and lose no message.
- The daemon renews its reservation on the js relay in time (and a js defect in
  renewals is documented there).
- A daemon relays for js peers: js peer x reserves on the daemon (relay_service on,
  reachability public), given the daemon's address or finding it through identify;
  js peer y dials x through it and each echoes 256 KiB off the other over that
  circuit; when y leaves, the daemon closes the circuit.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemons import Cluster, DaemonProcess, run_p2pctl, texts, wait_for
from harness.node_scripts import NodeScript

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the js circuit relay peers",
)
ROOM = "porch"
ECHO_BYTES = 256 * 1024
JS_TTL_S = 20


class RelayPeer(NodeScript):
    """relay_peer.mjs (a js relay or relay client), driven one command at a time."""


@pytest.fixture
def js_peers(interop: Path) -> Iterator[list[RelayPeer]]:
    """Every js peer a test starts (append to it); all closed after the test."""
    peers: list[RelayPeer] = []
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


def start_js(peers: list[RelayPeer], interop: Path, *args: str) -> RelayPeer:
    peer = RelayPeer(interop / "relay_peer.mjs", *args)
    peers.append(peer)
    return peer


def start_daemon(cluster: Cluster, name: str, config: str) -> DaemonProcess:
    home = cluster.home(name)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config)
    return cluster.start(name, "--dht", "off")


def peer_addrs(daemon: DaemonProcess, other: str) -> list[str]:
    """The addresses of daemon's connections to the peer id other ([] if none)."""
    for peer in daemon.call("peers"):
        if peer["peer_id"] == other:
            return list(peer["addrs"])
    return []


def test_two_daemons_chat_both_ways_through_a_js_relay(
        cluster: Cluster, interop: Path, js_peers: list[RelayPeer]) -> None:
    relay = start_js(js_peers, interop, "relay")
    a = start_daemon(cluster, "a", 'reachability = "private"\n')
    b = start_daemon(cluster, "b", "")
    for d in (a, b):
        d.call("join", room=ROOM)

    started = time.monotonic()
    a.call("connect", addr=relay.addr)
    wait_for(lambda: a.call("status")["relay"]["reserved_on"] == [relay.peer_id],
             timeout=20, message="a to reserve a slot on the js relay")
    assert relay.command("reservations")["reservations"] == [a.peer_id]
    reserved = round(time.monotonic() - started, 2)

    b.call("connect", addr=relay.addr)
    circuit = f"{relay.addr}/p2p-circuit/p2p/{a.peer_id}"
    done = run_p2pctl("--home", str(b.home), "connect", "--json", circuit)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"peer_id": a.peer_id}
    relayed = [f"/p2p/{relay.peer_id}/p2p-circuit/p2p/{a.peer_id}"]
    assert peer_addrs(b, a.peer_id) == relayed
    assert peer_addrs(a, b.peer_id) == [f"/p2p/{relay.peer_id}/p2p-circuit/p2p/{b.peer_id}"]

    sent = time.monotonic()
    a.call("send", room=ROOM, text="hello from a, via js")
    wait_for(lambda: "hello from a, via js" in texts(b, ROOM), timeout=30,
             message="b to get a's message through the js relay")
    a_to_b = round(time.monotonic() - sent, 2)
    sent = time.monotonic()
    b.call("send", room=ROOM, text="hello from b, via js")
    wait_for(lambda: "hello from b, via js" in texts(a, ROOM), timeout=30,
             message="a to get b's message through the js relay")
    b_to_a = round(time.monotonic() - sent, 2)

    # Still only the circuit between them: nobody dialed the other directly.
    assert peer_addrs(b, a.peer_id) == relayed
    a_relay = a.call("status")["relay"]
    assert a_relay["circuits_accepted"] == 1, a_relay
    assert a_relay["stop_refused"] == 0, a_relay
    assert b.call("status")["relay"]["circuits_dialed"] == 1
    for d in (a, b):
        assert d.call("status")["faults"] == {}
    print(f"reserved {reserved} s after connecting, a->b {a_to_b} s, b->a {b_to_a} s, a {a_relay}")


@pytest.mark.parametrize("listen", ["relay", "discovered"])
def test_js_peers_echo_through_a_daemon_relay(
        cluster: Cluster, interop: Path, js_peers: list[RelayPeer], listen: str) -> None:
    r = start_daemon(cluster, "r", 'reachability = "public"\n')
    assert r.call("status")["relay"]["service"] is True
    started = time.monotonic()
    if listen == "relay":  # listen on <r>/p2p-circuit: reserve on r at start
        x = start_js(js_peers, interop, "client", f"{r.addr}/p2p-circuit")
    else:  # listen on /p2p-circuit: reserve on a peer identify says speaks hop
        x = start_js(js_peers, interop, "client", "/p2p-circuit")
        x.command("dial", r.addr)
    wait_for(lambda: r.call("status")["relay"]["reservations"] == 1, timeout=20,
             message="js peer x to reserve a slot on the daemon")
    reserved = round(time.monotonic() - started, 2)
    assert any("/p2p-circuit" in addr for addr in x.command("addrs")["addrs"])

    y = start_js(js_peers, interop, "client")
    circuit = f"{r.addr}/p2p-circuit/p2p/{x.peer_id}"
    dialed = y.command("dial", circuit)
    assert "/p2p-circuit" in dialed["remote"], dialed
    assert dialed["limited"] is True  # our STATUS carries the circuit limit
    # Both ways over that circuit, through our splice.
    y_to_x = y.command("echo", x.peer_id, str(ECHO_BYTES))
    x_to_y = x.command("echo", y.peer_id, str(ECHO_BYTES))
    assert y_to_x["echoed"] == x_to_y["echoed"] == ECHO_BYTES
    # No direct connection between them (neither dials the other's TCP address).
    assert all("/p2p-circuit" in addr for addr in y.command("conns", x.peer_id)["conns"])
    assert all("/p2p-circuit" in addr for addr in x.command("conns", y.peer_id)["conns"])

    relay = r.call("status")["relay"]
    assert relay["circuits"] == 1, relay
    assert relay["circuits_opened"] == 1, relay
    assert relay["refused"] == {}, relay
    assert r.call("status")["faults"] == {}
    assert relay["bytes_relayed"] == 0  # counted when the circuit closes

    # y goes away: the relay sees its side end and closes the circuit.
    y.close()
    wait_for(lambda: r.call("status")["relay"]["circuits"] == 0, timeout=20,
             message="the daemon to close the circuit after y left")
    relay = r.call("status")["relay"]
    assert relay["bytes_relayed"] >= 4 * ECHO_BYTES, relay
    assert relay["circuits_cut"] == 0, relay
    print(f"reserved after {reserved} s, echo {ECHO_BYTES} B y->x->y {y_to_x['ms']} ms, "
          f"x->y->x {x_to_y['ms']} ms, relay {relay}")


def test_a_js_relay_cutting_a_circuit_at_its_data_limit_loses_no_message(
        cluster: Cluster, interop: Path, js_peers: list[RelayPeer]) -> None:
    """js resets both spliced streams at its limit (here 64 KiB each way): both
    daemons drop the relayed connection (no half-dead one left behind) and, redialing
    (directly, on loopback), sync brings over whatever the cut lost."""
    relay = start_js(js_peers, interop, "relay", "-", str(64 * 1024))
    a = start_daemon(cluster, "a", 'reachability = "private"\n')
    b = start_daemon(cluster, "b", "")
    for d in (a, b):
        d.call("join", room=ROOM)
    a.call("connect", addr=relay.addr)
    wait_for(lambda: a.call("status")["relay"]["reserved_on"] == [relay.peer_id],
             timeout=20, message="a to reserve a slot on the js relay")
    b.call("connect", addr=relay.addr)
    b.call("connect", addr=f"{relay.addr}/p2p-circuit/p2p/{a.peer_id}")

    def circuit_gone() -> bool:
        return not any("/p2p-circuit" in x
                       for x in peer_addrs(a, b.peer_id) + peer_addrs(b, a.peer_id))

    sent: list[str] = []
    started = time.monotonic()
    while not circuit_gone():
        assert len(sent) < 200, "the js relay never cut the circuit"
        sent.append(f"message {len(sent)} " + "x" * 2000)
        a.call("send", room=ROOM, text=sent[-1])
        time.sleep(0.05)  # pacing, not waiting for a condition
    cut = round(time.monotonic() - started, 2)
    sent.append("after the cut")
    a.call("send", room=ROOM, text=sent[-1])
    wait_for(lambda: set(sent) <= set(texts(b, ROOM)), timeout=60, interval=0.5,
             message="b to get every message a sent, the cut's too")
    for d in (a, b):
        assert d.call("status")["faults"] == {}
    print(f"cut after {cut} s and {len(sent) - 1} messages")


def test_a_daemon_renews_its_reservation_on_a_js_relay(
        cluster: Cluster, interop: Path, js_peers: list[RelayPeer]) -> None:
    """The js relay grants JS_TTL_S; the daemon renews at half its lifetime (at least
    15 s) and the renewal extends the reservation past the first expiry.

    js defect, not asserted here: the js relay (retimeable-signal 1.0.1, under
    @libp2p/circuit-relay-v2 4.2.13) drops a reservation at the FIRST renewal's time
    plus the TTL, whatever renewals follow: `reset()` attaches its new timeout's
    listener as an anonymous function, so the next `reset()` cannot remove it and the
    old timer still fires. Seen here with a 20 s TTL: renewals at ~17 s and ~32 s,
    reservation gone at ~40 s until the next renewal re-creates it. With js's 2-hour
    default a client renewing at half-life is without a slot for a moment at every
    third renewal; js's own client (renewing 5 min before expiry) for nearly a TTL.
    """
    relay = start_js(js_peers, interop, "relay", str(JS_TTL_S))
    a = start_daemon(cluster, "a", 'reachability = "private"\n')
    a.call("connect", addr=relay.addr)
    wait_for(lambda: a.call("status")["relay"]["reserve_ok"] == 1, timeout=20,
             message="a to reserve a slot on the js relay")
    reserved = time.monotonic()
    wait_for(lambda: a.call("status")["relay"]["reserve_ok"] == 2, timeout=JS_TTL_S,
             interval=0.5, message="a to renew its reservation before it expires")
    renewed = round(time.monotonic() - reserved, 2)
    assert renewed < JS_TTL_S
    time.sleep(max(0.0, reserved + JS_TTL_S + 2 - time.monotonic()))  # past the first expiry
    assert relay.command("reservations")["reservations"] == [a.peer_id]
    relay_view = a.call("status")["relay"]
    assert relay_view["reserve_failed"] == 0, relay_view
    assert relay_view["reserved_on"] == [relay.peer_id]
    print(f"renewed after {renewed} s of a {JS_TTL_S} s reservation")
