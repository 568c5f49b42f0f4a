"""The interface enumeration the advertised addresses start from, inside a namespace."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from harness.netns import Network, Scenario

Build = Callable[[Scenario], Network]
LIST = ("import json; from gossipchat.daemon.adapters.interfaces import interface_ips; "
        "print(json.dumps(interface_ips()))")


def listed(net: Network, host: str) -> list[str]:
    return list(json.loads(net.run(host, [sys.executable, "-c", LIST], check=True).stdout))


def test_addresses_of_interfaces_that_are_up_ipv4_first(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b"))
    net.run("a", ["ip", "-6", "addr", "add", "fd00:198:18::1/64", "dev", "eth0", "nodad"],
            check=True)
    ips = listed(net, "a")
    assert set(ips) >= {"127.0.0.1", "198.18.0.1", "::1", "fd00:198:18::1"}, ips
    assert ips.index("198.18.0.1") < ips.index("fd00:198:18::1"), ips

    net.run("a", ["ip", "link", "set", "eth0", "down"], check=True)
    ips = listed(net, "a")
    assert "198.18.0.1" not in ips, ips
    assert "fd00:198:18::1" not in ips, ips
    assert "127.0.0.1" in ips, ips


def test_an_address_still_in_duplicate_detection_is_left_out(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b"))
    # b already holds the address, so a's copy never leaves DAD: it stays tentative
    # (then dadfailed) and must not be advertised.
    net.run("b", ["ip", "-6", "addr", "add", "fd00:198:18::7/64", "dev", "eth0", "nodad"],
            check=True)
    net.run("a", ["ip", "-6", "addr", "add", "fd00:198:18::7/64", "dev", "eth0"], check=True)
    flags = net.run("a", ["ip", "-6", "addr", "show", "dev", "eth0"], check=True).stdout
    assert "tentative" in flags, flags
    assert "fd00:198:18::7" not in listed(net, "a")
