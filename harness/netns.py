"""A small multi-host network for tests, built from Linux network namespaces.

A scenario is data: layer-2 segments, each a bridge with the hosts on it. Every host
is its own network namespace with one interface per segment (`eth0`, `eth1`, ...) and
one address per interface. The bridges live in one more namespace of their own, the
"switch", so the run creates nothing at all in the host's namespace:

    host a (ns)  eth0 --veth-- p0-a ┐
    host b (ns)  eth0 --veth-- p0-b ┼ br0   (switch ns)
    host c (ns)  eth0 --veth-- p0-c ┘

- Addresses come from 198.18.0.0/15 (reserved for network tests): segment i is
  198.18.i.0/24 unless it names a subnet, and its k-th host gets .k+1.
- No namespace has a default route or any link to the host's interfaces: a packet
  can only reach the namespaces of the same run.
- Faults: `cut(host)` pulls the host's cables (its switch ports go down) and
  `restore(host)` plugs them in; `partition([[..], [..]])` moves each group's ports
  onto a bridge of its own and `heal()` undoes it; `rate_limit(host, rate)` shapes
  both directions of the host's links with tc tbf. This kernel has no netem; a test
  that needs delay must put a forwarding process of its own in the path.
- Routing: `enable_forwarding(router)` and `add_route(host, prefix, via)` (no default
  routes) join segments through a host; NAT rules are iptables commands `run` inside
  the router (install iptables with harness/system_packages.py).
- Home networks behind NAT: `Scenario.nat(["r"], ["a"], ["b"])` puts r on the public
  segment 198.18.0.0/24 with one router per home (`nat1`, `nat2`, ...; .2, .3, ...
  there), and home i's hosts on 192.168.i.0/24 behind router `nat<i>` (.1 there, the
  hosts from .2). `masquerade(router)` makes the router a home gateway: it forwards,
  masquerades what leaves through its public side (port-preserving where it can;
  `random_fully=True` adds `--random-fully`, a symmetric NAT for hole punching), and
  drops anything from outside that is not a reply; the home hosts get a route to
  the public subnet (never a default route). `Network.nat_routers()` lists them;
  `masquerade_all()` sets up every one.
- A public host that is not plainly dialable: `filter_inbound(host)` gives it a
  firewall that lets a new inbound connection in only from an IP it sent to lately
  (address-dependent filtering, as RFC 4787 §5 allows a NAT or firewall).
- Processes: `run(host, argv)` and `popen(host, argv)` run inside a host's namespace
  (`ip netns exec`); `start_daemon(host, name)` starts a real gossipchatd there
  (harness/daemons.py), listening on 0.0.0.0 by default, LAN discovery (mDNS) off
  unless asked for. Multicast on a segment works without a route for a program that
  picks its interface (gossipchatd does); `route_multicast(host)` adds one for the
  others. Unix sockets are files, so the
  test talks to that daemon's RPC socket and runs p2pctl from the host namespace.
- Clean-up: `close()` stops the daemons, kills every process left in the run's
  namespaces and deletes them; deleting a namespace deletes its veths and bridges.
  `network()` and the `netns` fixture (tests/conftest.py) call it whatever happens.
  Names carry a per-run prefix `gcnet-<pid>-<random>-`; a new run first removes the
  namespaces of earlier runs whose process is gone (a crashed or killed pytest).

Needs root and iproute2 (`ip`, `tc`, `bridge`); `unavailable()` says why not.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .daemons import Cluster, DaemonProcess
from .system_packages import ensure_apt

PREFIX = "gcnet"
_RUN_RE = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]{{4}}-")
_HOST_RE = re.compile(r"[a-z][a-z0-9]{0,7}")  # keeps switch port names within 15 bytes
COMMAND_TIMEOUT_S = 30.0


class NetnsError(Exception):
    """An ip or tc command failed; the message holds the command and its stderr."""


@dataclass(frozen=True)
class Segment:
    """One layer-2 segment (a bridge) and its hosts, in address order."""

    hosts: tuple[str, ...]
    subnet: str | None = None  # default 198.18.<segment index>.0/24


@dataclass(frozen=True)
class Scenario:
    """Segments and the hosts on them; a host on two segments can route between them."""

    segments: tuple[Segment, ...]

    @classmethod
    def lan(cls, *hosts: str) -> Scenario:
        """Every host on one segment, 198.18.0.0/24."""
        return cls((Segment(tuple(hosts)),))

    @classmethod
    def nat(cls, public: Sequence[str], *homes: Sequence[str]) -> Scenario:
        """Public hosts on 198.18.0.0/24 and home networks 192.168.<i>.0/24, each
        behind its router `nat<i>` (on both segments); see `Network.masquerade`."""
        routers = tuple(f"nat{i}" for i in range(1, len(homes) + 1))
        segments = [Segment((*public, *routers))]
        for i, home in enumerate(homes, start=1):
            segments.append(Segment((f"nat{i}", *home), subnet=f"192.168.{i}.0/24"))
        return cls(tuple(segments))

    @property
    def hosts(self) -> list[str]:
        """Every host once, in order of first appearance."""
        return list(dict.fromkeys(h for s in self.segments for h in s.hosts))


def _command(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def namespaces() -> list[str]:
    """Every network namespace on this machine, by name."""
    out = _command("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _remove_namespace(ns: str) -> None:
    """Kill every process inside ns, then delete it (and with it its interfaces)."""
    pids = _command("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _command("ip", "netns", "del", ns, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone; return their names."""
    removed = []
    for ns in namespaces():
        match = _RUN_RE.match(ns)
        if match and not _alive(int(match.group(1))):
            _remove_namespace(ns)
            removed.append(ns)
    return removed


@functools.cache
def unavailable() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    if not (shutil.which("ip") and shutil.which("tc") and shutil.which("bridge")):
        reason = ensure_apt("iproute2")
        if reason:
            return reason
    probe = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(2)}-probe"
    done = _command("ip", "netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    _command("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Network:
    """A built scenario: namespaces, bridges, links and what runs inside them."""

    scenario: Scenario
    prefix: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}-{secrets.token_hex(2)}")
    cluster: Cluster = field(default_factory=Cluster)
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    _addresses: dict[tuple[str, int], ipaddress.IPv4Interface] = field(default_factory=dict)
    _partitioned: bool = False

    # building

    def ns(self, host: str) -> str:
        """The namespace name of a host."""
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        """The namespace that holds the bridges."""
        return f"{self.prefix}-sw"

    def _segments_of(self, host: str) -> list[int]:
        return [i for i, s in enumerate(self.scenario.segments) if host in s.hosts]

    def build(self) -> Network:
        """Create every namespace, bridge, veth pair and address."""
        for host in self.scenario.hosts:
            if not _HOST_RE.fullmatch(host):
                raise ValueError(f"host name {host!r}: use 1-8 of a-z 0-9, starting a letter")
        _command("ip", "netns", "add", self.switch)
        for i, segment in enumerate(self.scenario.segments):
            net = ipaddress.ip_network(segment.subnet or f"198.18.{i}.0/24")
            if len(segment.hosts) + 2 > net.num_addresses:
                raise ValueError(f"subnet {net} is too small for {len(segment.hosts)} hosts")
            _command("ip", "-n", self.switch, "link", "add", f"br{i}", "type", "bridge")
            _command("ip", "-n", self.switch, "link", "set", f"br{i}", "up")
            for k, host in enumerate(segment.hosts):
                self._addresses[(host, i)] = ipaddress.IPv4Interface(
                    f"{net.network_address + k + 1}/{net.prefixlen}")
        for host in self.scenario.hosts:
            ns = self.ns(host)
            _command("ip", "netns", "add", ns)
            _command("ip", "-n", ns, "link", "set", "lo", "up")
            for n, i in enumerate(self._segments_of(host)):
                port, eth = f"p{i}-{host}", f"eth{n}"
                _command("ip", "-n", self.switch, "link", "add", port, "type", "veth",
                         "peer", "name", eth, "netns", ns)
                _command("ip", "-n", self.switch, "link", "set", port, "master", f"br{i}", "up")
                _command("ip", "-n", ns, "addr", "add", str(self._addresses[(host, i)]),
                         "dev", eth)
                _command("ip", "-n", ns, "link", "set", eth, "up")
        return self

    def close(self) -> None:
        """Stop the daemons and processes, and delete every namespace of this run."""
        try:
            self.cluster.close()
        finally:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
            for ns in namespaces():
                if ns.startswith(self.prefix + "-"):
                    _remove_namespace(ns)

    # addresses and processes

    def ip(self, host: str, segment: int | None = None) -> str:
        """A host's IPv4 address on a segment (by default its first one)."""
        index = self._segments_of(host)[0] if segment is None else segment
        return str(self._addresses[(host, index)].ip)

    def iface(self, host: str, segment: int) -> str:
        """The name of a host's interface on a segment (`eth0`, `eth1`, ...)."""
        return f"eth{self._segments_of(host).index(segment)}"

    def add_route(self, host: str, destination: str, via: str) -> None:
        """Route a destination prefix through a neighbour (never a default route)."""
        if ipaddress.ip_network(destination).prefixlen == 0:
            raise ValueError("no default routes: a namespace must have no route out")
        _command("ip", "-n", self.ns(host), "route", "add", destination, "via", via)

    def enable_forwarding(self, host: str) -> None:
        """Let a host on several segments route between them."""
        self.run(host, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=True)

    def nat_routers(self) -> list[str]:
        """The routers of a `Scenario.nat` (hosts named nat<i> on two segments)."""
        return [h for h in self.scenario.hosts
                if re.fullmatch(r"nat\d+", h) and len(self._segments_of(h)) == 2]

    def masquerade(self, router: str, *, random_fully: bool = False,
                   stealth: bool = False) -> None:
        """Make a router on a public (198.18/15) and a home segment a home NAT gateway.

        It forwards; what leaves through its public side is masqueraded to its public
        address (MASQUERADE keeps the source port when free; `random_fully` picks a
        random one per connection, as a symmetric NAT does); from outside only replies
        (conntrack ESTABLISHED/RELATED) pass, anything unsolicited is dropped. The
        router's own stack answers a SYN to a port it does not serve with a RST, unless
        `stealth`: then it drops new inbound TCP to itself, as most home routers do.
        The home hosts route the public subnet through it. Needs iptables
        (`ensure_apt`)."""
        public_net = ipaddress.ip_network("198.18.0.0/15")
        segments = self._segments_of(router)
        wan = next(i for i in segments if self._addresses[(router, i)].ip in public_net)
        lan = next(i for i in segments if i != wan)
        wan_if, lan_if = self.iface(router, wan), self.iface(router, lan)
        self.enable_forwarding(router)
        masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan_if, "-j", "MASQUERADE"]
        rules = [
            masq + (["--random-fully"] if random_fully else []),
            ["iptables", "-A", "FORWARD", "-i", wan_if, "-o", lan_if, "-m", "conntrack",
             "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            ["iptables", "-A", "FORWARD", "-i", wan_if, "-o", lan_if, "-j", "DROP"],
        ]
        if stealth:
            rules.append(["iptables", "-A", "INPUT", "-i", wan_if, "-p", "tcp", "-m",
                          "conntrack", "--ctstate", "NEW", "-j", "DROP"])
        for rule in rules:
            self.run(router, rule, check=True)
        gateway = str(self._addresses[(router, lan)].ip)
        wan_net = str(self._addresses[(router, wan)].network)
        for host in self.scenario.segments[lan].hosts:
            if host != router:
                self.add_route(host, wan_net, via=gateway)

    def filter_inbound(self, host: str, *, memory_s: int = 60) -> None:
        """Give a host a firewall with address-dependent filtering (RFC 4787 §5): a
        new inbound TCP connection gets in only from an IP the host itself sent a
        packet to within `memory_s` seconds; replies always pass. A plain dial to the
        host fails, but once it has dialed a peer (a hole punch), that peer's SYN gets
        in from any port. Needs iptables (`ensure_apt`)."""
        rules = [
            ["iptables", "-A", "OUTPUT", "!", "-o", "lo", "-m", "recent", "--name", "sent",
             "--rdest", "--set"],
            ["iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
            ["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
             "-j", "ACCEPT"],
            ["iptables", "-A", "INPUT", "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW",
             "-m", "recent", "--name", "sent", "--rsource", "--rcheck", "--seconds",
             str(memory_s), "-j", "ACCEPT"],
            ["iptables", "-A", "INPUT", "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW",
             "-j", "DROP"],
        ]
        for rule in rules:
            self.run(host, rule, check=True)

    def masquerade_all(self, *, random_fully: bool = False, stealth: bool = False) -> None:
        """`masquerade` every router of a `Scenario.nat`."""
        for router in self.nat_routers():
            self.masquerade(router, random_fully=random_fully, stealth=stealth)

    def exec_prefix(self, host: str) -> list[str]:
        """The argv prefix that runs a command inside a host's namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    def run(self, host: str, argv: Sequence[str], *, check: bool = False,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run a command inside a host's namespace and wait for it."""
        done = subprocess.run([*self.exec_prefix(host), *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise NetnsError(f"{host}: {' '.join(argv)}: exit {done.returncode}: "
                             f"{done.stderr.strip()}")
        return done

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside a host's namespace; `close()` kills it if still running."""
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.exec_prefix(host), *argv],
                                                       **kwargs)
        self._procs.append(proc)
        return proc

    def start_daemon(self, host: str, name: str, *extra: str,
                     listen: str = "/ip4/0.0.0.0/tcp/0", mdns: bool = False,
                     config: str = "") -> DaemonProcess:
        """A real gossipchatd inside a host's namespace, ready (its ready line read).
        LAN discovery (mDNS) is off unless `mdns` is true; `config`, if given, is
        written to its home's config.toml first."""
        if config:
            home = self.cluster.home(name)
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            (home / "config.toml").write_text(config)
        return self.cluster.start(name, *extra, listen=listen,
                                  prefix_argv=self.exec_prefix(host), mdns=mdns)

    def route_multicast(self, host: str) -> None:
        """Route 224.0.0.0/4 out of the host's first interface, for programs that send
        multicast without choosing an interface (js-libp2p's mDNS). It reaches only the
        segment's bridge, like every other route here."""
        _command("ip", "-n", self.ns(host), "route", "add", "224.0.0.0/4", "dev", "eth0")

    # faults

    def _ports(self, host: str) -> list[str]:
        return [f"p{i}-{host}" for i in self._segments_of(host)]

    def cut(self, host: str) -> None:
        """Pull a host's cables: its switch ports go down, connections hang."""
        for port in self._ports(host):
            _command("ip", "-n", self.switch, "link", "set", port, "down")

    def restore(self, host: str) -> None:
        """Plug a cut host back in."""
        for port in self._ports(host):
            _command("ip", "-n", self.switch, "link", "set", port, "up")

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Hosts in different groups stop hearing each other; hosts in no group keep
        the original bridges. Each group's ports move to a bridge of its own."""
        self.heal()
        for i, _segment in enumerate(self.scenario.segments):
            for g, group in enumerate(groups):
                bridge = f"br{i}g{g}"
                _command("ip", "-n", self.switch, "link", "add", bridge, "type", "bridge")
                _command("ip", "-n", self.switch, "link", "set", bridge, "up")
                for host in group:
                    if i in self._segments_of(host):
                        _command("ip", "-n", self.switch, "link", "set", f"p{i}-{host}",
                                 "master", bridge)
        self._partitioned = True

    def heal(self) -> None:
        """Undo `partition`: every port back on its segment's bridge."""
        if not self._partitioned:
            return
        for i, segment in enumerate(self.scenario.segments):
            for host in segment.hosts:
                _command("ip", "-n", self.switch, "link", "set", f"p{i}-{host}",
                         "master", f"br{i}")
        links = _command("ip", "-n", self.switch, "-o", "link", "show", "type", "bridge").stdout
        for name in re.findall(r"^\d+: (br\d+g\d+)[:@]", links, flags=re.MULTILINE):
            _command("ip", "-n", self.switch, "link", "del", name)
        self._partitioned = False

    def rate_limit(self, host: str, rate: str, *, burst: str = "32kb",
                   latency: str = "200ms") -> None:
        """Shape both directions of a host's links to `rate` (tc syntax: "1mbit")."""
        for n, port in enumerate(self._ports(host)):
            for ns, dev in ((self.switch, port), (self.ns(host), f"eth{n}")):
                _command("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev,
                         "root", "tbf", "rate", rate, "burst", burst, "latency", latency)

    def unlimit(self, host: str) -> None:
        """Remove a host's rate limits."""
        for n, port in enumerate(self._ports(host)):
            for ns, dev in ((self.switch, port), (self.ns(host), f"eth{n}")):
                _command("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root",
                         check=False)


@contextmanager
def network(scenario: Scenario) -> Iterator[Network]:
    """Build a scenario and tear it down whatever happens, earlier runs' leftovers first."""
    remove_leftovers()
    net = Network(scenario)
    try:
        yield net.build()
    finally:
        net.close()
