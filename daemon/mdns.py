"""LAN discovery: find gossipchat (and other libp2p) peers over mDNS and dial them.

Rules:
- Off with `mdns = false` (`--no-mdns`): then no socket is opened and nothing is sent.
- At start: a query, and an unsolicited response announcing us. Then a query every
  QUERY_INTERVAL_S (random within it), and an answer to each query for
  `_p2p._udp.local`, at most one a second (core/mdns.py). A new announcement also
  goes out when our addresses change.
- Each response heard is parsed by the core; junk is dropped and counted by reason
  (`status.discovery.mdns.rejected`). A peer found is kept until its TTL ends and
  dialed when it is not connected, not blocked, not just trimmed by the connection
  manager (`defer`) and not us, within the core's bounds;
  once connected, presence and history sync treat it like any other peer.
- Failing to open the socket (port taken without SO_REUSEPORT, no permission) does not
  stop the daemon: it is logged and shown in status as `error`.
- The service task owns the discovery state; its receive loop, its schedule and its
  dial tasks run in its nursery and change the state only between awaits.
"""

from __future__ import annotations

import logging
import random
import secrets
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from .adapters import timers
from .adapters.mdns import MulticastSocket
from .adapters.p2p import P2PNetwork
from .core import mdns as core
from .core import ticks
from .errors import GossipchatError

log = logging.getLogger(__name__)

QUERY_INTERVAL_S = (10.0, 30.0)
INTERFACES_REFRESH_S = 30.0
# Addresses change rarely; checking them costs little (the network caches them).
ADDRS_CHECK_S = 5.0
MAX_TICK_S = 1.0
# Our own query comes back within this long; another daemon's identical query from an
# address of ours (same host) may be taken for it, and then our echo is answered instead.
ECHO_S = 0.5


@dataclass
class MdnsStats:
    """Counters for `status.discovery.mdns`."""

    queries_sent: int = 0
    queries_received: int = 0
    responses_sent: int = 0
    responses_received: int = 0
    send_errors: int = 0
    discovered: int = 0
    dials: int = 0
    dials_failed: int = 0
    ignored: int = 0
    addrs_skipped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def _instance_name(rng: random.Random) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(rng.choice(alphabet) for _ in range(32))


class MdnsService:
    """Announces this node on the LAN, finds peers there, and dials them."""

    def __init__(self, network: P2PNetwork, *, enabled: bool, max_connections: int,
                 rng: random.Random | None = None) -> None:
        self.network = network
        self.enabled = enabled
        self.max_connections = max_connections
        self.stats = MdnsStats()
        self._rng = rng or random.Random(secrets.randbits(64))
        self.instance = _instance_name(self._rng)
        self.state = core.Discovery(own_peer=network.peer_id)
        self.socket: MulticastSocket | None = None
        self.error: str | None = None
        self.interfaces: list[str] = []
        self.announced: list[str] = []
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None
        # Counts a contained bug in status.faults (the node's count_fault).
        self.count_fault: Callable[[str], None] = lambda _surface: None
        # Peers another service wants left alone (the connection manager's trims).
        self.defer: Callable[[str], bool] = lambda _peer: False
        # Our own queries come back to us (multicast loopback): (count, until).
        self._echoes = (0, 0.0)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Open the socket and serve until cancelled (report started either way)."""
        if not self.enabled:
            task_status.started()
            return
        sock = MulticastSocket()
        try:
            sock.open()
            await sock.bind()
        except OSError as exc:
            sock.close()
            self.error = f"cannot open the mDNS socket: {exc}"
            log.warning("mDNS is off: %s", self.error)
            task_status.started()
            return
        self.socket = sock
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.interfaces = sock.refresh()
                nursery.start_soon(self._receive_loop, sock)
                task_status.started()
                await self._schedule(sock)
        finally:
            self._nursery = None
            sock.close()

    # the schedule

    async def _schedule(self, sock: MulticastSocket) -> None:
        now = trio.current_time()
        next_query = now
        next_refresh = now + INTERFACES_REFRESH_S
        next_addrs_check = now
        self.state.query_heard(now)  # announce ourselves once at start
        while True:
            now = trio.current_time()
            if now >= next_refresh:
                self.interfaces = sock.refresh()
                next_refresh = now + INTERFACES_REFRESH_S
            if now >= next_addrs_check:
                addrs = core.announceable(self.network.listen_addrs(), self.network.peer_id)
                if addrs != self.announced:
                    self.announced = addrs
                    self.state.query_heard(now)  # tell the LAN of the new addresses
                next_addrs_check = now + ADDRS_CHECK_S
            if now >= next_query:
                await self._send(sock, core.build_query(), "query")
                self._echoes = (len(sock.interfaces), trio.current_time() + ECHO_S)
                next_query = now + self._rng.uniform(*QUERY_INTERVAL_S)
            if self.state.answer_due(trio.current_time()) and self.announced:
                await self._send(sock, core.build_response(self.instance, self.announced),
                                 "response")
            self._dial_due()
            # The schedule runs on the daemon's shared grid (core/ticks.py): a query,
            # a refresh or an address check falls due at most a tick late, and the
            # loop wakes with the daemon's other timers, not in a phase of its own
            # (a wake-up apart costs a quiet daemon more than the work it does).
            # Answers keep their own time: the core spaces them from the query.
            deadline = ticks.next_at(trio.current_time(), MAX_TICK_S)
            answer_at = self.state.next_answer_at()
            if answer_at is not None:
                deadline = min(deadline, answer_at)
            await timers.wait(self._wakeup, deadline)
            self._wakeup = trio.Event()

    async def _send(self, sock: MulticastSocket, packet: bytes, kind: str) -> None:
        failed = await sock.send(packet)
        self.stats.send_errors += failed
        if len(sock.interfaces) > failed:
            if kind == "query":
                self.stats.queries_sent += 1
            else:
                self.stats.responses_sent += 1

    # intake

    async def _receive_loop(self, sock: MulticastSocket) -> None:
        while True:
            try:
                data, sender = await sock.receive()
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.debug("mDNS receive: %s", exc)
                await trio.sleep(0.1)
                continue
            try:
                self.take(data, sender, trio.current_time())
            except Exception:  # a bug one packet hit: count it, keep listening
                log.exception("mDNS: a packet from %s could not be handled", sender)
                self.count_fault("mdns")

    def _own_echo(self, data: bytes, sender: str, now: float) -> bool:
        count, until = self._echoes
        if count and now < until and sender in self.interfaces and data == core.build_query():
            self._echoes = (count - 1, until)
            return True
        return False

    def take(self, data: bytes, sender: str, now: float) -> None:
        """Handle one datagram (sync: the state changes between awaits only)."""
        try:
            message = core.parse(data)
            if message.asks_for_us():
                if self._own_echo(data, sender, now):
                    self.stats.ignored += 1
                    return
                self.stats.queries_received += 1
                self.state.query_heard(now)
                self._wakeup.set()
                return
            found = core.read_response(message, self.network.peer_id, self.instance)
        except core.MdnsError as exc:
            self.stats.rejected[exc.reason] += 1
            return
        if found is None:
            self.stats.ignored += 1  # another service, another query, or our own echo
            return
        self.stats.responses_received += 1
        self.stats.addrs_skipped += found.skipped_addrs
        verdict = self.state.heard(found, now)
        if verdict == "new":
            self.stats.discovered += 1
            log.info("mDNS: found %s at %s", found.peer, ", ".join(found.addrs))
        elif verdict == "full":
            self.stats.rejected["cache_full"] += 1
        self._wakeup.set()

    # dials

    def _dial_due(self) -> None:
        if self._nursery is None:
            return
        now = trio.current_time()
        connected = set(self.network.connected_peers())
        blocked = {p for p in self.state.peers
                   if self.network.is_blocked(p) or self.defer(p)}
        for peer, addrs in self.state.dials(
                now, connected=connected, blocked=blocked,
                room=self.max_connections - len(connected)):
            self._nursery.start_soon(self._dial, peer, addrs)

    async def _dial(self, peer: str, addrs: tuple[str, ...]) -> None:
        self.stats.dials += 1
        ok = False
        try:
            await self.network.dial_known(peer, list(addrs))
            ok = True
            log.info("mDNS: connected to %s", peer)
        except GossipchatError as exc:
            self.stats.dials_failed += 1
            log.info("mDNS: dial %s failed: %s", peer, exc.message)
        finally:
            self.state.dialed(peer, ok, trio.current_time())
            self._wakeup.set()

    # views

    def view(self) -> dict[str, Any]:
        """The `mdns` part of `status.discovery`."""
        return {
            "enabled": self.enabled and self.socket is not None,
            "error": self.error,
            "interfaces": list(self.interfaces),
            "announced": list(self.announced),
            "queries_sent": self.stats.queries_sent,
            "queries_received": self.stats.queries_received,
            "responses_sent": self.stats.responses_sent,
            "responses_received": self.stats.responses_received,
            "send_errors": self.stats.send_errors,
            "peers": len(self.state.peers),
            "discovered": self.stats.discovered,
            "dials": self.stats.dials,
            "dials_failed": self.stats.dials_failed,
            "ignored": self.stats.ignored,
            "addrs_skipped": self.stats.addrs_skipped,
            "rejected": dict(self.stats.rejected),
        }
