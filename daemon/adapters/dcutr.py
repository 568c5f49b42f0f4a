"""DCUtR (`/libp2p/dcutr`): turn a relayed connection into a direct one by a TCP
hole punch. core/dcutr.py has the messages, the address rules and the book-keeping;
this adapter does the stream I/O and the dials.

py-libp2p 0.8.1 has its own DCUtR, which starts punches from both sides every 2 s
(DESIGN.md); it is not used. Its TCP transport is: listeners carry SO_REUSEPORT, and
the swarm can dial from a given source (ip, port) and upgrade such a dial as either
side of the handshake (`dial_addr`, `dial_addr_as_responder`). A punch therefore
leaves from our listen port, which a port-preserving NAT maps to the same public
port (tests/integration/test_netns_simultaneous_open.py measures it with plain
sockets).

- B, the side that accepted the relayed connection (adapters/relay.py calls
  `relayed_inbound`), initiates, as the spec says: first a plain dial if the peer
  announced a public address; else CONNECT with our predicted public addresses,
  CONNECT back gives the RTT, SYNC, and RTT/2 later it dials every address the peer
  sent and upgrades as the server (Noise responder): `core.dcutr.upgrades_as_client`.
  Up to `core.dcutr.MAX_ATTEMPTS` attempts on the same stream (spec step 6; on a new
  one when the peer ended it, as js-libp2p does after each exchange); then the peer
  stays on its relay for `core.dcutr.RETRY_AFTER_S`. When the peer sent nothing to
  dial, B still sends SYNC and waits for the peer's dial.
- A answers on the relayed connection only: CONNECT back, and on SYNC it dials at
  once and upgrades as the client (Noise initiator); then it waits for B's next
  CONNECT on the stream.
- A router may answer the first SYN with a RST when the other side's SYN has not
  left yet: each address is dialed again every `REDIAL_S` for `DIAL_WINDOW_S`, until
  a direct connection to the peer exists (ours, or the other side's that our
  listener accepted).
- Once the peer is directly connected, both sides close the relayed connections to
  it: GossipSub, sync and presence carry on over the direct one.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from typing import Any

import multiaddr
import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID

from ..core import dcutr as core
from .autonat import read_message, write_message
from .p2p import P2PNetwork, Stream, StreamClosedError

log = logging.getLogger(__name__)

MESSAGE_TIMEOUT_S = 10.0
DIAL_WINDOW_S = 5.0  # how long one attempt's dials go on
DIAL_TIMEOUT_S = 3.0  # one dial, with its Noise and yamux upgrade
REDIAL_S = 0.003  # mean; jittered, so that the two sides' phases do not lock
DIRECT_POLL_S = 0.05
QUEUE = 64
UNILATERAL_ADDRS = 2


async def _close(raw: Any) -> None:
    try:
        await raw.close()
    except Exception as exc:  # closing a dead socket raises a spread of types
        log.debug("dcutr: close: %s", exc)


async def _connect_from(ip: str, port: int, source: tuple[str, int]) -> trio.SocketStream:
    """A TCP connection to (ip, port) from the `source` (ip, port) our listener holds
    too (both carry SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind(source)
        await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


class HolePuncher:
    """Both roles of DCUtR on one P2PNetwork; `run` serves and starts punches."""

    def __init__(self, network: P2PNetwork, *, enabled: bool = True) -> None:
        self.network = network
        self.enabled = enabled
        self.stats = core.HolePunchStats()
        self.book = core.PunchBook()
        self._send, self._receive = trio.open_memory_channel[tuple[str, float]](QUEUE)
        self._nursery: trio.Nursery | None = None

    # what we send

    def _our_addrs(self) -> list[str]:
        host: Any = self.network.host
        manager = getattr(host, "_observed_addr_manager", None)
        observed: list[str] = []
        if manager is not None:
            try:
                # One observer is enough here: a punch goes through one relay, and
                # a wrong address costs one failed dial, not an announcement.
                observed = [str(a) for a in manager.addrs(min_observers=1)]
            except Exception as exc:  # py-libp2p internals: never fail a punch on them
                log.debug("dcutr: observed addresses: %s", exc)
        listen = [str(a) for a in host.get_transport_addrs()]
        return core.predicted_addrs(observed, listen)

    def _source(self, family: str) -> tuple[str, int] | None:
        """The (ip, port) of a TCP listener of `family`, for dials to leave from."""
        for addr in self.network.host.get_transport_addrs():
            parts = str(addr).split("/")
            if len(parts) >= 5 and parts[1] == family and parts[3] == "tcp":
                return parts[2], int(parts[4])
        return None

    # B: the initiator

    def relayed_inbound(self, peer_id: str) -> None:
        """A relayed connection from `peer_id` came up on our side: punch to it."""
        if not self.enabled:
            return
        try:
            self._send.send_nowait((peer_id, time.monotonic()))
        except trio.WouldBlock:
            self.stats.failed["queue_full"] += 1

    async def _punch(self, peer: str, relayed_at: float) -> None:
        direct = False
        try:
            if not self.network.is_connected(peer):
                self.stats.failed["peer_gone"] += 1
                return
            direct = self.network.is_direct(peer) or await self._unilateral(peer)
            if not direct:
                direct = await self._attempts(peer)
            if direct:
                await self._upgraded(peer, relayed_at)
        finally:
            self.book.finish(peer, time.monotonic(), direct=direct)

    async def _unilateral(self, peer: str) -> bool:
        """The spec's first step: if the peer announced a public address (identify),
        dial it directly; True on a direct connection."""
        addrs = [a for a in (core.dialable(t) for t in self.network.peer_addrs(peer)) if a]
        # At most UNILATERAL_ADDRS of them: each one behind a NAT costs DIAL_TIMEOUT_S
        # before the punch starts.
        addrs = list(dict.fromkeys(addrs))[:UNILATERAL_ADDRS]
        if not addrs:
            return False
        swarm: Any = self.network.host.get_network()
        for addr in addrs:
            try:
                with trio.fail_after(DIAL_TIMEOUT_S):
                    await swarm.dial_addr(multiaddr.Multiaddr(f"{addr}/p2p/{peer}"),
                                          ID.from_base58(peer))
            except Exception as exc:  # unreachable: it is behind a NAT after all
                log.debug("dcutr: direct dial of %s at %s: %s", peer, addr, exc)
                continue
            self.stats.unilateral += 1
            return self.network.is_direct(peer)
        return False

    async def _attempts(self, peer: str) -> bool:
        """Up to MAX_ATTEMPTS exchanges on one stream (spec step 6); True once direct."""
        if not self._our_addrs():
            self.stats.failed["no_public_addrs"] += 1
            return False
        try:
            stream = await self.network.open_stream(peer, core.PROTOCOL)
        except StreamClosedError:
            self.stats.failed["unsupported"] += 1
            return False
        try:
            for attempt in range(core.MAX_ATTEMPTS):
                self.stats.attempts += 1
                reason = await self._attempt(peer, stream)
                if reason == "no_answer" and attempt > 0:
                    # The spec retries on the same stream, but a peer may answer one
                    # exchange per stream: js-libp2p's handler (@libp2p/dcutr
                    # handleIncomingUpgrade) reads CONNECT and SYNC once, and ends
                    # the stream when its dial fails. Ask again on a new stream.
                    await stream.reset()
                    try:
                        stream = await self.network.open_stream(peer, core.PROTOCOL)
                    except StreamClosedError:
                        reason = "exchange"
                    else:
                        reason = await self._attempt(peer, stream)
                if reason == "no_answer":
                    reason = "exchange"
                if reason is None or self.network.is_direct(peer):
                    return True
                self.stats.failed[reason] += 1
                log.info("dcutr: attempt %d to %s failed: %s", attempt + 1, peer, reason)
                if reason != "no_direct" or not self.network.is_connected(peer):
                    return False
            return False
        finally:
            await stream.close()

    async def _attempt(self, peer: str, stream: Stream) -> str | None:
        """One CONNECT/SYNC exchange and its dials: None on a direct connection,
        else why not ("no_answer": the stream failed before the peer's CONNECT)."""
        ours = self._our_addrs()
        try:
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                sent = time.monotonic()
                await write_message(stream, core.encode(core.HolePunch(
                    core.CONNECT, tuple(core.addr_to_bytes(a) for a in ours))))
                answer = await read_message(stream, core.MAX_MESSAGE)
        except (trio.TooSlowError, StreamClosedError, ValueError):
            # ValueError: the stream ended, or a bad length prefix
            return "no_answer"
        try:
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                reply = core.decode(answer)
                rtt = time.monotonic() - sent
                if reply.type != core.CONNECT:
                    return "exchange"
                await write_message(stream, core.encode(core.HolePunch(core.SYNC)))
        except (trio.TooSlowError, StreamClosedError, ValueError):
            # ValueError: a bad length prefix, or a DcutrError (a ProtocolError)
            return "exchange"
        self.stats.last_rtt_ms = round(rtt * 1000, 2)
        theirs = core.peer_addrs(reply.addrs)
        if not theirs:
            # Nothing to dial, but A dials us on SYNC all the same: a js-libp2p peer
            # behind a NAT never knows a public TCP address of its own (its identify
            # ignores TCP observed addresses), and reaches us if we are reachable.
            log.info("dcutr: %s sent no address to dial; waiting for its dial", peer)
            with trio.move_on_after(DIAL_WINDOW_S):
                while not self.network.is_direct(peer):  # noqa: ASYNC110 (no event to wait on)
                    await trio.sleep(DIRECT_POLL_S)
            return None if self.network.is_direct(peer) else "peer_sent_no_addrs"
        log.info("dcutr: punching to %s: ours %s, theirs %s, rtt %.1f ms", peer, ours, theirs,
                 rtt * 1000)
        await trio.sleep(core.sync_delay(rtt))
        client = core.upgrades_as_client(initiator=True)
        return None if await self._dial(peer, theirs, server=not client) else "no_direct"

    # A: the responder

    async def _serve(self, stream: Stream) -> None:
        peer = stream.peer_id
        if stream.remote_address() is not None:
            self.stats.failed["not_relayed"] += 1  # nothing to upgrade
            await stream.reset()
            return
        if self.book.running(peer) and self.network.peer_id < peer:
            # Both sides accepted a circuit from the other and punch: the larger peer
            # id answers, ours goes on.
            await stream.reset()
            return
        # B retries on this stream (spec step 6): one exchange after another until
        # it closes it, or the relayed connection it runs on closes once direct.
        for _ in range(core.MAX_ATTEMPTS):
            try:
                with trio.fail_after(MESSAGE_TIMEOUT_S):
                    first = await read_message(stream, core.MAX_MESSAGE)
            except (trio.TooSlowError, StreamClosedError, ValueError):
                return  # B is done (EOF) or gone
            try:
                with trio.fail_after(MESSAGE_TIMEOUT_S):
                    hello = core.decode(first)
                    if hello.type != core.CONNECT:
                        raise core.DcutrError("DCUtR exchange opened without CONNECT")
                    started = time.monotonic()
                    ours = self._our_addrs()
                    await write_message(stream, core.encode(core.HolePunch(
                        core.CONNECT, tuple(core.addr_to_bytes(a) for a in ours))))
                    sync = core.decode(await read_message(stream, core.MAX_MESSAGE))
                    if sync.type != core.SYNC:
                        raise core.DcutrError("DCUtR CONNECT answered by another CONNECT")
            except (trio.TooSlowError, StreamClosedError, ValueError):
                self.stats.failed["exchange"] += 1
                await stream.reset()
                return
            self.stats.attempts += 1
            theirs = core.peer_addrs(hello.addrs)
            log.info("dcutr: punch from %s: ours %s, theirs %s", peer, ours, theirs)
            if not theirs:
                self.stats.failed["peer_sent_no_addrs"] += 1
                continue
            if await self._answer(peer, theirs, started):
                return

    async def _answer(self, peer: str, theirs: list[str], started: float) -> bool:
        """A's dials, in our own nursery: once they succeed, B may close the relayed
        connection, and with it end this stream's handler, before we count it."""
        if self._nursery is None:
            return False
        done = trio.Event()
        result: list[bool] = []

        async def dial() -> None:
            try:
                client = core.upgrades_as_client(initiator=False)
                direct = await self._dial(peer, theirs, server=not client)
                if direct:
                    await self._upgraded(peer, started)
                else:
                    self.stats.failed["no_direct"] += 1
                result.append(direct)
            finally:
                done.set()

        self._nursery.start_soon(dial)
        await done.wait()
        return bool(result and result[0])

    # both

    async def _dial(self, peer: str, addrs: list[str], *, server: bool) -> bool:
        """Dial every address at once, again and again, until the peer is directly
        connected or DIAL_WINDOW_S passed."""
        with trio.move_on_after(DIAL_WINDOW_S):
            async with trio.open_nursery() as nursery:
                for addr in addrs:
                    nursery.start_soon(self._dial_one, peer, addr, server)
                while not self.network.is_direct(peer):  # noqa: ASYNC110 (no event to wait on)
                    await trio.sleep(DIRECT_POLL_S)
                nursery.cancel_scope.cancel()
        return self.network.is_direct(peer)

    async def _dial_one(self, peer: str, addr: str, server: bool) -> None:
        """Connect to one address from our listen port until a SYN gets through,
        then upgrade the connection in our role."""
        swarm: Any = self.network.host.get_network()
        target = multiaddr.Multiaddr(f"{addr}/p2p/{peer}")
        family, ip, _, port = addr.split("/")[1:5]
        source = self._source(family)
        if source is None:
            return
        errors = 0
        while True:
            try:
                # Not the swarm's dial: its retries back off (0.1, 0.2, 0.4 s), and
                # a router that answered our SYN with a RST must see the next one
                # while the peer's SYN is on its way (test_netns_simultaneous_open);
                # and py-libp2p's transport logs every refusal as an error.
                sock = await _connect_from(ip, int(port), source)
            except OSError as exc:  # refused: the peer's SYN had not left yet
                errors += 1
                if errors == 1:
                    log.debug("dcutr: dial %s at %s from %s: %s", peer, addr, source, exc)
                await trio.sleep(random.uniform(0, 2 * REDIAL_S))
                continue
            break
        raw = RawConnection(TrioTCPStream(sock), not server)
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                if server:
                    muxed = await swarm.upgrade_inbound_raw_conn(raw, target)
                    if getattr(muxed, "peer_id", None) != ID.from_base58(peer):
                        await muxed.close()
                        log.info("dcutr: %s answered as another peer", addr)
                        return
                else:
                    await swarm.upgrade_outbound_raw_conn(raw, ID.from_base58(peer))
        except Exception as exc:  # a handshake that failed or timed out
            log.info("dcutr: upgrade of the punched connection to %s failed: %r", peer, exc)
            await _close(raw)
            return
        log.info("dcutr: direct connection to %s at %s after %d refused dials", peer, addr,
                 errors)

    async def _upgraded(self, peer: str, since: float) -> None:
        self.stats.succeeded += 1
        self.stats.last_time_to_direct_s = round(time.monotonic() - since, 3)
        closed = await self.network.close_relayed(peer)
        log.info("dcutr: %s is direct after %.3f s; closed %d relayed connection(s)",
                 peer, self.stats.last_time_to_direct_s, closed)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve `/libp2p/dcutr` and run the punches B starts, until cancelled."""
        if self.enabled:
            self.network.set_stream_handler(core.PROTOCOL, self._serve)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            async for peer, relayed_at in self._receive:
                if self.book.start(peer, time.monotonic()):
                    nursery.start_soon(self._punch, peer, relayed_at)

    def view(self) -> dict[str, Any]:
        """For `status.holepunch`."""
        return {"enabled": self.enabled, **self.stats.view()}
