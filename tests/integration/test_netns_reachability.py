"""AutoNAT through a real NAT: daemons learn whether peers can dial them.

r and p sit on the public segment; a sits in a home network behind router nat1,
which masquerades and drops whatever comes in unsolicited (tests/netns.py
`Scenario.nat`). a dials r only. Every daemon asks its connected peers to dial it
back on a new connection: r and p are told public, a private. py-libp2p's own
server would have told a public too (tests/upstream/test_autonat_dialback.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.daemons import DaemonProcess, connect, wait_for
from harness.netns import Network, Scenario
from harness.system_packages import ensure_apt

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")


@pytest.fixture
def iptables() -> None:
    reason = ensure_apt("iptables")
    if reason:
        pytest.skip(reason)


def reachability(daemon: DaemonProcess) -> str:
    return str(daemon.call("status")["reachability"])


@pytest.mark.usefixtures("iptables")
def test_a_public_daemon_is_told_public_and_one_behind_nat_private(netns: Build) -> None:
    net = netns(Scenario.nat(["r", "p"], ["a"]))
    net.masquerade_all()
    r = net.start_daemon("r", "r")
    p = net.start_daemon("p", "p")
    a = net.start_daemon("a", "a")
    assert reachability(a) == "unknown"
    started = time.monotonic()
    connect(r, p)
    connect(r, a)
    # r sees a at the router's public address: a is behind the NAT.
    seen = next(x for x in r.call("peers") if x["peer_id"] == a.peer_id)
    assert seen["addrs"][0].startswith(f"/ip4/{net.ip('nat1', 0)}/tcp/"), seen

    verdicts = {}
    for daemon, expected in ((a, "private"), (r, "public"), (p, "public")):
        wait_for(lambda d=daemon, e=expected: reachability(d) == e, timeout=30,
                 message=f"{daemon.name} to be told {expected}")
        verdicts[daemon.name] = round(time.monotonic() - started, 2)
    status = a.call("status")
    assert status["autonat"]["dial_error"] >= 1, status["autonat"]
    assert status["autonat"]["ok"] == 0, status["autonat"]
    served = r.call("status")["autonat"]["served"]
    assert served["dial_error"] >= 1, served  # r tried a and could not reach it
    assert served["ok"] >= 1, served  # and reached p
    print("verdict after connect (s):", verdicts,
          "first verdict after start:", {d.name: d.call("status")["autonat"][
              "first_verdict_after_s"] for d in (a, r, p)})
    # a's connection to r survived r's dial-back attempts and the chat paths work.
    assert any(x["peer_id"] == r.peer_id for x in a.call("peers"))
