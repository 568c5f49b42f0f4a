"""AutoNAT v1 (`/libp2p/autonat/1.0.0`): learn whether peers can dial us, and answer
others who ask.

py-libp2p 0.8.1 has an `AutoNATService`, but its server "dials back" with
`host.connect`, which returns at once over the connection the request came on, so
it tells every client it is public (tests/upstream/test_autonat_dialback.py). This
adapter speaks the same wire (py-libp2p's generated protobuf, varint-prefixed) with
its own server and client:

- Server: refuses requests over relayed connections and requests whose peer id is
  not the connection's (Noise-authenticated) one; rate-limits per peer and in total;
  dials back only the claimed addresses on the IP it observes the requester at, and
  that observed address, each over a NEW connection (`swarm.dial_addr`), which it
  closes at once (core/autonat.py has the policy).
- Client: asks up to `QUERY_FANOUT` connected peers at a time that it has not asked
  lately, each with all its advertised TCP addresses, and keeps the verdict in a
  `core.autonat.Reachability`; asks again every `RECHECK_S` (sooner while unknown)
  and within `ADDRS_POLL_S` when its advertised addresses change.
- Forced (config `reachability` = public|private, as go-libp2p's
  ForceReachabilityPublic/Private): the verdict is fixed and the client never asks;
  the server still answers others.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import multiaddr
import trio
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.id import ID

from ..core import autonat as policy
from ..core import ticks
from . import timers
from .p2p import P2PNetwork, Stream

log = logging.getLogger(__name__)

PROTOCOL = "/libp2p/autonat/1.0.0"
MAX_MESSAGE = 4096
DIALBACK_TIMEOUT_S = 5.0  # one address
REQUEST_TIMEOUT_S = 25.0  # a client waits this long for an answer
QUERY_FANOUT = 3
UNKNOWN_RETRY_S = 5.0
RECHECK_S = 300.0
ASK_AGAIN_S = 60.0  # a server asked this recently is asked again only if nobody else is
ADDRS_POLL_S = 2.0
ROUND_GRID_S = 1.0  # rounds start on whole ticks of the shared grid


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


async def read_message(stream: Stream, limit: int = MAX_MESSAGE) -> bytes:
    """One varint-length-prefixed message; ValueError if it is too long or cut."""
    length = 0
    for shift in range(0, 35, 7):
        byte = await stream.read(1)
        if not byte:
            raise ValueError("stream ended inside a length prefix")
        length |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            break
    else:
        raise ValueError("length prefix too long")
    if length > limit:
        raise ValueError(f"message of {length} bytes (limit {limit})")
    data = bytearray()
    while len(data) < length:
        chunk = await stream.read(length - len(data))
        if not chunk:
            raise ValueError("stream ended inside a message")
        data += chunk
    return bytes(data)


async def write_message(stream: Stream, data: bytes) -> None:
    """One varint-length-prefixed message."""
    await stream.write(_varint(len(data)) + data)


def _response(status: int, text: str = "", addr: bytes | None = None) -> bytes:
    msg = Message()
    msg.type = Message.DIAL_RESPONSE
    msg.dialResponse.status = status  # type: ignore[assignment]
    if text:
        msg.dialResponse.statusText = text
    if addr is not None:
        msg.dialResponse.addr = addr
    return bytes(msg.SerializeToString())


class AutoNAT:
    """Both halves of AutoNAT v1 on one P2PNetwork; `run` is the client's task."""

    def __init__(self, network: P2PNetwork, *, serve: bool = True,
                 forced: str | None = None) -> None:
        if forced not in (None, policy.PUBLIC, policy.PRIVATE):
            raise ValueError(f"forced reachability must be public or private, not {forced!r}")
        self.network = network
        self.serve = serve
        self.forced = forced
        self.reachability = policy.Reachability()
        self.limiter = policy.RateLimiter()
        self.started = time.monotonic()
        self.served: dict[str, int] = {"ok": 0, "dial_error": 0, "refused": 0,
                                       "bad_request": 0}
        self._asked_at: dict[str, float] = {}
        self._addrs: list[str] = []

    # server

    async def _serve(self, stream: Stream) -> None:
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            try:
                raw = await read_message(stream)
            except ValueError:
                self.served["bad_request"] += 1
                await stream.reset()
                return
            reply = await self._answer(stream, raw)
            await write_message(stream, reply)

    async def _answer(self, stream: Stream, raw: bytes) -> bytes:
        msg = Message()
        try:
            msg.ParseFromString(raw)
            claimed_id = ID(msg.dial.peer.id).to_base58() if msg.dial.peer.id else ""
        except Exception:  # protobuf's DecodeError and ID's ValueError
            claimed_id = None
        if claimed_id is None or msg.type != Message.DIAL or not msg.HasField("dial"):
            self.served["bad_request"] += 1
            return _response(policy.E_BAD_REQUEST, "not a DIAL request")
        if claimed_id and claimed_id != stream.peer_id:
            self.served["bad_request"] += 1
            return _response(policy.E_BAD_REQUEST, "peer id is not the connection's")
        remote = stream.remote_address()
        if remote is None:
            self.served["refused"] += 1
            return _response(policy.E_DIAL_REFUSED, "no dial-backs over relayed connections")
        if not self.limiter.allow(stream.peer_id, time.monotonic()):
            self.served["refused"] += 1
            return _response(policy.E_DIAL_REFUSED, "rate limited")
        claimed = []
        for raw_addr in msg.dial.peer.addrs[:64]:
            try:
                claimed.append(str(multiaddr.Multiaddr(bytes(raw_addr))))
            except Exception:  # multiaddr raises several unrelated types on bad input
                continue
        candidates = policy.dialback_candidates(claimed, remote[0], remote[1])
        if not candidates:
            self.served["dial_error"] += 1
            return _response(policy.E_DIAL_ERROR, "no address on the observed IP")
        for addr in candidates:
            if await self._dial_back(stream.peer_id, addr):
                self.served["ok"] += 1
                return _response(policy.OK, addr=multiaddr.Multiaddr(addr).to_bytes())
        self.served["dial_error"] += 1
        return _response(policy.E_DIAL_ERROR, "dial-back failed")

    async def _dial_back(self, peer_id: str, addr: str) -> bool:
        """A new connection to the peer at addr (Noise proves it is the peer); closed
        again at once. The existing connection is never used."""
        swarm: Any = self.network.host.get_network()
        conn = None
        with trio.move_on_after(DIALBACK_TIMEOUT_S):
            try:
                # One attempt: `dial_addr` retries a refused dial with backoff, which
                # only delays the verdict.
                dial = getattr(swarm, "_dial_addr_single_attempt", swarm.dial_addr)
                conn = await dial(multiaddr.Multiaddr(addr), ID.from_base58(peer_id))
            except Exception as exc:  # the swarm raises SwarmException, OSError, noise errors
                log.debug("autonat dial-back to %s at %s: %s", peer_id, addr, exc)
        if conn is None:
            return False
        try:
            await conn.close()
        except Exception as exc:  # closing raises a spread of types on a dying connection
            log.debug("close of dial-back connection to %s: %s", peer_id, exc)
        return True

    # client

    def _claimed(self) -> list[str]:
        return [a.split("/p2p/")[0] for a in self.network.listen_addrs()
                if "/p2p-circuit" not in a]

    async def ask(self, server: str) -> int | None:
        """Ask one connected peer to dial us back; its status, or None (no answer)."""
        self._asked_at[server] = time.monotonic()
        msg = Message()
        msg.type = Message.DIAL
        msg.dial.peer.id = ID.from_base58(self.network.peer_id).to_bytes()
        for claimed in self._claimed():
            msg.dial.peer.addrs.append(multiaddr.Multiaddr(claimed).to_bytes())
        reply = Message()
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            try:
                stream = await self.network.open_stream(server, PROTOCOL)
            except Exception as exc:  # StreamClosedError, PeerBlocked: not a server
                log.debug("autonat: no stream to %s: %s", server, exc)
                self._no_answer(server)
                return None
            try:
                await write_message(stream, bytes(msg.SerializeToString()))
                reply.ParseFromString(await read_message(stream))
            except Exception as exc:  # StreamClosedError, ValueError, protobuf's DecodeError
                log.debug("autonat: %s did not answer: %s", server, exc)
                await stream.reset()
                self._no_answer(server)
                return None
            await stream.close()
            status = int(reply.dialResponse.status)
            addr: str | None = None
            if reply.dialResponse.HasField("addr"):
                try:
                    addr = str(multiaddr.Multiaddr(bytes(reply.dialResponse.addr)))
                except Exception:  # a server's garbage address: keep the status only
                    addr = None
            verdict = self.reachability.record(server, status, time.monotonic(), addr)
            log.info("autonat: %s answered %d; reachability %s", server, status, verdict)
            return status
        self._no_answer(server)
        return None

    def _no_answer(self, server: str) -> None:
        # A peer that did not answer (a stream refused while its connection settles)
        # may be asked again after UNKNOWN_RETRY_S, not after ASK_AGAIN_S.
        self.reachability.failed()
        self._asked_at[server] = time.monotonic() - ASK_AGAIN_S + UNKNOWN_RETRY_S

    def _pick(self, now: float) -> list[str]:
        direct = [p for p in self.network.connected_peers() if self.network.is_direct(p)]
        fresh = [p for p in direct if now - self._asked_at.get(p, -1e9) >= ASK_AGAIN_S]
        random.shuffle(fresh)
        return fresh[:QUERY_FANOUT]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve, and keep our verdict current until cancelled."""
        if self.serve:
            self.network.set_stream_handler(PROTOCOL, self._serve)
        task_status.started()
        if self.forced is not None:
            await trio.sleep_forever()  # nothing to learn
        self._addrs = self._claimed()
        next_round = 0.0
        while True:
            now = time.monotonic()
            addrs = self._claimed()
            if addrs != self._addrs:
                self._addrs = addrs
                self.reachability.reset(now)
                self._asked_at.clear()
                next_round = now
            if now >= next_round:
                servers = self._pick(now)
                if servers:
                    async with trio.open_nursery() as nursery:
                        for server in servers:
                            nursery.start_soon(self.ask, server)
                settled = self.reachability.verdict(time.monotonic()) != policy.UNKNOWN
                next_round = time.monotonic() + (RECHECK_S if settled else UNKNOWN_RETRY_S)
                if not servers:
                    next_round = time.monotonic() + 1.0
            # Both wake-ups are on the daemon's shared grid (core/ticks.py): the
            # address poll, and the next round rounded up to a whole tick. With nobody
            # to ask, a round is due every second, and unrounded it woke the daemon
            # a second time each second, in a phase of its own.
            wake = trio.current_time()
            round_at = wake + max(0.0, next_round - time.monotonic())
            await timers.sleep_until(min(ticks.next_at(wake, ADDRS_POLL_S),
                                         ticks.next_at(round_at, ROUND_GRID_S)))

    def verdict(self) -> str:
        """public, private or unknown (fixed when forced)."""
        if self.forced is not None:
            return self.forced
        return self.reachability.verdict(time.monotonic())

    def view(self) -> dict[str, Any]:
        """For `status.autonat`."""
        now = time.monotonic()
        first = self.reachability.first_verdict_s
        return {
            **self.reachability.view(now),
            "first_verdict_after_s": None if first is None else round(first - self.started, 2),
            "served": dict(self.served),
            "forced": self.forced,
        }
