"""LAN discovery over mDNS between real daemons, each in its own network namespace.

No test here uses `connect` or `--bootstrap`: the daemons find each other on the
segment's bridge (224.0.0.251:5353) or not at all. A raw mDNS socket in a namespace of
the test's own (tests/mdns_probe.py) listens to what the daemons send and sends junk.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gossipchat.daemon.core import mdns as core
from gossipchat.daemon.core import peerid
from harness.daemons import DaemonProcess, texts, wait_for, wait_mesh
from harness.netns import Network, Scenario

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")
PROBE = Path(__file__).resolve().parents[1] / "mdns_probe.py"
ROOM = "lan"


class Probe:
    """tests/mdns_probe.py running in a namespace: what it hears, and a way to send."""

    def __init__(self, net: Network, host: str) -> None:
        self.proc = net.popen(host, [sys.executable, str(PROBE), net.ip(host)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.heard: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: any(m.get("ready") for m in self._drain()), timeout=10,
                 message="the probe to listen")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def _drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.heard.append(self.lines.get_nowait())
            except queue.Empty:
                return self.heard

    def send(self, packet: bytes, **extra: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"send": packet.hex(), **extra}) + "\n")
        self.proc.stdin.flush()

    def packets(self, sender: str | None = None) -> list[bytes]:
        return [bytes.fromhex(m["hex"]) for m in self._drain()
                if "hex" in m and (sender is None or m["from"] == sender)]

    def responses(self, sender: str) -> list[core.Announcement]:
        out = []
        for packet in self.packets(sender):
            found = core.read_response(core.parse(packet), "", "")
            if found is not None:
                out.append(found)
        return out


def mdns_status(daemon: DaemonProcess) -> dict[str, Any]:
    status: dict[str, Any] = daemon.call("status")["discovery"]["mdns"]
    return status


def peer_ids(daemon: DaemonProcess) -> set[str]:
    return {p["peer_id"] for p in daemon.call("peers")}


def fake_peer(n: int) -> str:
    return peerid.to_text(peerid.from_public_key(n.to_bytes(32, "big")))


def test_three_hosts_find_each_other_and_chat_with_no_connect(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b", "c"))
    first = time.monotonic()
    daemons = [net.start_daemon(h, h, mdns=True) for h in "abc"]
    last_ready = time.monotonic()
    for d in daemons:
        d.call("join", room=ROOM)
    everyone = {d.peer_id for d in daemons}
    wait_for(lambda: all(peer_ids(d) == everyone - {d.peer_id} for d in daemons),
             timeout=10, message="every daemon to be connected to the other two")
    found = time.monotonic()
    print(f"mDNS discovery: all three connected {found - last_ready:.2f} s after the last "
          f"daemon was ready ({found - first:.2f} s after the first started)")

    for d in daemons:
        wait_mesh(d, ROOM, 2, timeout=10)
    sent = time.monotonic()
    daemons[0].call("send", room=ROOM, text="hello lan")
    for d in daemons[1:]:
        wait_for(lambda d=d: "hello lan" in texts(d, ROOM), timeout=10,
                 message=f"{d.name} to hear a")
    print(f"a message reached both others {time.monotonic() - sent:.2f} s after it was sent "
          f"({time.monotonic() - first:.2f} s after the first daemon started)")

    # A daemon answers queries at most once a second (core.mdns.ANSWER_GAP_S), so the
    # last one to start may hear the others' answers after they have already dialed it.
    wait_for(lambda: all(mdns_status(d)["discovered"] == 2 for d in daemons), timeout=10,
             message="every daemon to have heard the other two answer on the LAN")
    for d, host in zip(daemons, "abc", strict=True):
        status = mdns_status(d)
        assert status["enabled"] is True
        assert status["announced"] == [_tcp_addr(d, net.ip(host))], status
        assert status["discovered"] == 2, status
        assert status["rejected"] == {}, status
    assert {m["peer_id"] for m in daemons[2].call("members", room=ROOM)} == everyone
    shown = daemons[0].cli("status")
    assert "mdns      on, 2 peers found on the LAN, " in shown.stdout, shown.stdout


def _tcp_addr(daemon: DaemonProcess, ip: str) -> str:
    return next(a for a in daemon.call("id")["addrs"] if a.startswith(f"/ip4/{ip}/"))


def test_no_mdns_sends_nothing_and_is_not_found(netns: Build) -> None:
    """a has mDNS on, b has it off, and the probe on p listens to both and asks."""
    net = netns(Scenario.lan("a", "b", "p"))
    probe = Probe(net, "p")
    a = net.start_daemon("a", "a", mdns=True)
    b = net.start_daemon("b", "b", "--no-mdns")
    assert mdns_status(b)["enabled"] is False
    assert "mdns      off\n" in b.cli("status").stdout
    def answers_from_a() -> int:
        return sum(r.peer == a.peer_id for r in probe.responses(net.ip("a")))

    before = answers_from_a()  # a announced itself at start
    probe.send(core.build_query())
    wait_for(lambda: answers_from_a() > before, message="a to answer the probe's query")
    # b heard the same query on the same bridge at the same moment. a answers a second
    # query only a second after the first (RFC 6762), so once that second answer is in,
    # b had over a second to answer the first, if it were going to.
    probe.send(core.build_query())
    wait_for(lambda: answers_from_a() > before + 1, message="a to answer again")
    assert probe.packets(net.ip("b")) == []
    status = mdns_status(b)
    assert (status["queries_sent"], status["responses_sent"], status["interfaces"]) == (
        0, 0, [])
    assert peer_ids(a) == set()
    assert peer_ids(b) == set()
    assert mdns_status(a)["peers"] == 0


def _response(peer: str, addrs: list[str], *, instance: str = "x" * 20,
              ttl: int = core.TTL_S) -> bytes:
    return core.build_response(instance, [f"{a}/p2p/{peer}" for a in addrs], ttl)


def _name(text: bytes) -> bytes:
    return b"".join(bytes([len(p)]) + p for p in text.split(b".")) + b"\x00"


def _record(name: bytes, rtype: int, rdata: bytes) -> bytes:
    return name + struct.pack(">2HIH", rtype, 1, 120, len(rdata)) + rdata


def _raw_response(strings: list[bytes], *, txt: bool = True) -> bytes:
    """A response with these TXT strings as they are (no checks at all), or none."""
    target = _name(b"junk._p2p._udp.local")
    ptr = _record(_name(b"_p2p._udp.local"), core.TYPE_PTR, target)
    rdata = b"".join(bytes([len(s)]) + s for s in strings)
    additional = [_record(target, core.TYPE_TXT, rdata)] if txt else []
    header = struct.pack(">6H", 0, 0x8400, 0, 1, 0, len(additional))
    return header + ptr + b"".join(additional)


def test_junk_from_a_raw_socket_changes_nothing_and_is_counted(netns: Build) -> None:
    net = netns(Scenario.lan("a", "x"))
    a = net.start_daemon("a", "a", mdns=True)
    probe = Probe(net, "x")
    wait_for(lambda: mdns_status(a)["interfaces"] == [net.ip("a")], message="a to listen")
    valid = _response(fake_peer(1), ["/ip4/198.18.0.50/tcp/4001"])
    query = core.build_query()
    junk = {
        "truncated": [valid[:-7], valid[:5], query[:20]],
        "bad_pointer": [bytes.fromhex("000084000001000000000000") + b"\xc0\x0c\x00\x0c\x00\x01",
                        bytes.fromhex("000000000001000000000000") + b"\xc0\x20\x00\x0c\x00\x01"],
        "too_many_records": [bytes.fromhex("0000840000ffffffffffffff") + valid[12:]],
        "oversize": [_raw_response([b"dnsaddr=/ip4/198.18.0.9/tcp/1/p2p/" +
                                    fake_peer(2).encode()] * 600)],
        "bad_addrs": [_raw_response([b"dnsaddr=garbage", b"dnsaddr=/ip4/1.2.3.4/tcp/1",
                                     b"dnsaddr=\xff\xfe/p2p/x"])],
        "bad_peer_id": [_raw_response([b"dnsaddr=/ip4/198.18.0.9/tcp/1/p2p/QmNotAKey"])],
        "no_dialable_addr": [_raw_response([
            b"dnsaddr=/ip4/0.0.0.0/tcp/1/p2p/" + fake_peer(3).encode(),
            b"dnsaddr=/ip4/127.0.0.1/tcp/1/p2p/" + fake_peer(3).encode(),
            b"dnsaddr=/ip4/999.1.1.1/tcp/1/p2p/" + fake_peer(3).encode(),
            b"dnsaddr=/dns4/evil.example/tcp/1/p2p/" + fake_peer(3).encode()])],
        "own_peer_id": [_response(a.peer_id, ["/ip4/198.18.0.50/tcp/4001"])],
        "no_txt": [_raw_response([], txt=False)],
    }
    for packets in junk.values():
        for packet in packets:
            probe.send(packet)
            probe.send(packet, port=40000)  # and from a port other than 5353
    expected = {reason: 2 * len(packets) for reason, packets in junk.items()}
    wait_for(lambda: mdns_status(a)["rejected"] == expected, timeout=10,
             message=f"a to count {expected}")

    # 1000 addresses of one peer, over 20 packets (one packet holds at most 9000
    # bytes): a keeps 8 of each packet's 50 and skips the rest.
    many = [f"/ip4/198.18.0.{100 + i % 100}/tcp/{1000 + i}" for i in range(1000)]
    batches = [[_response(fake_peer(4), many[i:i + 50]) for i in range(0, 1000, 50)]]
    # And 200 fake peers, each at an address nobody answers on.
    fakes = [_response(fake_peer(1000 + n), [f"/ip4/198.18.0.{200 + n % 50}/tcp/9"])
             for n in range(200)]
    batches += [fakes[i:i + 25] for i in range(0, len(fakes), 25)]
    heard = 0
    for batch in batches:  # paced: a burst beyond the socket's buffer would be dropped
        for packet in batch:
            probe.send(packet)
        heard += len(batch)
        wait_for(lambda heard=heard: mdns_status(a)["responses_received"] >= heard,
                 timeout=10, message=f"a to take {heard} responses")
    assert mdns_status(a)["rejected"].get("cache_full", 0) > 0
    time.sleep(3)  # dials to dead addresses time out; count what was attempted meanwhile
    status = mdns_status(a)
    print(f"after the junk: {status}")
    assert status["addrs_skipped"] >= 20 * (50 - core.MAX_ADDRS_PER_PEER), status
    assert status["peers"] <= core.MAX_PEERS, status
    assert status["dials"] <= core.DIALS_PER_WINDOW, status
    assert peer_ids(a) == set()
    assert a.running

    # a still answers a real query, with its own address only.
    probe.send(query)
    wait_for(lambda: any(r.peer == a.peer_id for r in probe.responses(net.ip("a"))),
             message="a to answer after the junk")
    answer = next(r for r in probe.responses(net.ip("a")) if r.peer == a.peer_id)
    assert answer.addrs == (_tcp_addr(a, net.ip("a")).split("/p2p/")[0],)
    assert a.call("status")["faults"] == {}


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None or shutil.which("npm") is None,
                    reason="node and npm are needed to run the js-libp2p mDNS peer")
def test_a_js_libp2p_mdns_peer_and_a_daemon_find_each_other(
        netns: Build, interop: Path) -> None:
    net = netns(Scenario.lan("a", "j"))
    net.route_multicast("j")  # multicast-dns sends by route, not by interface
    script = interop / "mdns_peer.mjs"
    js = net.popen("j", [NODE or "node", str(script), "--interval", "2000"],
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True, cwd=interop, env={**os.environ, "DEBUG": ""})
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert js.stdout is not None
        for line in js.stdout:
            events.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    seen: list[dict[str, Any]] = []

    def saw(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        while True:
            try:
                seen.append(events.get_nowait())
            except queue.Empty:
                break
        return next((e for e in seen if predicate(e)), None)

    me = wait_for(lambda: saw(lambda e: "peer" in e), timeout=30, message="the js peer")
    a = net.start_daemon("a", "a", mdns=True)
    ready = time.monotonic()

    found = wait_for(lambda: saw(lambda e: e.get("discovered") == a.peer_id), timeout=20,
                     message="the js peer to discover the daemon")
    print(f"js-libp2p discovered the daemon {time.monotonic() - ready:.2f} s after it was "
          f"ready: {found}")
    assert found["addrs"], found
    for addr in found["addrs"]:
        assert "/0.0.0.0/" not in addr, found
        assert "/127." not in addr, found
    assert f"/ip4/{net.ip('a')}/tcp/" in found["addrs"][0], found

    wait_for(lambda: me["peer"] in peer_ids(a), timeout=20,
             message="the daemon to discover and connect to the js peer")
    print(f"the daemon found the js peer (status.discovery.mdns) and is connected to it "
          f"{time.monotonic() - ready:.2f} s after it was ready")
    status = mdns_status(a)
    assert status["discovered"] >= 1, status
    assert status["rejected"] == {}, status
    assert js.stdin is not None
    js.stdin.close()
    js.wait(20)
