"""The bitswap adapter between real py-libp2p hosts on 127.0.0.1 (one process, one trio
loop): fetching, serving, hostile peers, and the wire protocol as the spec says."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from gossipchat.daemon.adapters import bitswap, negotiate
from gossipchat.daemon.adapters.bitswap import (
    PROTOCOL_ID_100,
    PROTOCOL_ID_110,
    PROTOCOL_ID_120,
    Bitswap,
    FetchTimeoutError,
    NotFoundError,
    WantEntry,
)
from gossipchat.daemon.adapters.blockstore import BlockStore
from gossipchat.daemon.adapters.p2p import new_libp2p_host
from gossipchat.daemon.core import unixfs, varint
from harness.libp2p_hosts import run_host, stock_host

MB = 1_000_000


def pattern(size: int, period: int = 251) -> bytes:
    return (bytes(range(period)) * (size // period + 1))[:size]


class Node:
    """A host with a block store and a running bitswap service."""

    def __init__(self, host: IHost, store: BlockStore, service: Bitswap) -> None:
        self.host = host
        self.store = store
        self.bitswap = service

    @property
    def id(self) -> Any:
        return self.host.get_id()

    async def connect(self, other: Node | IHost) -> None:
        host = other.host if isinstance(other, Node) else other
        await self.host.connect(PeerInfo(host.get_id(), host.get_addrs()))


async def start_node(
    nursery: trio.Nursery,
    directory: Path,
    *,
    store_class: type[BlockStore] = BlockStore,
    ours: bool = False,
    **options: Any,
) -> Node:
    """A bitswap node on a stock py-libp2p host, or with `ours` on a host as
    gossipchatd builds it (our yamux: inbound messages go through its sink)."""
    host = new_libp2p_host(create_new_key_pair()) if ours else stock_host()
    await nursery.start(run_host, host)
    store = store_class(directory)
    service = Bitswap(host, store, **options)
    await nursery.start(service.run)
    return Node(host, store, service)


async def start_bare_host(nursery: trio.Nursery) -> IHost:
    host = stock_host()
    await nursery.start(run_host, host)
    return host


async def wait_for(predicate: Callable[[], bool], *, within: float = 10.0) -> None:
    """Poll a condition until it holds; fail after `within` seconds."""
    with trio.fail_after(within):
        # Polling, not an Event: the state belongs to other tasks (and other libraries).
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


class TamperingStore(BlockStore):
    """A block store that serves every block with one bit flipped: a lying peer."""

    @staticmethod
    def _tamper(data: bytes) -> bytes:
        return bytes((data[0] ^ 1,)) + data[1:] if data else b"x"

    def get(self, cid: bytes) -> bytes:
        return self._tamper(super().get(cid))

    async def get_many_async(self, cids: Sequence[bytes]) -> list[bytes | None]:
        found = await super().get_many_async(cids)
        return [None if data is None else self._tamper(data) for data in found]


class DiskOnlyStore(BlockStore):
    """A block store that keeps no blocks in memory: every read goes to disk, as it
    does for a block that left memory long ago."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, hot_bytes=0)


# --------------------------------------------------------------------------------------
# Fetching


async def test_fetch_5mb_from_one_peer(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_node(nursery, tmp_path / "server")
    client = await start_node(nursery, tmp_path / "client")
    data = pattern(5 * MB)
    root = server.store.import_file(data)
    await client.connect(server)
    seen: list[tuple[int, int]] = []
    with trio.fail_after(30):
        got = await client.bitswap.fetch(
            root,
            [server.id],
            max_size=len(data),
            timeout=20,
            on_progress=lambda *p: seen.append(p),
        )
    assert got == data
    # Verified blocks are stored, so this node serves the file from now on.
    assert client.store.read_file(root, max_size=len(data)) == data
    assert seen[-1] == (len(data), len(data))
    assert [have for have, _ in seen] == sorted(have for have, _ in seen)
    stats = client.bitswap.stats
    assert stats.blocks_received == server.bitswap.stats.blocks_sent == client.store.count
    assert stats.bad_blocks == 0
    assert stats.peers[server.id.to_base58()].bytes_received == stats.bytes_received


async def two_sources_and_a_client(nursery: trio.Nursery, tmp_path: Path,
                                   data: bytes) -> tuple[Node, Node, Node, bytes]:
    """Two nodes holding `data` and a client connected to both; and the file's root."""
    first = await start_node(nursery, tmp_path / "first")
    second = await start_node(nursery, tmp_path / "second")
    client = await start_node(nursery, tmp_path / "client")
    root = first.store.import_file(data)
    assert second.store.import_file(data) == root
    await client.connect(first)
    await client.connect(second)
    return first, second, client, root


async def test_first_messages_go_with_the_negotiation_both_ways(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each side announced bitswap 1.2 in identify, so the client's first wants and the
    # server's first answer each go out in the write that opens their stream.
    opened: list[tuple[str, bool]] = []
    sending = negotiate.open_stream_sending

    async def noted(host: IHost, peer: ID, protocol: str, first: bytes,
                    **kw: Any) -> INetStream | None:
        stream = await sending(host, peer, protocol, first, **kw)
        opened.append((host.get_id().to_base58(), stream is not None))
        return stream

    monkeypatch.setattr(negotiate, "open_stream_sending", noted)
    server = await start_node(nursery, tmp_path / "server")
    client = await start_node(nursery, tmp_path / "client")
    data = pattern(MB)
    root = server.store.import_file(data)
    await client.connect(server)
    with trio.fail_after(30):
        got = await client.bitswap.fetch(root, [server.id], max_size=len(data), timeout=20)
    assert got == data
    assert sorted(opened) == sorted([(client.id.to_base58(), True),
                                     (server.id.to_base58(), True)])


async def test_fetch_spreads_wants_over_two_peers(nursery: trio.Nursery, tmp_path: Path) -> None:
    data = pattern(5 * MB)
    first, second, client, root = await two_sources_and_a_client(nursery, tmp_path, data)
    with trio.fail_after(30):
        got = await client.bitswap.fetch(
            root, [first.id, second.id], max_size=len(data), timeout=20
        )
    assert got == data
    per_peer = client.bitswap.stats.peers
    from_first = per_peer[first.id.to_base58()].blocks_received
    from_second = per_peer[second.id.to_base58()].blocks_received
    assert from_first > 0
    assert from_second > 0
    assert from_first + from_second == client.store.count  # no block came twice


async def test_peers_that_said_dont_have_get_the_cancel_too(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A peer that answered DontHave keeps our want (so it can send the block later);
    once the fetch has the block from elsewhere, that peer is told to cancel, so it
    does not push a copy nobody wants when the block reaches it."""
    empty = await start_node(nursery, tmp_path / "empty")
    source = await start_node(nursery, tmp_path / "source")
    client = await start_node(nursery, tmp_path / "client")
    data = pattern(5 * MB)
    root = source.store.import_file(data)
    await client.connect(empty)
    await client.connect(source)
    with trio.fail_after(30):
        got = await client.bitswap.fetch(
            root, [empty.id, source.id], max_size=len(data), timeout=20
        )
    assert got == data
    assert client.bitswap.stats.peers[empty.id.to_base58()].dont_have_received > 0
    # The cancels go out as the fetch returns: let them reach the empty peer (on a
    # loaded machine that can take a while) before it gets the file.
    link = empty.bitswap._links.get(client.id)
    with trio.fail_after(10):
        while link is not None and link._ledger:  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.01)
    # The empty peer gets the file now and tells its peers' links about it.
    assert empty.store.import_file(data) == root
    await empty.bitswap.announce([block.cid for block in unixfs.import_file(data).blocks])
    # A probe fetched from it afterwards comes down the same link, after any block
    # the announcement would have pushed.
    probe = empty.store.import_file(b"probe")
    with trio.fail_after(10):
        assert await client.bitswap.fetch(probe, [empty.id], max_size=5, timeout=5) == b"probe"
    assert empty.bitswap.stats.blocks_sent == 1
    assert client.bitswap.stats.duplicate_blocks == 0


async def test_cancels_to_peers_asked_only_want_have_go_out_gathered(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block's arrival cancels our want at every other peer; a peer that was asked
    only want-have gets those cancels together (lazy), not one message per block, and
    it gets every one of them."""
    # Longer than the fetch takes on a loaded machine, so the count below is bounded by
    # the mechanism, not by how many 0.1 s windows the fetch happened to span.
    monkeypatch.setattr(bitswap, "_LAZY_CANCEL_S", 2.0)
    # The source sends one block per message, so blocks arrive one by one.
    source = await start_node(nursery, tmp_path / "source", target_message_size=0)
    client = await start_node(nursery, tmp_path / "client")
    silent = await start_raw_peer(nursery, PROTOCOL_ID_120)  # never answers
    data = pattern(5 * MB)
    root = source.store.import_file(data)
    await client.connect(source)
    await client.connect(silent.host)
    with trio.fail_after(30):
        got = await client.bitswap.fetch(
            root, [source.id, silent.host.get_id()], max_size=len(data), timeout=20)
    assert got == data
    asked = {entry.cid for msg in silent.received for entry in msg.wants
             if entry.want_have and not entry.cancel}
    assert len(asked) == client.store.count  # the root and every leaf

    def cancelled() -> set[bytes]:
        return {entry.cid for msg in silent.received for entry in msg.wants
                if entry.cancel}

    await wait_for(lambda: cancelled() == asked)
    carrying = [msg for msg in silent.received if any(entry.cancel for entry in msg.wants)]
    # One message per block would be 21; a lazy cancel waits for company.
    assert len(carrying) <= len(asked) // 2, [len(msg.wants) for msg in carrying]


async def test_a_bug_in_one_link_ends_that_link_only(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping a peer link's task is logged and counted; the host, the
    engine and the fetch carry on (the fetch with the other peer)."""
    data = pattern(2 * MB)
    first, second, client, root = await two_sources_and_a_client(nursery, tmp_path, data)
    compose = bitswap._PeerLink._compose

    async def broken_for_first(link: Any) -> Any:
        if link.peer == first.id:
            raise RuntimeError("a bug")
        return await compose(link)

    monkeypatch.setattr(bitswap._PeerLink, "_compose", broken_for_first)
    with trio.fail_after(30):
        got = await client.bitswap.fetch(
            root, [first.id, second.id], max_size=len(data), timeout=20)
    assert got == data
    assert client.bitswap.stats.stream_faults >= 1
    served = client.bitswap.stats.peers
    assert first.id.to_base58() not in served  # its link never sent a want
    assert served[second.id.to_base58()].blocks_received == client.store.count


async def test_a_lazy_cancel_never_undoes_a_later_want(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A want for a block replaces a lazy cancel of it still waiting to go out: sent
    after the want, the cancel would take it back."""
    node = await start_node(nursery, tmp_path / "node")
    link = bitswap._PeerLink(node.bitswap, ID.from_pubkey(create_new_key_pair().public_key))
    first, second = unixfs.import_file(b"one").root, unixfs.import_file(b"two").root
    link._apply(bitswap._OurWants([WantEntry(first, cancel=True),
                                   WantEntry(second, cancel=True)], lazy=True))
    assert not link._has_work()  # lazy cancels alone wait
    want = WantEntry(first, want_have=True, send_dont_have=True)
    link._apply(bitswap._OurWants([want]))
    assert link._lazy == [WantEntry(second, cancel=True)]
    assert link._our_wants == [want]
    link._apply(bitswap._OurWants([WantEntry(second, send_dont_have=True)]))
    assert link._lazy == []
    assert link._lazy_due == float("inf")  # nothing lazy left to wait for


async def test_corrupting_peer_is_dropped_and_honest_peer_completes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    liar = await start_node(nursery, tmp_path / "liar", store_class=TamperingStore)
    honest = await start_node(nursery, tmp_path / "honest")
    client = await start_node(nursery, tmp_path / "client")
    data = pattern(3 * MB)
    root = honest.store.import_file(data)
    liar.store.import_file(data)
    await client.connect(liar)
    await client.connect(honest)
    with trio.fail_after(30):
        # The liar comes first, so it gets the first wants (the root among them).
        got = await client.bitswap.fetch(
            root, [liar.id, honest.id], max_size=len(data), timeout=20
        )
    assert got == data
    stats = client.bitswap.stats
    assert stats.bad_blocks >= 1
    assert stats.peers[liar.id.to_base58()].bad_blocks >= 1
    assert stats.peers[honest.id.to_base58()].bad_blocks == 0
    assert stats.peers_dropped == 1
    # Nothing the liar sent was stored.
    assert all(unixfs.verify_block(cid, client.store.get(cid)) for cid in client.store.cids())
    # The liar stays dropped: asking it alone fails at once instead of timing out.
    other = honest.store.import_file(pattern(1000, period=7))
    with trio.fail_after(5), pytest.raises(NotFoundError, match="dropped"):
        await client.bitswap.fetch(other, [liar.id], max_size=10_000, timeout=20)


async def test_unknown_cid_fails_promptly(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_node(nursery, tmp_path / "server")
    client = await start_node(nursery, tmp_path / "client")
    await client.connect(server)
    unknown = unixfs.import_file(b"nobody has this").root
    # The peer answers DontHave, so there is no need to wait for the timeout.
    with trio.fail_after(5), pytest.raises(NotFoundError, match="does not have it"):
        await client.bitswap.fetch(unknown, [server.id], max_size=1000, timeout=60)


async def test_silent_peer_times_out(nursery: trio.Nursery, tmp_path: Path) -> None:
    client = await start_node(nursery, tmp_path / "client")
    silent = await start_bare_host(nursery)

    async def swallow(stream: INetStream) -> None:
        while await stream.read(65536):
            pass

    silent.set_stream_handler(PROTOCOL_ID_120, swallow)
    await client.connect(silent)
    unknown = unixfs.import_file(b"never answered").root
    with trio.fail_after(10), pytest.raises(FetchTimeoutError, match=r"timed out after 0\.5 s"):
        await client.bitswap.fetch(unknown, [silent.get_id()], max_size=1000, timeout=0.5)


async def test_unreachable_peer_is_not_found(nursery: trio.Nursery, tmp_path: Path) -> None:
    client = await start_node(nursery, tmp_path / "client")
    other = await start_bare_host(nursery)  # speaks no bitswap at all
    await client.connect(other)
    root = unixfs.import_file(b"somewhere").root
    with trio.fail_after(15), pytest.raises(NotFoundError, match="cannot open"):
        await client.bitswap.fetch(root, [other.get_id()], max_size=1000, timeout=30)


async def test_local_blocks_need_no_peer(nursery: trio.Nursery, tmp_path: Path) -> None:
    client = await start_node(nursery, tmp_path / "client")
    data = pattern(2 * MB)
    root = client.store.import_file(data)
    assert await client.bitswap.fetch(root, [], max_size=len(data), timeout=1) == data
    missing = unixfs.import_file(b"elsewhere").root
    with pytest.raises(NotFoundError, match="no peers"):
        await client.bitswap.fetch(missing, [], max_size=100, timeout=1)


async def test_too_large_file_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_node(nursery, tmp_path / "server")
    client = await start_node(nursery, tmp_path / "client")
    root = server.store.import_file(pattern(2 * MB))
    await client.connect(server)
    with trio.fail_after(10), pytest.raises(unixfs.FileTooLargeError):
        await client.bitswap.fetch(root, [server.id], max_size=MB, timeout=10)


async def test_stream_closed_when_idle_is_reopened(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_node(nursery, tmp_path / "server", idle_stream_timeout=0.05)
    client = await start_node(nursery, tmp_path / "client", idle_stream_timeout=0.05)
    await client.connect(server)
    for size in (300_000, 700_000):
        data = pattern(size, period=size % 97 + 3)
        root = server.store.import_file(data)
        with trio.fail_after(15):
            assert await client.bitswap.fetch(root, [server.id], max_size=size, timeout=10) == data
        link = server.bitswap._links[client.id]
        await wait_for(lambda link=link: link._stream is None)  # idle close happened


async def test_disconnect_forgets_the_peer(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_node(nursery, tmp_path / "server")
    client = await start_node(nursery, tmp_path / "client")
    root = server.store.import_file(pattern(300_000))
    await client.connect(server)
    with trio.fail_after(15):
        await client.bitswap.fetch(root, [server.id], max_size=300_000, timeout=10)
    assert client.id in server.bitswap._links
    await client.host.disconnect(server.id)
    # Both sides drop their link (and the server the client's wantlist) with it.
    await wait_for(lambda: client.id not in server.bitswap._links)
    await wait_for(lambda: server.id not in client.bitswap._links)


async def test_a_block_is_held_back_only_while_its_last_taker_is_connected(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_node(nursery, tmp_path / "server", hold_s=1.0)
    data = pattern(600_000)
    root = server.store.import_file(data)

    async def fetch_with_a_new_client(name: str) -> Node:
        client = await start_node(nursery, tmp_path / name)
        await client.connect(server)
        with trio.fail_after(20):
            assert await client.bitswap.fetch(
                root, [server.id], max_size=len(data), timeout=15) == data
        return client

    takers = [await fetch_with_a_new_client("first")]
    # `first` is connected and could pass the blocks on: the next taker waits.
    takers.append(await fetch_with_a_new_client("second"))
    assert server.bitswap.stats.blocks_held > 0
    # The takers leave: nobody can pass the blocks on, so nothing is held back.
    for taker in takers:
        await taker.host.disconnect(server.id)
    await wait_for(lambda: not any(t.id in server.bitswap._links for t in takers))
    before = server.bitswap.stats.blocks_held
    await fetch_with_a_new_client("third")
    assert server.bitswap.stats.blocks_held == before


async def test_a_fetch_takes_its_peer_back_when_it_reconnects(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # A relay cutting a circuit looks like this: the connection drops mid-fetch and a
    # new one comes up; the fetch goes on instead of failing "no peer can supply".
    server = await start_node(nursery, tmp_path / "server")
    client = await start_node(nursery, tmp_path / "client")
    data = pattern(10 * MB)
    root = server.store.import_file(data)
    await client.connect(server)
    started = trio.Event()
    cut_at: list[int] = []

    def progress(have: int, total: int) -> None:
        if have > 0:
            started.set()

    async def cut_and_redial() -> None:
        await started.wait()
        cut_at.append(client.store.count)
        await client.host.disconnect(server.id)
        await trio.sleep(0.3)
        await client.connect(server)

    nursery.start_soon(cut_and_redial)
    with trio.fail_after(30):
        got = await client.bitswap.fetch(root, [server.id], max_size=len(data), timeout=25,
                                         on_progress=progress)
    assert got == data
    assert cut_at, "the connection was never cut"
    assert client.bitswap.stats.bad_blocks == 0


async def test_stopped_service_refuses_fetches(tmp_path: Path) -> None:
    service = Bitswap(stock_host(), BlockStore(tmp_path))
    root = unixfs.import_file(b"x").root
    with pytest.raises(bitswap.BitswapStoppedError):
        await service.fetch(root, [stock_host().get_id()], max_size=10, timeout=1)


# --------------------------------------------------------------------------------------
# The wire, as a standard peer sees it


class RawPeer:
    """A bare host that speaks bitswap by hand: it opens its own stream to send, and
    collects every message the node sends on the streams the node opens."""

    def __init__(self, host: IHost) -> None:
        self.host = host
        self.received: list[bitswap.Message] = []
        self.inbound_protocols: list[str] = []
        self.replies_on_our_stream = 0

    async def handle(self, stream: INetStream) -> None:
        self.inbound_protocols.append(str(stream.get_protocol()))
        reader = bitswap._FrameReader(stream, bitswap.MAX_MESSAGE_SIZE)
        while (msg := await reader.next_message()) is not None:
            self.received.append(msg)

    async def watch_own_stream(self, stream: INetStream) -> None:
        reader = bitswap._FrameReader(stream, bitswap.MAX_MESSAGE_SIZE)
        try:
            while await reader.next_message() is not None:
                self.replies_on_our_stream += 1
        except Exception:
            return

    def blocks(self) -> list[tuple[bytes | None, bytes]]:
        return [block for msg in self.received for block in msg.blocks]

    def presences(self) -> list[bitswap.Presence]:
        return [presence for msg in self.received for presence in msg.presences]


async def start_raw_peer(nursery: trio.Nursery, protocol: Any) -> RawPeer:
    host = await start_bare_host(nursery)
    peer = RawPeer(host)
    host.set_stream_handler(protocol, peer.handle)
    return peer


async def send_wants(
    nursery: trio.Nursery, peer: RawPeer, node: Node, protocol: Any, wants: list[WantEntry]
) -> INetStream:
    stream = await peer.host.new_stream(node.id, [protocol])
    assert stream.get_protocol() == protocol
    nursery.start_soon(peer.watch_own_stream, stream)
    await stream.write(bitswap.encode_frame(protocol, wants=wants))
    return stream


async def test_replies_come_on_a_stream_the_node_opens(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_node(nursery, tmp_path / "node")
    data = pattern(unixfs.CHUNK_SIZE + 10)  # a root node and two leaves
    root = node.store.import_file(data)
    held = node.store.cids()
    leaf = next(cid for cid in held if cid != root)
    missing = unixfs.import_file(b"not here").root
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    wants = [
        WantEntry(root, send_dont_have=True),
        WantEntry(leaf, want_have=True),
        WantEntry(missing, send_dont_have=True),
    ]
    await send_wants(nursery, peer, node, PROTOCOL_ID_120, wants)
    await wait_for(lambda: len(peer.blocks()) == 1 and len(peer.presences()) == 2)
    prefix, block = peer.blocks()[0]
    assert prefix == unixfs.cid_prefix(root)
    assert unixfs.cid_from_prefix(prefix, block) == root
    assert {(p.cid, p.have) for p in peer.presences()} == {(leaf, True), (missing, False)}
    assert peer.inbound_protocols == [str(PROTOCOL_ID_120)]
    assert peer.replies_on_our_stream == 0  # never on the stream the peer opened


async def test_missing_block_is_sent_once_it_arrives(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_node(nursery, tmp_path / "node")
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    later = unixfs.import_file(b"arrives later")
    await send_wants(
        nursery, peer, node, PROTOCOL_ID_120, [WantEntry(later.root, send_dont_have=True)]
    )
    await wait_for(lambda: peer.presences() == [bitswap.Presence(later.root, have=False)])
    node.store.import_file(b"arrives later")
    await node.bitswap.announce([later.root])
    await wait_for(lambda: len(peer.blocks()) == 1)
    assert peer.blocks()[0][1] == b"arrives later"


async def test_block_found_corrupt_on_disk_is_answered_dont_have(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_node(nursery, tmp_path / "node", store_class=DiskOnlyStore)
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    rotten = unixfs.import_file(b"rots on disk")
    node.store.import_file(b"rots on disk")
    (path,) = node.store.directory.rglob(unixfs.cid_to_str(rotten.root))
    path.write_bytes(b"bit rot")  # the index still lists it; reading it finds the rot
    await send_wants(
        nursery, peer, node, PROTOCOL_ID_120, [WantEntry(rotten.root, send_dont_have=True)]
    )
    # The peer hears DontHave at once rather than waiting out its own timeout...
    await wait_for(lambda: peer.presences() == [bitswap.Presence(rotten.root, have=False)])
    assert peer.blocks() == []
    assert not node.store.has(rotten.root)
    # ...and keeps its want: once the block is back, it is sent.
    node.store.import_file(b"rots on disk")
    await node.bitswap.announce([rotten.root])
    await wait_for(lambda: len(peer.blocks()) == 1)
    assert peer.blocks()[0][1] == b"rots on disk"


async def test_cancelled_want_is_not_served(nursery: trio.Nursery, tmp_path: Path) -> None:
    node = await start_node(nursery, tmp_path / "node")
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    later = unixfs.import_file(b"cancelled before it arrived")
    want = WantEntry(later.root, send_dont_have=True)
    stream = await send_wants(nursery, peer, node, PROTOCOL_ID_120, [want])
    await wait_for(lambda: len(peer.presences()) == 1)  # the want is on the node's books
    probe = node.store.import_file(b"probe")
    cancel = WantEntry(later.root, cancel=True)
    # The probe goes after the cancel on the same stream: once it is answered, the
    # cancel has been applied.
    await stream.write(bitswap.encode_frame(PROTOCOL_ID_120, wants=[cancel, WantEntry(probe)]))
    await wait_for(lambda: len(peer.blocks()) == 1)
    node.store.import_file(b"cancelled before it arrived")
    await node.bitswap.announce([later.root])
    # Announcements and wants reach the peer's link in order, so this second probe is
    # answered after the announcement would have sent the cancelled block.
    await stream.write(bitswap.encode_frame(PROTOCOL_ID_120, wants=[WantEntry(probe)]))
    await wait_for(lambda: len(peer.blocks()) == 2)
    assert [data for _, data in peer.blocks()] == [b"probe", b"probe"]


@pytest.mark.parametrize("protocol", [PROTOCOL_ID_110, PROTOCOL_ID_100])
async def test_older_protocol_versions_are_served(
    nursery: trio.Nursery, tmp_path: Path, protocol: Any
) -> None:
    node = await start_node(nursery, tmp_path / "node")
    root = node.store.import_file(b"for an older peer")
    peer = await start_raw_peer(nursery, protocol)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    await send_wants(nursery, peer, node, protocol, [WantEntry(root)])
    await wait_for(lambda: len(peer.blocks()) == 1)
    prefix, data = peer.blocks()[0]
    assert data == b"for an older peer"
    if protocol == PROTOCOL_ID_100:
        assert prefix is None  # 1.0.0 carries raw blocks, no CID prefix
    else:
        assert prefix == unixfs.cid_prefix(root)
    assert peer.inbound_protocols == [str(protocol)]


async def test_oversized_frame_resets_the_stream(nursery: trio.Nursery, tmp_path: Path) -> None:
    node = await start_node(nursery, tmp_path / "node")
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    stream = await peer.host.new_stream(node.id, [PROTOCOL_ID_120])
    await stream.write(varint.encode(bitswap.MAX_MESSAGE_SIZE + 1) + b"\0" * 100)
    await wait_for(lambda: node.bitswap.stats.protocol_errors == 1)
    assert node.bitswap.stats.peers[peer.host.get_id().to_base58()].protocol_errors == 1
    # The node still serves the peer on a new stream.
    root = node.store.import_file(b"still friends")
    await send_wants(nursery, peer, node, PROTOCOL_ID_120, [WantEntry(root)])
    await wait_for(lambda: len(peer.blocks()) == 1)


def test_message_codec_round_trip() -> None:
    cid = unixfs.import_file(b"abc").root
    frame = bitswap.encode_frame(
        PROTOCOL_ID_120,
        wants=[WantEntry(cid, priority=7, want_have=True, send_dont_have=True)],
        full=True,
        blocks=[(cid, b"abc")],
        presences=[bitswap.Presence(cid, have=False)],
    )
    length, start = varint.decode(frame, 0)
    assert length == len(frame) - start
    msg = bitswap.decode_message(frame[start:])
    assert msg.wants == [WantEntry(cid, priority=7, want_have=True, send_dont_have=True)]
    assert msg.full
    assert msg.blocks == [(unixfs.cid_prefix(cid), b"abc")]
    assert msg.presences == [bitswap.Presence(cid, have=False)]
    with pytest.raises(bitswap.ProtocolError):
        bitswap.decode_message(b"\x0a\x05ab")  # truncated wantlist


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_message_decoder_fuzz(data: bytes) -> None:
    try:
        msg = bitswap.decode_message(data)
    except bitswap.ProtocolError:
        return
    assert isinstance(msg, bitswap.Message)


# Inbound messages through the yamux sink (Bitswap._sink_messages)


async def test_a_flood_of_messages_in_one_write_is_answered_whole(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """600 messages in one write, far past the engine's queue of 64: the sink queues
    what fits, the rest waits in its backlog (the stream falls back to reads, its
    window uncredited), and every message is handled, in order."""
    node = await start_node(nursery, tmp_path / "node", ours=True)
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    missing = [unixfs.import_file(f"missing {i}".encode()).root for i in range(600)]
    stream = await peer.host.new_stream(node.id, [PROTOCOL_ID_120])
    nursery.start_soon(peer.watch_own_stream, stream)
    await stream.write(b"".join(
        bitswap.encode_frame(PROTOCOL_ID_120, wants=[WantEntry(cid, send_dont_have=True)])
        for cid in missing))
    await wait_for(lambda: len(peer.presences()) == len(missing), within=30)
    assert [p.cid for p in peer.presences()] == missing
    assert not any(p.have for p in peer.presences())
    assert node.bitswap.stats.messages_received == len(missing)
    assert node.bitswap.stats.protocol_errors == 0


async def one_and_a_half_messages(
    nursery: trio.Nursery, tmp_path: Path
) -> tuple[Node, RawPeer, INetStream]:
    """A node on our host, and a raw peer's stream that sent it a whole message (a
    want, answered) and the first bytes of another."""
    node = await start_node(nursery, tmp_path / "node", ours=True)
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    root = node.store.import_file(b"asked for first")
    stream = await peer.host.new_stream(node.id, [PROTOCOL_ID_120])
    whole = bitswap.encode_frame(PROTOCOL_ID_120, wants=[WantEntry(root)])
    await stream.write(whole + whole[:5])
    await wait_for(lambda: len(peer.blocks()) == 1)  # the whole message was handled
    return node, peer, stream


async def test_a_stream_that_ends_inside_a_message_is_a_protocol_error(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node, _, stream = await one_and_a_half_messages(nursery, tmp_path)
    await stream.close()
    await wait_for(lambda: node.bitswap.stats.protocol_errors == 1)
    assert node.bitswap.stats.messages_received == 1


async def test_a_stream_reset_inside_a_message_is_no_protocol_error(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node, peer, stream = await one_and_a_half_messages(nursery, tmp_path)
    await stream.reset()
    await wait_for(lambda: not node.bitswap._inbound_streams)
    assert node.bitswap.stats.protocol_errors == 0
    # The peer is still served, on a new stream.
    again = node.store.import_file(b"asked for again")
    await send_wants(nursery, peer, node, PROTOCOL_ID_120, [WantEntry(again)])
    await wait_for(lambda: len(peer.blocks()) == 2)


async def test_a_bug_met_in_the_sink_ends_that_stream_not_the_connection(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink runs in the connection's reading task: an exception there is handed to
    the stream's own task, logged and counted, and the stream is reset; the
    connection and the node carry on."""
    node = await start_node(nursery, tmp_path / "node", ours=True)
    peer = await start_raw_peer(nursery, PROTOCOL_ID_120)
    await peer.host.connect(PeerInfo(node.id, node.host.get_addrs()))
    poison = unixfs.import_file(b"meets a bug").root
    inbound = bitswap.Bitswap._inbound

    def broken_for_poison(engine: Any, sender: ID, msg: bitswap.Message) -> Any:
        if any(entry.cid == poison for entry in msg.wants):
            raise RuntimeError("a bug")
        return inbound(engine, sender, msg)

    monkeypatch.setattr(bitswap.Bitswap, "_inbound", broken_for_poison)
    await send_wants(nursery, peer, node, PROTOCOL_ID_120, [WantEntry(poison)])
    await wait_for(lambda: node.bitswap.stats.stream_faults == 1)
    assert not node.bitswap._inbound_streams
    root = node.store.import_file(b"served all the same")
    await send_wants(nursery, peer, node, PROTOCOL_ID_120, [WantEntry(root)])
    await wait_for(lambda: len(peer.blocks()) == 1)
    assert len(node.host.get_network().get_connections(peer.host.get_id())) == 1
