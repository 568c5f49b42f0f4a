"""The relay's hop side under abuse (daemon/adapters/relay.py), real py-libp2p hosts on
loopback in one process: junk, a RESERVE naming another peer, more reservations than
the limit, a CONNECT to a peer without a reservation, and a circuit past its byte
limit. Each is refused or cut with the right status, and the relay keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
import trio.lowlevel
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage

from gossipchat.daemon.adapters.autonat import AutoNAT, read_message, write_message
from gossipchat.daemon.adapters.p2p import P2PNetwork, Stream, StreamClosedError
from gossipchat.daemon.adapters.relay import HOP, Relay
from gossipchat.daemon.core import autonat as autonat_policy
from gossipchat.daemon.core import relay as book
from gossipchat.daemon.core.relay import RelayLimits

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


@asynccontextmanager
async def nodes(count: int, limits: RelayLimits, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[list[tuple[P2PNetwork, Relay]]]:
    """A relay (node 0, told it is public) and count-1 clients connected to it."""
    out = []
    async with trio.open_nursery() as nursery:
        for i in range(count):
            network = P2PNetwork(bytes([i + 1]) * 32, LOOPBACK)
            autonat = AutoNAT(network, serve=False)
            relay = Relay(network, autonat, limits=limits, serve=i == 0, want=0)
            await nursery.start(network.run)
            await nursery.start(relay.run)
            out.append((network, relay))
        monkeypatch.setattr(out[0][1].autonat, "verdict", lambda: autonat_policy.PUBLIC)
        for network, _ in out[1:]:
            await network.connect(out[0][0].listen_addrs()[0])
        yield out
        nursery.cancel_scope.cancel()


async def hop(client: P2PNetwork, relay: P2PNetwork, payload: bytes) -> Any:
    with trio.fail_after(10):
        stream = await client.open_stream(relay.peer_id, HOP)
        await write_message(stream, payload)
        reply = HopMessage()
        reply.ParseFromString(await read_message(stream))
        await stream.close()
    return reply


def reserve(naming: str | None = None) -> bytes:
    msg = HopMessage(type=HopMessage.RESERVE)
    if naming:
        msg.peer.id = ID.from_base58(naming).to_bytes()
    return bytes(msg.SerializeToString())


def connect_to(peer: str) -> bytes:
    msg = HopMessage(type=HopMessage.CONNECT)
    msg.peer.id = ID.from_base58(peer).to_bytes()
    return bytes(msg.SerializeToString())


async def test_junk_foreign_reservations_and_limits_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with nodes(4, RelayLimits(max_reservations=2), monkeypatch) as peers:
        (r, relay), (a, relay_a), (b, _), (c, _) = peers
        # Junk: not a protobuf, then a message type a client never sends.
        assert (await hop(a, r, b"\xff\xff\xff")).status == book.MALFORMED_MESSAGE
        assert (await hop(a, r, bytes(HopMessage(type=HopMessage.STATUS)
                                      .SerializeToString()))).status \
            == book.UNEXPECTED_MESSAGE
        # a names b in its RESERVE: the reservation is a's, the authenticated peer's.
        reply = await hop(a, r, reserve(naming=b.peer_id))
        assert reply.status == book.OK
        assert reply.limit.data == RelayLimits().circuit_bytes
        assert relay.book.has_reservation(a.peer_id, time.monotonic())
        assert not relay.book.has_reservation(b.peer_id, time.monotonic())
        # So a circuit to b finds no reservation.
        assert (await hop(c, r, connect_to(b.peer_id))).status == book.NO_RESERVATION
        # Two reservations at most: b fits, c does not, a renews.
        assert (await hop(b, r, reserve())).status == book.OK
        assert (await hop(c, r, reserve())).status == book.RESOURCE_LIMIT_EXCEEDED
        assert (await hop(a, r, reserve())).status == book.OK
        assert relay.view()["refused"] == {"malformed": 1, "unexpected": 1,
                                           "no_reservation": 1, "reservations": 1}
        # The relay still relays: c reaches a through it.
        relay_a.reserved[r.peer_id] = (1e18, [])  # a accepts STOP from r
        relayed = f"{r.listen_addrs()[0]}/p2p-circuit/p2p/{a.peer_id}"
        with trio.fail_after(20):
            assert await c.connect(relayed) == a.peer_id
        assert relay.view()["circuits"] == 1


async def test_a_circuit_past_its_byte_limit_is_reset_not_written_into(
        monkeypatch: pytest.MonkeyPatch) -> None:
    limits = RelayLimits(circuit_bytes=256 * 1024)
    async with nodes(3, limits, monkeypatch) as peers:
        (r, relay), (a, relay_a), (b, _) = peers
        assert (await hop(a, r, reserve())).status == book.OK
        relay_a.reserved[r.peer_id] = (1e18, [])  # a accepts STOP from r
        received = bytearray()
        done = trio.Event()

        async def sink(stream: Stream) -> None:
            while chunk := await stream.read(65536):
                received.extend(chunk)
            done.set()

        a.set_stream_handler("/test/sink", sink)
        relayed = f"{r.listen_addrs()[0]}/p2p-circuit/p2p/{a.peer_id}"
        with trio.fail_after(20):
            await b.connect(relayed)
            stream = await b.open_stream(a.peer_id, "/test/sink")

            async def flood() -> None:
                for _ in range(64):
                    await stream.write(bytes(16 * 1024))
                    await trio.lowlevel.checkpoint()
                await stream.close()
                await done.wait()

            with pytest.raises(StreamClosedError):
                await flood()
        with trio.fail_after(10):
            while relay.view()["circuits_cut"] < 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert len(received) < limits.circuit_bytes
        assert set(received) <= {0}, "the relay wrote something into the data"
        assert relay.view()["circuits"] == 0
