"""py-libp2p 0.8.1's bitswap server answers on the stream the client opened.

The bitswap spec (https://specs.ipfs.tech/bitswap-protocol/) has each side send on a
stream it opens itself: a client opens `/ipfs/bitswap/1.2.0`, writes its wantlist,
and the server opens its own stream back to deliver blocks and presences. Helia's
@helia/bitswap and Kubo read only those server-opened streams, so a py-libp2p
`BitswapClient` serving a block is never heard and their want times out.

This test asserts the defect: the reply arrives on the client's own stream and the
server never opens one. When upstream fixes it, the test fails and says so; then
gossipchat's adapter can stop also reading its outbound streams (see the rules at the
top of daemon/adapters/bitswap.py).
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.bitswap import BitswapClient, MemoryBlockStore
from libp2p.bitswap.cid import CODEC_RAW, compute_cid_v1
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from harness.libp2p_hosts import LOOPBACK, stock_host

BITSWAP_120 = TProtocol("/ipfs/bitswap/1.2.0")


async def read_frame(stream: INetStream) -> bytes:
    """One varint-length-prefixed frame."""
    length = shift = 0
    while True:
        byte = (await stream.read(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = await stream.read(length - len(body))
        assert chunk, "stream ended inside a frame"
        body += chunk
    return body


async def test_server_replies_on_the_inbound_stream() -> None:
    server, client = stock_host(), stock_host()
    block = b"a block the client wants"
    cid = compute_cid_v1(block, codec=CODEC_RAW)
    opened_by_server: list[Any] = []

    async def count_server_streams(stream: INetStream) -> None:
        opened_by_server.append(stream)  # a spec-conformant server would reply here

    async with (
        server.run(listen_addrs=LOOPBACK),
        client.run(listen_addrs=LOOPBACK),
        trio.open_nursery() as nursery,
    ):
        service = BitswapClient(server, MemoryBlockStore())
        service.set_nursery(nursery)
        await service.start()
        await service.add_block(cid, block)
        client.set_stream_handler(BITSWAP_120, count_server_streams)
        await client.connect(PeerInfo(server.get_id(), server.get_addrs()))

        want = Message()
        entry = want.wantlist.entries.add()
        entry.block = cid
        entry.sendDontHave = True
        body = want.SerializeToString()
        stream = await client.new_stream(server.get_id(), [BITSWAP_120])
        await stream.write(bytes([len(body)]) + body)

        with trio.move_on_after(10) as waited:
            reply = Message()
            reply.ParseFromString(await read_frame(stream))
        assert not waited.cancelled_caught, (
            "py-libp2p no longer answers bitswap on the inbound stream: the upstream "
            "defect looks fixed (check opened_by_server and update the adapter's notes)"
        )
        assert [payload.data for payload in reply.payload] == [block]
        assert opened_by_server == []  # and it opened no stream of its own
        await service.stop()
        nursery.cancel_scope.cancel()
