"""The namespace harness itself (harness/netns.py): links, isolation, faults, clean-up."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gossipchat.daemon.adapters.interfaces import interface_ips
from harness.netns import (
    Network,
    Scenario,
    namespaces,
    network,
    remove_leftovers,
)
from harness.system_packages import ensure_apt
from harness.waiting import wait_for

Build = Callable[[Scenario], Network]
pytestmark = pytest.mark.usefixtures("netns_available")


@pytest.fixture
def ping() -> None:
    reason = ensure_apt("iputils-ping")
    if reason:
        pytest.skip(reason)


def pings(net: Network, src: str, dst_ip: str) -> bool:
    return net.run(src, ["ping", "-n", "-c", "1", "-W", "1", dst_ip]).returncode == 0


def reaches(net: Network, src: str, dst_ip: str) -> None:
    """Wait until src gets an answer from dst_ip (a first packet may wait for ARP)."""
    wait_for(lambda: pings(net, src, dst_ip), timeout=10, message=f"{src} to ping {dst_ip}")


def gone(pid: int) -> bool:
    """True once a process no longer runs (a zombie waiting for its reaper counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


@pytest.mark.usefixtures("ping")
def test_two_namespaces_ping_each_other_over_the_bridge(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b"))
    assert net.ip("a") == "198.18.0.1"
    assert net.ip("b") == "198.18.0.2"
    reaches(net, "a", net.ip("b"))
    reaches(net, "b", net.ip("a"))


CONNECT = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.settimeout(2)
    try:
        s.connect((sys.argv[1], 22))
    except OSError as exc:
        print(exc.errno)
    else:
        print("connected")
"""


def test_a_namespace_has_no_route_to_the_host(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b"))
    routes = net.run("a", ["ip", "route", "show"], check=True).stdout
    assert routes.split() == ["198.18.0.0/24", "dev", "eth0", "proto", "kernel", "scope",
                              "link", "src", "198.18.0.1"]
    assert net.run("a", ["ip", "-6", "route", "show", "default"], check=True).stdout == ""
    host_ips = [ip for ip in interface_ips() if not ip.startswith(("127.", "::1", "fe80:"))]
    assert host_ips, "the host has no address besides loopback to try"
    for ip in host_ips:
        answer = net.run("a", [sys.executable, "-c", CONNECT, ip], check=True).stdout.strip()
        assert answer == "101", f"{ip}: {answer} (101 is ENETUNREACH)"


def _body_that_fails(seen: dict[str, Any]) -> None:
    with network(Scenario.lan("a", "b")) as net:
        seen["prefix"] = net.prefix
        assert {net.ns("a"), net.ns("b"), net.switch} <= set(namespaces())
        seen["tracked"] = net.popen("a", ["sleep", "600"])
        # A process that left its parent: only the namespace knows it.
        seen["orphan"] = int(net.run("b", ["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
                                     check=True).stdout)
        assert not gone(seen["orphan"])
        raise RuntimeError("test body failed")


def test_everything_of_a_run_is_removed_even_when_the_body_raises() -> None:
    before = root_links()
    seen: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="test body failed"):
        _body_that_fails(seen)
    assert not [ns for ns in namespaces() if ns.startswith(seen["prefix"])]
    assert root_links() == before
    assert seen["tracked"].poll() is not None
    wait_for(lambda: gone(seen["orphan"]), timeout=10, message="the orphan to be killed")


def test_leftovers_of_a_dead_run_are_removed() -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale = f"gcnet-{finished.pid}-abcd-a"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        ours = f"gcnet-{os.getpid()}-abcd-a"
        subprocess.run(["ip", "netns", "add", ours], check=True)
        try:
            assert stale in remove_leftovers()
            assert stale not in namespaces()
            assert ours in namespaces(), "a live run's namespace was removed"
        finally:
            subprocess.run(["ip", "netns", "del", ours], check=False)
    finally:
        subprocess.run(["ip", "netns", "del", stale], check=False, capture_output=True)


@pytest.mark.usefixtures("ping")
def test_cut_and_partition_stop_traffic_until_undone(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b", "c"))
    a, b, c = (net.ip(h) for h in "abc")
    reaches(net, "a", b)
    net.cut("b")
    assert not pings(net, "a", b)
    reaches(net, "a", c)
    net.restore("b")
    reaches(net, "a", b)

    net.partition([["a"], ["b", "c"]])
    assert not pings(net, "a", b)
    assert not pings(net, "c", a)
    reaches(net, "b", c)
    net.heal()
    reaches(net, "a", c)


def test_rate_limit_shapes_both_directions(netns: Build) -> None:
    net = netns(Scenario.lan("a", "b"))
    net.rate_limit("a", "1mbit")
    inside = net.run("a", ["tc", "qdisc", "show", "dev", "eth0"], check=True).stdout
    switch = subprocess.run(["ip", "netns", "exec", net.switch, "tc", "qdisc", "show",
                             "dev", "p0-a"], capture_output=True, text=True,
                            check=True).stdout
    for shown in (inside, switch):
        assert "tbf" in shown, shown
        assert "rate 1Mbit" in shown, shown
    net.unlimit("a")
    assert "tbf" not in net.run("a", ["tc", "qdisc", "show", "dev", "eth0"]).stdout
