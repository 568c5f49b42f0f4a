"""Circuit relay v2 (`/libp2p/circuit/relay/0.2.0/hop` and `/stop`): relay for
others when public, reserve slots on relays when private, dial `/p2p-circuit`
addresses.

py-libp2p 0.8.1's `relay/circuit_v2` cannot carry a chat (DESIGN.md): its swarm
drops `/p2p-circuit` addresses, its listener never sends STOP OK, its hop side trusts
a client-supplied peer id, it writes a STATUS into the spliced data on a limit, its
idle circuits never expire and its client RESERVEs before every CONNECT
(tests/upstream/test_circuit_relay_v2.py shows the ones this module relies on not
using). This module speaks the same wire with py-libp2p's generated protobufs
(varint-prefixed) and does the rest itself:

- Hop (public nodes with `relay_service`): RESERVE is for the Noise-authenticated
  peer of the stream; CONNECT needs the destination's live reservation, opens STOP
  to it, and splices the two streams under `core.relay.RelayBook`'s limits; at a
  limit both streams are reset, nothing is written into them.
- Stop: answers STATUS OK, then runs Noise and yamux over the stream
  (`swarm.upgrade_inbound_raw_conn`): the circuit becomes an ordinary swarm
  connection, so GossipSub, sync and presence use it like any other.
- Client: a private node (AutoNAT) keeps `want` reservations on directly connected
  peers that accept (a relay refuses while it does not know itself public), renews
  them at half their lifetime, retrying with backoff on failure, and advertises
  `<relay addr>/p2p/<relay>/p2p-circuit` (identify, presence, `id`). CONNECT goes to
  the relay named in the address; no RESERVE first.
- Crossing dials: when two members dial each other through relays at once, each
  side closes the circuit the higher peer id dialed as soon as the other is up
  (`core.relay.crossed_circuits`), so they keep one connection, and only the side
  that accepted the kept circuit starts a hole punch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage

from ..core import autonat as autonat_policy
from ..core import relay as book
from ..core import ticks
from ..errors import PeerUnreachable
from . import negotiate, timers
from .autonat import AutoNAT, read_message, write_message
from .p2p import P2PNetwork, Stream, StreamClosedError

log = logging.getLogger(__name__)

HOP = "/libp2p/circuit/relay/0.2.0/hop"
STOP = "/libp2p/circuit/relay/0.2.0/stop"
MESSAGE_TIMEOUT_S = 10.0
SPLICE_CHUNK = 64 * 1024
RESERVE_POLL_S = 2.0
RESERVE_BACKOFF_S = (3.0, 10.0, 30.0, 120.0, 300.0)


class CircuitConnection(RawConnection):
    """A relayed stream as the raw connection Noise and yamux run over.

    It has no IP remote address (so it never counts as direct), and lists its
    circuit multiaddr as its transport address. `limit_bytes` and `limit_s` are the
    limits the relay announced for the circuit (per direction; None if it set none):
    bitswap sizes what it asks over the circuit by them."""

    def __init__(self, stream: INetStream, initiator: bool, addr: multiaddr.Multiaddr,
                 limit: Any = None) -> None:
        super().__init__(stream=stream, initiator=initiator,
                         connection_type=ConnectionType.RELAYED, addresses=[addr])
        self.limit_bytes: int | None = None
        self.limit_s: float | None = None
        if limit is not None:
            self.limit_bytes = int(limit.data) or None
            self.limit_s = float(limit.duration) or None

    def get_remote_address(self) -> tuple[str, int] | None:
        return None


def _hop(kind: Any, status: int | None = None) -> HopMessage:
    msg = HopMessage()
    msg.type = kind
    if status is not None:
        msg.status = status  # type: ignore[assignment]
    return msg


def _plain(addr: str) -> bool:
    """A relay address worth announcing: TCP on a non-loopback IP."""
    parts = addr.split("/")
    return len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp" \
        and not parts[2].startswith("127.") and parts[2] != "::1"


class Relay:
    """Hop and stop handlers, the circuit dialer and the reservation keeper."""

    def __init__(self, network: P2PNetwork, autonat: AutoNAT, *, limits: book.RelayLimits,
                 serve: bool, want: int) -> None:
        self.network = network
        self.autonat = autonat
        self.book = book.RelayBook(limits)
        self.serve = serve
        self.want = want
        self.reserved: dict[str, tuple[float, list[str]]] = {}  # relay -> (renew at, addrs)
        self._failures: dict[str, tuple[int, float]] = {}  # relay -> (count, retry at)
        self.stats: dict[str, int] = {"reserve_ok": 0, "reserve_failed": 0,
                                      "circuits_dialed": 0, "circuits_accepted": 0,
                                      "dial_failed": 0, "stop_refused": 0,
                                      "crossed_closed": 0}
        network.circuit_dialer = self.dial
        # Told of each circuit accepted here (the DCUtR initiator, adapters/dcutr.py).
        self.on_inbound_circuit: Callable[[str], None] | None = None
        self._dialing: Counter[str] = Counter()  # peer -> circuit dials to it under way
        # Peers whose circuit to us waits for ours to it before a punch (crossing).
        self._deferred_punch: set[str] = set()

    # hop (relay side)

    async def _serve_hop(self, stream: Stream) -> None:
        msg = HopMessage()
        try:
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                msg.ParseFromString(await read_message(stream))
        except Exception:  # ValueError, DecodeError, TooSlowError: junk or silence
            self.book.refused["malformed"] += 1
            await self._answer(stream, book.MALFORMED_MESSAGE)
            return
        if not self.serve or self.autonat.verdict() != autonat_policy.PUBLIC:
            self.book.refused["not_public"] += 1
            await self._answer(stream, book.RESERVATION_REFUSED
                               if msg.type == HopMessage.RESERVE else book.PERMISSION_DENIED)
            return
        if stream.remote_address() is None:
            self.book.refused["relayed"] += 1  # no relaying over relays
            await self._answer(stream, book.PERMISSION_DENIED)
            return
        if msg.type == HopMessage.RESERVE:
            await self._reserve(stream)
        elif msg.type == HopMessage.CONNECT:
            await self._connect(stream, msg)
        else:
            self.book.refused["unexpected"] += 1
            await self._answer(stream, book.UNEXPECTED_MESSAGE)

    async def _answer(self, stream: Stream, status: int) -> None:
        try:
            await write_message(stream, _hop(HopMessage.STATUS, status).SerializeToString())
        except StreamClosedError:
            return

    def _limit(self, msg: Any) -> None:
        limits = self.book.limits
        msg.limit.duration = int(limits.circuit_duration_s)
        msg.limit.data = int(limits.circuit_bytes)

    async def _reserve(self, stream: Stream) -> None:
        # The reservation is for the peer Noise authenticated, whatever msg.peer says.
        status = self.book.reserve(stream.peer_id, time.monotonic())
        if status != book.OK:
            await self._answer(stream, status)
            return
        reply = _hop(HopMessage.STATUS, book.OK)
        reply.reservation.expire = int(time.time() + self.book.limits.reservation_ttl_s)
        for addr in self.network.listen_addrs():
            bare = addr.split("/p2p/")[0]
            if _plain(bare):
                reply.reservation.addrs.append(multiaddr.Multiaddr(bare).to_bytes())
        self._limit(reply)
        await write_message(stream, reply.SerializeToString())

    async def _connect(self, stream: Stream, msg: Any) -> None:
        try:
            dst = ID(msg.peer.id).to_base58()
        except Exception:  # no or bad peer id
            self.book.refused["malformed"] += 1
            await self._answer(stream, book.MALFORMED_MESSAGE)
            return
        src = stream.peer_id
        if not self.network.is_connected(dst):
            self.book.drop(dst)
        status = self.book.open_circuit(src, dst, time.monotonic())
        if status != book.OK:
            await self._answer(stream, status)
            return
        relayed = 0
        cut = False
        try:
            try:
                with trio.fail_after(MESSAGE_TIMEOUT_S):
                    out = await self.network.open_stream(dst, STOP)
                    stop = StopMessage()
                    stop.type = StopMessage.CONNECT
                    stop.peer.id = ID.from_base58(src).to_bytes()
                    self._limit(stop)
                    await write_message(out, stop.SerializeToString())
                    answer = StopMessage()
                    answer.ParseFromString(await read_message(out))
            except Exception as exc:  # stream errors, junk, timeouts: the circuit fails
                log.debug("relay: STOP to %s failed: %s", dst, exc)
                await self._answer(stream, book.CONNECTION_FAILED)
                return
            if answer.type != StopMessage.STATUS or answer.status != book.OK:
                await out.reset()
                await self._answer(stream, book.CONNECTION_FAILED)
                return
            reply = _hop(HopMessage.STATUS, book.OK)
            self._limit(reply)
            await write_message(stream, reply.SerializeToString())
            relayed, cut = await self._splice(stream, out)
        finally:
            self.book.close_circuit(src, dst, cut=cut, relayed=relayed)

    async def _splice(self, a: Stream, b: Stream) -> tuple[int, bool]:
        """Copy both ways until both ends close, or a limit cuts (resets) both."""
        limits = self.book.limits
        moved = [0, 0]
        cut = False

        async def pump(src: Stream, dst: Stream, i: int, scope: trio.CancelScope) -> None:
            nonlocal cut
            try:
                while True:
                    data = await src.read(SPLICE_CHUNK)
                    if not data:
                        await dst.close()
                        return
                    if moved[i] + len(data) > limits.circuit_bytes:
                        cut = True
                        scope.cancel()
                        return
                    moved[i] += len(data)
                    await dst.write(data)
            except StreamClosedError:
                scope.cancel()

        with trio.move_on_after(limits.circuit_duration_s) as timer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, a, b, 0, nursery.cancel_scope)
                nursery.start_soon(pump, b, a, 1, nursery.cancel_scope)
        if timer.cancelled_caught:
            cut = True
        # A limit (or one side dying) resets both: nothing is written into the data.
        await a.reset()
        await b.reset()
        return moved[0] + moved[1], cut

    # stop (destination side)

    async def _serve_stop(self, raw: INetStream) -> None:
        relay = raw.muxed_conn.peer_id.to_base58()
        stream = Stream(raw, relay)
        msg = StopMessage()
        try:
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                msg.ParseFromString(await read_message(stream))
            src = ID(msg.peer.id)
        except Exception:  # junk, silence, no peer id
            self.stats["stop_refused"] += 1
            await stream.reset()
            return
        reply = StopMessage()
        reply.type = StopMessage.STATUS
        if msg.type != StopMessage.CONNECT or relay not in self.reserved:
            self.stats["stop_refused"] += 1
            reply.status = book.PERMISSION_DENIED  # type: ignore[assignment]
            await write_message(stream, reply.SerializeToString())
            await stream.close()
            return
        reply.status = book.OK  # type: ignore[assignment]
        await write_message(stream, reply.SerializeToString())
        addr = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{src.to_base58()}")
        swarm: Any = self.network.host.get_network()
        try:
            limit = msg.limit if msg.HasField("limit") else None
            muxed = await swarm.upgrade_inbound_raw_conn(
                CircuitConnection(raw, False, addr, limit), addr)
        except Exception as exc:  # Noise or muxer failures end this circuit only
            log.info("relay: inbound circuit from %s via %s failed: %s", src, relay, exc)
            await stream.reset()
            return
        self.stats["circuits_accepted"] += 1
        log.info("relay: inbound circuit from %s via %s", src, relay)
        peer = src.to_base58()
        if muxed in await self._close_crossed(peer):
            return  # ours to it is the one both sides keep: no punch from this side
        if peer in self._dialing and self.network.peer_id < peer:
            # Our own circuit to it is on its way and will replace this one; punch
            # only if it fails (`dial`).
            self._deferred_punch.add(peer)
            return
        self._punch(peer)

    def _punch(self, peer: str) -> None:
        if self.on_inbound_circuit is not None:
            self.on_inbound_circuit(peer)  # DCUtR counts a peer gone by then

    async def _close_crossed(self, peer: str) -> list[Any]:
        """After a circuit to or from `peer` came up: close the ones that crossed."""
        closed = await self.network.close_crossed_circuits(peer)
        if closed:
            self.stats["crossed_closed"] += len(closed)
            log.info("relay: %s and this node dialed each other at once; closed %d "
                     "crossed circuit(s)", peer, len(closed))
        return closed

    # client: dialing

    async def dial(self, addr_text: str) -> str:
        """Connect through `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>`."""
        relay_part, _, dest_part = addr_text.partition("/p2p-circuit")
        if not dest_part.startswith("/p2p/") or "/p2p/" not in relay_part:
            raise PeerUnreachable(f"{addr_text!r} is not <relay>/p2p-circuit/p2p/<peer>")
        dest = dest_part[len("/p2p/"):].split("/")[0]
        relay = relay_part.rsplit("/p2p/", 1)[1]
        ours = False
        self._dialing[dest] += 1
        try:
            ours = await self._dial(relay_part, relay, dest)
        finally:
            self._dialing[dest] -= 1
            if not self._dialing[dest]:
                del self._dialing[dest]
                if dest in self._deferred_punch:
                    self._deferred_punch.discard(dest)
                    if not ours:  # the circuit it dialed us on is the one kept: punch
                        self._punch(dest)
        return dest

    async def _dial(self, relay_part: str, relay: str, dest: str) -> bool:
        """Dial the circuit; True if ours is up, False if the peer's circuit to us
        (it dialed us at the same moment) is the connection instead."""
        try:
            if not self.network.is_connected(relay):
                await self.network.connect(relay_part)
            if self.network.is_connected(dest):
                return False  # it dialed us meanwhile
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                raw = await negotiate.open_stream(self.network.host, ID.from_base58(relay),
                                                  [HOP])
                stream = Stream(raw, relay)
                msg = _hop(HopMessage.CONNECT)
                msg.peer.id = ID.from_base58(dest).to_bytes()
                await write_message(stream, msg.SerializeToString())
                reply = HopMessage()
                reply.ParseFromString(await read_message(stream))
            if reply.type != HopMessage.STATUS or reply.status != book.OK:
                await stream.reset()
                raise PeerUnreachable(f"relay {relay} refused the circuit to {dest}: "
                                      f"status {int(reply.status)}")
            addr = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{dest}")
            swarm: Any = self.network.host.get_network()
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                limit = reply.limit if reply.HasField("limit") else None
                conn = await swarm.upgrade_outbound_raw_conn(
                    CircuitConnection(raw, True, addr, limit), ID.from_base58(dest))
        except PeerUnreachable:
            self.stats["dial_failed"] += 1
            raise
        except Exception as exc:  # swarm, stream, protobuf and timeout errors
            if self.network.is_connected(dest):
                # The peer dialed us at the same moment and its circuit is the one
                # both sides keep: ours was closed under the upgrade.
                return False
            self.stats["dial_failed"] += 1
            raise PeerUnreachable(f"peer unreachable through relay {relay}: {exc}") from None
        self.stats["circuits_dialed"] += 1
        return conn.muxed_conn not in await self._close_crossed(dest)

    # client: reservations

    async def _reserve_on(self, relay: str) -> bool:
        try:
            with trio.fail_after(MESSAGE_TIMEOUT_S):
                stream = await self.network.open_stream(relay, HOP)
                await write_message(stream, _hop(HopMessage.RESERVE).SerializeToString())
                reply = HopMessage()
                reply.ParseFromString(await read_message(stream))
                await stream.close()
        except Exception as exc:  # not a relay, junk, timeout
            log.debug("relay: RESERVE on %s failed: %s", relay, exc)
            reply = None
        now = time.monotonic()
        if reply is None or reply.status != book.OK or not reply.HasField("reservation"):
            count = self._failures.get(relay, (0, 0.0))[0]
            delay = RESERVE_BACKOFF_S[min(count, len(RESERVE_BACKOFF_S) - 1)]
            self._failures[relay] = (count + 1, now + delay)
            self.stats["reserve_failed"] += 1
            self.reserved.pop(relay, None)
            return False
        addrs = []
        for raw_addr in reply.reservation.addrs:
            try:
                bare = str(multiaddr.Multiaddr(bytes(raw_addr))).split("/p2p/")[0]
            except Exception:  # a relay's garbage address
                continue
            if _plain(bare):
                addrs.append(f"{bare}/p2p/{relay}/p2p-circuit")
        lifetime = max(30.0, reply.reservation.expire - time.time())
        self._failures.pop(relay, None)
        self.reserved[relay] = (now + lifetime / 2, addrs[:4])
        self.stats["reserve_ok"] += 1
        log.info("relay: reservation on %s (%d s)", relay, int(lifetime))
        return True

    def _advertise(self) -> None:
        addrs = [a for _, (_, relay_addrs) in sorted(self.reserved.items()) for a in relay_addrs]
        self.network.set_extra_addrs(addrs)

    async def _keep_reservations(self) -> None:
        while True:
            now = time.monotonic()
            private = self.autonat.verdict() == autonat_policy.PRIVATE
            for relay in [r for r in self.reserved if not self.network.is_connected(r)]:
                del self.reserved[relay]
            if not private or self.want == 0:
                self.reserved.clear()
            else:
                for relay, (renew_at, _) in list(self.reserved.items()):
                    if now >= renew_at:
                        await self._reserve_on(relay)
                candidates = [p for p in self.network.connected_peers()
                              if p not in self.reserved and self.network.is_direct(p)
                              and now >= self._failures.get(p, (0, 0.0))[1]]
                for relay in candidates:
                    if len(self.reserved) >= self.want:
                        break
                    await self._reserve_on(relay)
            self._advertise()
            await timers.sleep_until(ticks.next_at(trio.current_time(), RESERVE_POLL_S))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve hop and stop, and keep reservations, until cancelled."""
        self.network.set_stream_handler(HOP, self._serve_hop)
        self.network.host.set_stream_handler(TProtocol(STOP), self._serve_stop)
        task_status.started()
        await self._keep_reservations()

    def peer_lost(self, peer_id: str) -> None:
        """A peer's last connection closed: its reservation with us ends."""
        self.book.drop(peer_id)

    def view(self) -> dict[str, Any]:
        """For `status.relay`."""
        now = time.monotonic()
        return {
            "service": self.serve and self.autonat.verdict() == autonat_policy.PUBLIC,
            "reservations": self.book.reservations(now),
            "circuits": self.book.circuits,
            "circuits_opened": self.book.circuits_opened,
            "circuits_cut": self.book.circuits_cut,
            "bytes_relayed": self.book.bytes_relayed,
            "refused": dict(self.book.refused),
            "reserved_on": sorted(self.reserved),
            **self.stats,
        }
