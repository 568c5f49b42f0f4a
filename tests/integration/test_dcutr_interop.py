"""DCUtR against js-libp2p's @libp2p/dcutr (tests/interop/dcutr_peer.mjs, pinned), both
ways round, in network namespaces: a gossipchat daemon and a js peer meet through a
relay daemon r, then upgrade their relayed connection to a direct one.

The topology, and why (docs/protocol.md §11 has the longer story):

    r    198.18.0.1  public relay daemon (reachability public)
    pub  198.18.0.2  public, behind a firewall that lets a new inbound TCP connection
                     in only from an IP pub itself sent to lately (address-dependent
                     filtering, `Network.filter_inbound`): not plainly dialable
    nat1 198.18.0.3  port-preserving MASQUERADE router that drops unsolicited SYNs
    home 192.168.1.2 behind nat1

A (the peer that dials through the relay) sits in `home`, B (the peer that accepts the
relayed connection, and so starts DCUtR) in `pub`. Two facts of js-libp2p fix this:

- js's TCP transport dials from an ephemeral port (Node has no SO_REUSEPORT for a
  dialing socket), so js's punch SYN never matches the 4-tuple the other side's NAT
  or firewall opened for it: a true simultaneous open through two endpoint-dependent
  filters cannot happen with js. The connection that forms is A's SYN, which B's
  filter lets in because B dialed A's IP first (its unilateral dial, or its punch).
- js, like go-libp2p, makes A the client (Noise initiator) of the punched connection
  and B the server (@libp2p/dcutr dcutr.js: B dials with `initiator: false`). A SYN
  of A's accepted by B's listener gets those roles too.

1. js dials the daemon's /p2p-circuit address: the daemon (B, in pub) initiates and
   js (A, in home) answers.
2. The daemon dials js's /p2p-circuit address: js (B, in pub) initiates and the
   daemon (A, in home) answers.

Each asserts both sides' view of the exchange (the daemon's `status.holepunch`, js's
DCUtR log), the direct connection (each sees the other at its public address, not
limited) and that the relayed one is closed. Two more show the edges: js behind a
NAT as well (two NATs: all attempts fail, because js's punch leaves from an
ephemeral port, counted at its router), and js told no public address of its own
(as js behind a NAT always is) reaching a daemon that is reachable.

js counts 198.18.0.0/15 as private and DCUtR dials only public addresses, so the js
peer treats that range as public (dcutr_peer.mjs says how); and js sends only
confirmed public addresses in CONNECT, so it is told its public one (`--announce`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import DaemonProcess, wait_for
from harness.netns import Network, Scenario
from harness.node_scripts import NodeScript
from harness.system_packages import ensure_apt

Build = Callable[[Scenario], Network]
pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                       reason="node and npm are needed to run the js DCUtR peer"),
    pytest.mark.usefixtures("netns_available"),
]
JS_PORT = 4001


class DcutrPeer(NodeScript):
    """dcutr_peer.mjs (js-libp2p with @libp2p/dcutr), driven one command at a time."""

    def connections(self, peer: str) -> list[dict[str, Any]]:
        conns: list[dict[str, Any]] = self.command("conns", peer)["conns"]
        return conns

    def log(self) -> list[str]:
        lines: list[str] = self.command("log")["log"]
        return lines


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


@pytest.fixture
def js_peers() -> Iterator[list[DcutrPeer]]:
    """Every js peer a test starts (append to it); all closed after the test."""
    peers: list[DcutrPeer] = []
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


def build(netns: Build) -> tuple[Network, DaemonProcess]:
    """The network above, and the relay daemon r running in it."""
    net = netns(Scenario.nat(["r", "pub"], ["home"]))
    net.masquerade_all(stealth=True)
    net.filter_inbound("pub")
    r = net.start_daemon("r", "r", listen="/ip4/0.0.0.0/tcp/4001",
                         config='reachability = "public"\n')
    return net, r


def start_js(peers: list[DcutrPeer], net: Network, interop: Path, host: str,
             *args: str) -> DcutrPeer:
    peer = DcutrPeer(interop / "dcutr_peer.mjs", "--listen", f"/ip4/0.0.0.0/tcp/{JS_PORT}",
                     *args, prefix_argv=net.exec_prefix(host))
    peers.append(peer)
    return peer


def daemon_addrs(daemon: DaemonProcess, peer: str) -> list[str]:
    """The addresses of the daemon's connections to `peer` ([] if none)."""
    for entry in daemon.call("peers"):
        if entry["peer_id"] == peer:
            return list(entry["addrs"])
    return []


def direct(daemon: DaemonProcess, js: DcutrPeer) -> bool:
    """Both hold a connection to the other, and only direct, unlimited ones."""
    ours = daemon_addrs(daemon, js.peer_id)
    theirs = js.connections(daemon.peer_id)
    return (bool(ours) and not any("/p2p-circuit" in a for a in ours)
            and bool(theirs) and not any("/p2p-circuit" in c["addr"] or c["limited"]
                                         for c in theirs))


def holepunch(daemon: DaemonProcess) -> dict[str, Any]:
    status: dict[str, Any] = daemon.call("status")["holepunch"]
    return status


def wait_direct(daemon: DaemonProcess, js: DcutrPeer) -> None:
    try:
        wait_for(lambda: direct(daemon, js), timeout=40, interval=0.5,
                 message="the daemon and the js peer to hold only a direct connection")
    except Exception:
        print("daemon:", holepunch(daemon), daemon_addrs(daemon, js.peer_id))
        print("\n".join(line for line in daemon.stderr_lines if "dcutr" in line)[-4000:])
        print("js:", js.connections(daemon.peer_id))
        print("\n".join(js.log())[-6000:])
        raise


def logged(lines: list[str], *needles: str) -> list[str]:
    """The needles that no line of js's DCUtR log contains."""
    return [n for n in needles if not any(n in line for line in lines)]


@pytest.mark.usefixtures("iptables")
def test_the_daemon_initiates_and_js_answers(
        netns: Build, interop: Path, js_peers: list[DcutrPeer]) -> None:
    net, r = build(netns)
    d = net.start_daemon("pub", "d", "--bootstrap", r.addr,
                         config='reachability = "private"\n')
    wait_for(lambda: any("/p2p-circuit" in a for a in d.call("id")["addrs"]), timeout=40,
             message="the daemon to hold a reservation on r")
    js = start_js(js_peers, net, interop, "home",
                  "--announce", f"/ip4/{net.ip('nat1', 0)}/tcp/{JS_PORT}")

    # js (A) dials the daemon through r: the daemon accepts the circuit, so it is B.
    dialed = js.command("dial", f"{r.addr}/p2p-circuit/p2p/{d.peer_id}")
    assert "/p2p-circuit" in dialed["remote"], dialed
    assert dialed["limited"] is True, dialed
    wait_direct(d, js)

    stats = holepunch(d)
    log = js.log()
    print("daemon:", stats, "\njs:", "\n".join(log))
    # Our side: one exchange, and it ended direct (not by the unilateral dial: js in
    # home is behind nat1).
    assert stats["attempts"] == 1, stats
    assert stats["succeeded"] == 1, stats
    assert stats["unilateral"] == 0, stats
    assert stats["failed"] == {}, stats
    # js's side, as A: CONNECT in, CONNECT out, SYNC in, its dial, the relayed
    # connection closed.
    assert logged(log, "A receiving connect", "A sending connect", "A receiving sync",
                  "A dialing", "succeeded via") == [], log
    assert not any(":error" in line for line in log), log
    # Each sees the other at its public address.
    assert daemon_addrs(d, js.peer_id)[0].startswith(f"/ip4/{net.ip('nat1', 0)}/tcp/")
    conns = js.connections(d.peer_id)
    assert [c["addr"].split("/tcp/")[0] for c in conns] == [f"/ip4/{net.ip('pub')}"], conns
    assert conns[0]["direction"] == "outbound", conns  # A's SYN, B's listener
    wait_for(lambda: r.call("status")["relay"]["circuits"] == 0, timeout=20,
             message="r to carry no circuit of theirs")


@pytest.mark.usefixtures("iptables")
def test_js_initiates_and_the_daemon_answers(
        netns: Build, interop: Path, js_peers: list[DcutrPeer]) -> None:
    net, r = build(netns)
    js = start_js(js_peers, net, interop, "pub",
                  "--listen", f"{r.addr}/p2p-circuit",
                  "--announce", f"/ip4/{net.ip('pub')}/tcp/{JS_PORT}")
    wait_for(lambda: any("/p2p-circuit" in a for a in js.command("addrs")["addrs"]),
             timeout=40, message="the js peer to hold a reservation on r")
    d = net.start_daemon("home", "d", "--bootstrap", r.addr)

    # The daemon (A) dials js through r: js accepts the circuit, so it is B.
    d.call("connect", addr=f"{r.addr}/p2p-circuit/p2p/{js.peer_id}")
    wait_direct(d, js)

    stats = holepunch(d)
    # Our side, as A: one exchange answered, and the direct connection is ours.
    assert stats["attempts"] == 1, stats
    assert stats["succeeded"] == 1, stats
    assert stats["failed"] == {}, stats
    assert daemon_addrs(d, js.peer_id)[0].startswith(f"/ip4/{net.ip('pub')}/tcp/{JS_PORT}")
    conns = js.connections(d.peer_id)
    assert [c["addr"].split("/tcp/")[0] for c in conns] == [f"/ip4/{net.ip('nat1', 0)}"], conns
    assert conns[0]["direction"] == "inbound", conns  # A's SYN, B's listener
    events = js.command("events")["events"]
    assert any(e["event"] == "close" and e["limited"] for e in events), events
    wait_for(lambda: r.call("status")["relay"]["circuits"] == 0, timeout=20,
             message="r to carry no circuit of theirs")

    # js's side, as B: CONNECT out, CONNECT in, SYNC out ("A sending sync" is js's own
    # wording), its dial. That dial leaves from an ephemeral port, which nat1 has no
    # mapping for, so it never connects: js gives the attempt up after its 5 s timeout
    # and its retries find the relayed connection closed (our side closed it once
    # direct). js logs a failed DCUtR for a punch that worked. (js may also start a
    # second, concurrent DCUtR for the same connection when a later identify (push)
    # calls its topology again; that one fails at once with
    # TooManyOutboundProtocolStreamsError, as its stream limit is 1.)
    wait_for(lambda: logged(js.log(), "attempt 1 of 3 - TimeoutError") == [], timeout=20,
             message="js's own dial to end")
    log = js.log()
    print("daemon:", stats, "\njs:", "\n".join(log))
    assert logged(log, "B sending connect", "B receiving connect", "sending sync, rtt",
                  "B dialing") == [], log
    assert logged(log, "succeeded to address") == ["succeeded to address"], log
    assert direct(d, js)


def syn_counts(net: Network, router: str, src: str, dst: str, port: int) -> tuple[int, int]:
    """(SYNs from src to dst that router forwarded, of which from source port `port`),
    counted by the two target-less iptables rules the test put in its FORWARD chain."""
    done = net.run(router, ["iptables", "-L", "FORWARD", "-v", "-x", "-n"], check=True)
    rules = [line for line in done.stdout.splitlines()
             if src in line and dst in line and "flags:0x17/0x02" in line]
    every = [int(line.split()[0]) for line in rules if "spt:" not in line]
    from_port = [int(line.split()[0]) for line in rules if f"spt:{port} " in line + " "]
    assert len(every) == 1, done.stdout
    assert len(from_port) == 1, done.stdout
    return every[0], from_port[0]


@pytest.mark.usefixtures("iptables")
def test_js_punches_from_an_ephemeral_port_so_two_nats_stay_relayed(
        netns: Build, interop: Path, js_peers: list[DcutrPeer]) -> None:
    """Both behind port-preserving NATs (nat1: js, nat2: the daemon), as in
    test_netns_holepunch.py: the exchange runs three times, and every time js (A)
    dials from an ephemeral port, not its listen port (@libp2p/tcp tcp.js `_connect`:
    `net.connect` without a local port; Node has no SO_REUSEPORT for it). nat1 maps
    that port to itself, so js's SYN reaches nat2 from a port nat2's mapping (made by
    our SYN, to js's announced listen port) does not expect, and nat1 drops our SYN
    for the same reason: no direct connection. A true simultaneous open needs the
    punch to leave from the announced port, as go-libp2p's and ours do."""
    net = netns(Scenario.nat(["r"], ["jhome"], ["dhome"]))
    net.masquerade_all(stealth=True)
    js_ip, nat1, nat2 = net.ip("jhome"), net.ip("nat1", 0), net.ip("nat2", 0)
    for rule in (["-d", nat2, "--sport", str(JS_PORT)], ["-d", nat2]):
        net.run("nat1", ["iptables", "-I", "FORWARD", "1", "-p", "tcp", "--syn", "-s", js_ip,
                         *rule], check=True)
    r = net.start_daemon("r", "r", listen="/ip4/0.0.0.0/tcp/4001",
                         config='reachability = "public"\n')
    d = net.start_daemon("dhome", "d", "--bootstrap", r.addr,
                         config='reachability = "private"\n')
    wait_for(lambda: any("/p2p-circuit" in a for a in d.call("id")["addrs"]), timeout=40,
             message="the daemon to hold a reservation on r")
    js = start_js(js_peers, net, interop, "jhome",
                  "--announce", f"/ip4/{nat1}/tcp/{JS_PORT}")
    js.command("dial", f"{r.addr}/p2p-circuit/p2p/{d.peer_id}")

    wait_for(lambda: holepunch(d)["failed"].get("no_direct", 0) == 3, timeout=60,
             interval=0.5, message="the daemon (B) to give up after 3 attempts")
    stats = holepunch(d)
    log = js.log()
    print("daemon:", stats, "\njs:", "\n".join(log))
    assert stats["attempts"] == 3, stats
    assert stats["succeeded"] == 0, stats
    assert sum(1 for line in log if "A receiving sync" in line) == 3, log
    assert sum(1 for line in log if "A dialing" in line) == 3, log
    # js's SYNs did leave for nat2, and none from its listen port.
    all_syns, from_listen_port = syn_counts(net, "nat1", js_ip, nat2, JS_PORT)
    assert all_syns >= 3, (from_listen_port, all_syns)
    assert from_listen_port == 0, (from_listen_port, all_syns)
    # Still connected, through r only.
    addrs = daemon_addrs(d, js.peer_id)
    assert addrs, "the daemon lost the js peer"
    assert all("/p2p-circuit" in a for a in addrs), addrs


@pytest.mark.usefixtures("iptables")
def test_js_with_no_public_address_still_reaches_a_reachable_daemon(
        netns: Build, interop: Path, js_peers: list[DcutrPeer]) -> None:
    """js as it is behind a NAT: nothing tells it its public address (js's identify
    ignores TCP observed addresses, @libp2p/identify identify.js
    `maybeAddObservedAddress`), so its CONNECT holds only private and relay
    addresses, and the daemon (B) has nothing to dial. js (A) still dials the
    daemon's addresses on SYNC; with the daemon reachable (here without pub's
    filter), that dial is the direct connection, and the daemon waits for it rather
    than give the attempt up."""
    net = netns(Scenario.nat(["r", "pub"], ["home"]))
    net.masquerade_all(stealth=True)
    r = net.start_daemon("r", "r", listen="/ip4/0.0.0.0/tcp/4001",
                         config='reachability = "public"\n')
    d = net.start_daemon("pub", "d", "--bootstrap", r.addr,
                         config='reachability = "private"\n')
    wait_for(lambda: any("/p2p-circuit" in a for a in d.call("id")["addrs"]), timeout=40,
             message="the daemon to hold a reservation on r")
    js = start_js(js_peers, net, interop, "home")
    js.command("dial", f"{r.addr}/p2p-circuit/p2p/{d.peer_id}")
    wait_direct(d, js)

    stats = holepunch(d)
    log = js.log()
    print("daemon:", stats, "\njs:", "\n".join(log))
    assert stats["attempts"] == 1, stats
    assert stats["succeeded"] == 1, stats
    assert stats["failed"] == {}, stats
    d.wait_logged("sent no address to dial")
    assert logged(log, "A receiving sync", "A dialing", "succeeded via") == [], log
    conns = js.connections(d.peer_id)
    assert [c["addr"].split("/tcp/")[0] for c in conns] == [f"/ip4/{net.ip('pub')}"], conns
    wait_for(lambda: r.call("status")["relay"]["circuits"] == 0, timeout=20,
             message="r to carry no circuit of theirs")
