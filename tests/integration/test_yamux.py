"""Our yamux (daemon/adapters/yamux.py) between real py-libp2p hosts on 127.0.0.1.

Both ends ours, and ours against py-libp2p's own yamux in both directions (the
bench baselines and any stock py-libp2p peer run that one; Helia's is covered by
test_bitswap_interop.py). Hostile peers are played by writing raw frames through a
connection's own sender.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.stream_muxer.exceptions import MuxedStreamReset
from libp2p.stream_muxer.yamux.yamux import Yamux as StockYamux

from gossipchat.daemon.adapters import negotiate, yamux
from gossipchat.daemon.adapters.p2p import new_libp2p_host
from harness.libp2p_hosts import SmallReadSink, muxed, running_pair, stock_host

ECHO = TProtocol("/gossipchat-test/echo/1.0.0")
SINK = TProtocol("/gossipchat-test/sink/1.0.0")
MB = 1_000_000


def our_host() -> IHost:
    return new_libp2p_host(create_new_key_pair())


def pattern(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def read_all(stream: INetStream) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = await stream.read(1 << 20)
        except StreamEOF:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


async def echoed(stream: INetStream, data: bytes, chunk: int) -> bytes:
    """Write `data` in `chunk`-byte writes and half-close, while reading everything
    the ECHO handler sends back; what came back (within 60 s)."""
    got = b""

    async def reader() -> None:
        nonlocal got
        got = await read_all(stream)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for start in range(0, len(data), chunk):
                await stream.write(data[start : start + chunk])
            await stream.close()
    return got


async def echo(stream: INetStream) -> None:
    """Echo everything back as it arrives, then half-close."""
    while True:
        try:
            chunk = await stream.read(1 << 16)
        except StreamEOF:
            break
        if not chunk:
            break
        await stream.write(chunk)
    await stream.close()


@asynccontextmanager
async def pair(
    make_a: Callable[[], IHost], make_b: Callable[[], IHost]
) -> AsyncIterator[tuple[IHost, IHost]]:
    """Two running hosts, b dialled to a, both serving ECHO."""
    async with running_pair(make_a(), make_b()) as (a, b):
        for host in (a, b):
            host.set_stream_handler(ECHO, echo)
        yield a, b


KINDS = {
    "ours-ours": (our_host, our_host),
    "ours-stock": (our_host, stock_host),
    "stock-ours": (stock_host, our_host),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_both_directions_at_once_carry_every_byte(kind: str) -> None:
    """8 MB each way on one stream, written while the echo writes back: no deadlock,
    nothing lost or reordered, whichever yamux is at either end."""
    make_a, make_b = KINDS[kind]
    data = pattern(8 * MB, seed=1)
    async with pair(make_a, make_b) as (a, b):
        stream = await b.new_stream(a.get_id(), [ECHO])
        got = await echoed(stream, data, 300_000)  # not a multiple of any frame
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


async def test_sends_go_straight_to_the_kernel_and_wait_only_when_it_is_full() -> None:
    """Over TCP a write with nothing queued before it is sealed and handed to the
    socket by the writing task itself, without an await; when the kernel takes only
    part of it (here: small socket buffers), the rest waits for the socket in the
    connection's writing task, and everything arrives whole and in order."""
    async with pair(our_host, our_host) as (a, b):
        writer = muxed(b, a)._writer
        assert isinstance(writer, yamux._NoiseWriter)
        sock = writer._socket
        assert sock is not None
        stream = await b.new_stream(a.get_id(), [ECHO])
        with trio.fail_after(10):
            await stream.write(b"warm")  # the stream's SYN has gone out, and its ACK
            assert await stream.read(4) == b"warm"
        sends = writer.direct_sends
        await stream.write(b"ping")
        # Sent by the writer's own task, within the write: not queued for the
        # connection's writing task, which would send it only after a scheduling round.
        assert writer.direct_sends == sends + 1
        with trio.fail_after(10):
            assert await stream.read(4) == b"ping"
        assert writer.partial_sends == 0

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        data = pattern(6 * MB, seed=7)
        got = await echoed(stream, data, 250_000)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert writer.partial_sends > 0, "the kernel always took a whole batch"


class CountingSocket:
    """A kernel socket that counts its reads, and the reads that found nothing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0
        self.empty_reads = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int) -> bytes:
        self.reads += 1
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            self.empty_reads += 1
            raise


async def test_a_quiet_connection_is_read_once_per_arrival_without_empty_reads() -> None:
    """Over TCP the reading task reads the kernel socket itself, and waits for it
    before reading when the last read was small: a frame that arrives on a quiet
    connection costs one recv, not a recv that fails with EAGAIN, the wait and a
    second recv as a read through py-libp2p's RawConnection does (measured: a
    100-byte round trip between two hosts in one loop, 250-270 us of CPU before,
    175-205 after)."""
    async with pair(our_host, our_host) as (a, b):
        reader = muxed(a, b)._reader
        assert isinstance(reader, yamux._NoiseReader)
        assert reader._socket is not None
        counting = CountingSocket(reader._socket)
        reader._socket = counting
        stream = await b.new_stream(a.get_id(), [ECHO])
        with trio.fail_after(10):
            for n in range(20):
                await stream.write(b"%02d" % n)
                assert await stream.read(2) == b"%02d" % n
                # Every task blocked: a's reader waits on a quiet socket again.
                await trio.testing.wait_all_tasks_blocked()
        assert counting.empty_reads == 0
        # About one read per frame a received (a stray identify frame may add one).
        assert 20 <= counting.reads <= 26, counting.reads


async def test_write_nowait_sends_only_what_needs_no_wait() -> None:
    """write_nowait sends at once or not at all: over a write batch, past the send
    window or after close it sends nothing and says so; mixed with write, the bytes
    arrive in order."""
    async with pair(our_host, our_host) as (a, b):
        stream = await b.new_stream(a.get_id(), [ECHO])
        muxed_stream = stream.muxed_stream
        assert isinstance(muxed_stream, yamux.YamuxStream)
        got = bytearray()

        async def collect(size: int) -> None:
            while len(got) < size:
                got.extend(await stream.read(1 << 20))

        assert muxed_stream.write_nowait(b"a" * 1000)
        assert not muxed_stream.write_nowait(b"b" * (yamux.WRITE_BATCH + 1))
        await stream.write(b"b" * (yamux.WRITE_BATCH + 1))
        assert muxed_stream.write_nowait(b"c" * 1000)
        with trio.fail_after(10):
            await collect(2000 + yamux.WRITE_BATCH + 1)
        assert bytes(got) == b"a" * 1000 + b"b" * (yamux.WRITE_BATCH + 1) + b"c" * 1000
        muxed_stream._send_window = 10  # as if the peer had not read for a while
        assert not muxed_stream.write_nowait(b"d" * 11)
        assert muxed_stream.write_nowait(b"d" * 10)
        with trio.fail_after(10):
            await collect(2010 + yamux.WRITE_BATCH + 1)
        assert bytes(got).endswith(b"c" * 1000 + b"d" * 10)
        await stream.close()
        assert not muxed_stream.write_nowait(b"e")


async def test_the_daemon_host_runs_our_yamux_and_the_stock_one_stays_stock() -> None:
    async with pair(our_host, stock_host) as (a, b):
        assert type(muxed(a, b)) is yamux.Yamux
        assert type(muxed(b, a)) is StockYamux
        assert muxed(a, b).negotiated_muxer_protocol == "/yamux/1.0.0"


async def test_many_streams_at_once_each_get_their_own_bytes() -> None:
    async with pair(our_host, our_host) as (a, b):
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            stream = await b.new_stream(a.get_id(), [ECHO])
            payload = pattern(200_000 + i * 997, seed=i)
            async with trio.open_nursery() as nursery:

                async def collect() -> None:
                    results[i] = await read_all(stream)

                nursery.start_soon(collect)
                await stream.write(payload)
                await stream.close()
            assert results[i] == payload

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(one, i)
        assert len(results) == 40
        # Every stream is forgotten once both sides closed it.
        await trio.sleep(0.2)
        assert muxed(b, a).streams == {}
        assert muxed(a, b).streams == {}


async def test_a_half_closed_stream_still_carries_the_answer() -> None:
    """The request side closes its writing half first; the answer still arrives,
    and writing after close is refused."""
    async with pair(our_host, our_host) as (a, b):
        stream = await b.new_stream(a.get_id(), [ECHO])
        await stream.write(b"ping")
        await stream.close()
        with trio.fail_after(10):
            assert await read_all(stream) == b"ping"
        with pytest.raises(StreamError):  # StreamClosed: closed for writing
            await stream.write(b"more")


async def test_a_reset_reaches_the_other_side_as_a_reset() -> None:
    async with pair(our_host, our_host) as (a, b):
        arrived, finished = trio.Event(), trio.Event()
        outcome: list[str] = []

        async def sink(stream: INetStream) -> None:
            arrived.set()
            try:
                while await stream.read(1 << 16):
                    pass
                outcome.append("eof")
            except StreamReset:
                outcome.append("reset")
            except StreamEOF:
                outcome.append("eof")
            finished.set()

        a.set_stream_handler(SINK, sink)
        stream = await b.new_stream(a.get_id(), [SINK])
        await stream.write(b"x" * 1000)
        with trio.fail_after(10):
            await arrived.wait()
            await stream.reset()
            await finished.wait()
        assert outcome == ["reset"]
        with pytest.raises(StreamError):
            await stream.write(b"after reset")


class SealedLog:
    """The yamux frames a connection seals, message by message: (type, flags, stream
    id) of each frame, one list per Noise message."""

    def __init__(self, conn: yamux.Yamux) -> None:
        writer = conn._writer
        assert isinstance(writer, yamux._NoiseWriter)
        self.messages: list[list[tuple[int, int, int]]] = []
        real = writer.seal

        def seal(data: bytes) -> bytes:
            self.messages.append(frames_of(bytes(data)))
            return real(data)

        writer.seal = seal  # type: ignore[method-assign]

    def of(self, stream_id: int) -> list[list[tuple[int, int, int]]]:
        """The messages that carried a frame of `stream_id`, only its frames."""
        return [frames for message in self.messages
                if (frames := [f for f in message if f[2] == stream_id])]


def frames_of(data: bytes) -> list[tuple[int, int, int]]:
    out, pos = [], 0
    while pos < len(data):
        _version, kind, flags, stream_id, length = yamux.HEADER.unpack_from(data, pos)
        out.append((kind, flags, stream_id))
        pos += yamux.HEADER_SIZE + (length if kind == yamux.TYPE_DATA else 0)
    return out


WU, DATA = yamux.TYPE_WINDOW_UPDATE, yamux.TYPE_DATA


async def test_a_streams_syn_and_ack_go_with_its_first_frames() -> None:
    """A short exchange (propose a protocol, get the answer and 4 bytes echoed, close)
    takes one Noise message per turn: the opener's SYN goes with its proposal, the
    answerer's ACK with its answer, not each alone before them."""
    async with pair(our_host, our_host) as (a, b):
        log_a, log_b = SealedLog(muxed(a, b)), SealedLog(muxed(b, a))
        stream = await negotiate.open_stream(b, a.get_id(), [ECHO])
        with trio.fail_after(10):
            await stream.write(b"ping")
            assert await stream.read(4) == b"ping"
            await stream.close()
            with pytest.raises(StreamEOF):
                await stream.read(1)
        sid = stream.muxed_stream.stream_id  # type: ignore[attr-defined]
        assert log_b.of(sid)[0] == [(WU, yamux.FLAG_SYN, sid), (DATA, 0, sid)]
        assert log_a.of(sid)[0] == [(WU, yamux.FLAG_ACK, sid), (DATA, 0, sid)]
        assert sum(1 for m in log_a.of(sid) + log_b.of(sid)
                   for f in m if f[0] == WU and f[1] & (yamux.FLAG_SYN | yamux.FLAG_ACK)) == 2


async def test_a_stream_that_reads_before_it_writes_announces_itself_alone() -> None:
    """A stream opened to wait for the peer's first bytes sends its SYN alone when
    its read waits; the peer's answerer, waiting to read first too (it waits for
    multistream-select's header), sends its ACK alone in turn."""
    async with pair(our_host, our_host) as (a, b):
        conn_a, conn_b = muxed(a, b), muxed(b, a)
        log_a, log_b = SealedLog(conn_a), SealedLog(conn_b)
        stream = await conn_b.open_stream()
        assert log_b.of(stream.stream_id) == []
        with trio.move_on_after(0.5):
            await stream.read(1)  # nothing comes: a waits for the header
        sid = stream.stream_id
        assert log_b.of(sid) == [[(WU, yamux.FLAG_SYN, sid)]]
        assert log_a.of(sid) == [[(WU, yamux.FLAG_ACK, sid)]]
        assert conn_a.inbound_open == 1
        await stream.reset()
        await settled(lambda: conn_a.inbound_open == 0)


async def test_a_stream_reset_before_its_syn_went_out_sends_nothing() -> None:
    async with pair(our_host, our_host) as (a, b):
        conn_a, conn_b = muxed(a, b), muxed(b, a)
        log_b = SealedLog(conn_b)
        unheard = await conn_b.open_stream()
        await unheard.reset()
        with pytest.raises(MuxedStreamReset):
            await unheard.write(b"x")
        stream = await b.new_stream(a.get_id(), [ECHO])  # the connection carries on
        with trio.fail_after(10):
            await stream.write(b"ping")
            assert await stream.read(4) == b"ping"
        assert log_b.of(unheard.stream_id) == []
        assert unheard.stream_id not in conn_b.streams
        assert conn_a.streams_refused == 0


async def test_a_read_that_would_announce_on_a_failed_connection_ends_with_it() -> None:
    """A stream that waits to read before its SYN went out, on a connection whose
    socket failed: the SYN cannot go, and the read ends with the connection (a reset)
    instead of trying to send it again in a loop that never yields."""
    async with pair(our_host, our_host) as (a, b):
        conn_b = muxed(b, a)
        stream = await conn_b.open_stream()
        conn_b._write_failed(OSError("a broken pipe, for the test"))
        with trio.fail_after(10), pytest.raises(MuxedStreamReset):
            await stream.read(1)


async def test_reads_give_the_window_back_in_batches_not_per_read() -> None:
    """Reading 4 MB a byte-prefix-and-body at a time (as gossipsub does) costs a
    handful of WINDOW_UPDATE frames, not one per read as py-libp2p's yamux sends."""
    sent_frames: list[bytes] = []
    async with pair(our_host, our_host) as (a, b):
        conn = muxed(a, b)  # a reads what b sends
        original = conn._send

        async def counting_send(data: bytes, stream: yamux.YamuxStream | None = None) -> None:
            sent_frames.append(bytes(data[:12]))
            await original(data, stream)

        conn._send = counting_send
        sink = SmallReadSink()
        await sink.take(pattern(4 * MB), a, b, SINK)
    window_updates = [f for f in sent_frames if f[1] == yamux.TYPE_WINDOW_UPDATE]
    assert sink.reads >= 8000
    # 4 MB through a 1 MiB window credited at half: about 8 updates (plus the ACK).
    assert len(window_updates) <= 12, len(window_updates)


class _Sunk:
    """A stream handler that hands the stream's bytes to a sink (YamuxStream.sink)
    once it may, reading until then; `stop_after` bytes make the sink stop."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.got = bytearray()
        self.read_bytes = 0  # of `got`, what came through `read`
        self.stop_after = stop_after
        self.installed = trio.Event()
        self.stopped = trio.Event()
        self.stream: yamux.YamuxStream | None = None

    def take(self, data: bytes | memoryview) -> bool:
        self.got += data
        return self.stop_after is None or len(self.got) < self.stop_after

    async def __call__(self, stream: INetStream) -> None:
        muxed_stream = stream.muxed_stream
        assert isinstance(muxed_stream, yamux.YamuxStream)
        self.stream = muxed_stream
        while not muxed_stream.sink(self.take):
            await self.read_some(muxed_stream)
        self.installed.set()
        await muxed_stream.sink_done()
        self.stopped.set()

    async def read_some(self, muxed_stream: yamux.YamuxStream) -> bool:
        try:
            chunk = await muxed_stream.read(1 << 16)
        except Exception:  # EOF or reset
            return False
        self.got += chunk
        self.read_bytes += len(chunk)
        return bool(chunk)


async def test_a_sink_takes_every_byte_in_order_and_gives_the_window_back() -> None:
    """4 MB through a 1 MiB window, all taken by the sink from the reading task: the
    window is credited as it takes them, or the writer would stall at 1 MiB."""
    data = pattern(4 * MB)
    sunk = _Sunk()
    async with pair(our_host, our_host) as (a, b):
        a.set_stream_handler(SINK, sunk)
        stream = await b.new_stream(a.get_id(), [SINK])
        with trio.fail_after(30):
            await stream.write(data[:1000])
            await sunk.installed.wait()
            for start in range(1000, len(data), 64 * 1024):
                await stream.write(data[start : start + 64 * 1024])
            await stream.close()
            await sunk.stopped.wait()  # the FIN ends sink_done
    assert bytes(sunk.got) == data
    assert sunk.read_bytes <= 1000  # only what came before the sink went in was read
    assert sunk.stream is not None
    assert sunk.stream.recv_closed


async def test_a_sink_that_stops_leaves_the_rest_to_read_and_the_peer_waits() -> None:
    """A sink that stops after 100 KB: what follows buffers unread and uncredited, so
    a 3 MB writer stalls at the window; reading takes the rest, in order."""
    data = pattern(3 * MB)
    sunk = _Sunk(stop_after=100_000)
    written = 0
    async with pair(our_host, our_host) as (a, b):
        a.set_stream_handler(SINK, sunk)
        stream = await b.new_stream(a.get_id(), [SINK])

        async def writer() -> None:
            nonlocal written
            for start in range(0, len(data), 64 * 1024):
                await stream.write(data[start : start + 64 * 1024])
                written = start + 64 * 1024
            await stream.close()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await sunk.stopped.wait()
                await trio.sleep(0.5)
                assert written < 2 * MB  # stalled on the window nobody credits
                assert sunk.stream is not None
                assert sunk.stream.buffered > 0
                while await sunk.read_some(sunk.stream):
                    pass
    assert bytes(sunk.got) == data


async def test_unsink_buffers_again() -> None:
    sunk = _Sunk()
    async with pair(our_host, our_host) as (a, b):
        a.set_stream_handler(SINK, sunk)
        stream = await b.new_stream(a.get_id(), [SINK])
        with trio.fail_after(10):
            await stream.write(b"first")
            await sunk.installed.wait()  # maybe before "first" arrived: wait for it
            while bytes(sunk.got) != b"first":  # noqa: ASYNC110
                await trio.sleep(0.01)
            assert sunk.stream is not None
            sunk.stream.unsink()
            await stream.write(b"second")
            assert await sunk.stream.read(100) == b"second"
    assert bytes(sunk.got) == b"first"


async def test_a_peer_that_overruns_its_window_loses_the_connection() -> None:
    async with pair(our_host, our_host) as (a, b):
        arrived = trio.Event()

        async def stall(stream: INetStream) -> None:
            arrived.set()
            await trio.sleep_forever()  # never reads: the window is never given back

        a.set_stream_handler(SINK, stall)
        stream = await b.new_stream(a.get_id(), [SINK])
        await stream.write(b"hello")
        with trio.fail_after(10):
            await arrived.wait()
        conn_b = muxed(b, a)
        sid = stream.muxed_stream.stream_id
        # A misbehaving sender: 1 MiB + 64 KiB of frames while the receiver holds
        # a 1 MiB window and reads nothing.
        body = b"\0" * yamux.MAX_FRAME_PAYLOAD
        frame = yamux.header(yamux.TYPE_DATA, 0, sid, len(body)) + body
        conn_a = muxed(a, b)
        with trio.fail_after(10):
            for _ in range(18):
                await conn_b._send(frame)
            await conn_a.event_closed.wait()
            await conn_b.event_closed.wait()  # GO_AWAY, then the socket closes


async def test_unknown_frame_types_end_the_connection_with_a_protocol_error() -> None:
    async with pair(our_host, our_host) as (a, b):
        conn_a, conn_b = muxed(a, b), muxed(b, a)
        await conn_b._send(yamux.HEADER.pack(0, 9, 0, 0, 0))
        with trio.fail_after(10):
            await conn_a.event_closed.wait()
            await conn_b.event_closed.wait()


async def test_pings_are_answered() -> None:
    async with pair(our_host, stock_host) as (a, b):
        stock = muxed(b, a)
        assert isinstance(stock, StockYamux)
        # py-libp2p measures RTT with a ping half a second after connecting.
        with trio.fail_after(10):
            while stock.rtt() == 0.0:  # noqa: ASYNC110 - py-libp2p has no event for it
                await trio.sleep(0.05)
        assert 0 < stock.rtt() < 1


async def test_keepalive_pings_measure_the_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamux, "KEEPALIVE_S", 0.1)
    async with pair(our_host, stock_host) as (a, b):
        ours = muxed(a, b)
        with trio.fail_after(10):
            while ours.rtt_s == 0.0:  # noqa: ASYNC110 - no event for it, by design
                await trio.sleep(0.05)
        assert 0 < ours.rtt_s < 1
        assert not ours.is_closed


async def test_a_peer_that_stops_answering_pings_is_hung_up_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer gone without a FIN looks connected forever unless pings go unanswered."""
    monkeypatch.setattr(yamux, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(yamux, "KEEPALIVE_TIMEOUT_S", 0.5)
    async with pair(our_host, our_host) as (a, b):
        conn_a, conn_b = muxed(a, b), muxed(b, a)
        answer = conn_a._queue

        def mute(frame: bytes) -> None:  # a stops answering pings, nothing else
            if frame[1] != yamux.TYPE_PING:
                answer(frame)

        conn_a._queue = mute
        with trio.fail_after(10):
            await conn_b.event_closed.wait()  # b hung up ...
            await conn_a.event_closed.wait()  # ... and a saw it


async def test_a_close_racing_the_end_of_the_connection_still_says_go_away() -> None:
    """A close that comes while the connection's tasks are being cancelled (its read
    loop saw the end, or the socket failed) queues GO_AWAY for a writing task that
    will never send it. The writing task says it stopped, and the close sends the
    frame itself. Until 2026-12-05 the close waited out its 1 s timeout instead, and
    meanwhile the connection still looked open: bitswap held blocks back for the
    peer that had left (found as 0.86 s stalls in the fetch bench)."""
    async with pair(our_host, our_host) as (a, b):
        conn = muxed(a, b)
        written: list[bytes] = []
        write = conn._writer.write

        async def recording(data: bytes) -> None:
            written.append(bytes(data))
            await write(data)

        conn._writer.write = recording
        assert conn._writer_running
        conn._connection_scope.cancel()  # as start() does when its read loop ends
        with trio.fail_after(5):
            await conn.close()
        assert conn.is_closed
        goaway = yamux.header(yamux.TYPE_GO_AWAY, 0, 0, yamux.GO_AWAY_NORMAL)
        assert any(goaway in data for data in written), written


async def settled(condition: Callable[[], bool]) -> None:
    """Wait until condition() holds, checking as the event loop runs; fail after 10 s."""
    with trio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - the muxer signals no event for this
            await trio.sleep(0.01)


async def test_a_peer_holds_at_most_max_inbound_streams_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams past the cap are reset at once; a closed one frees its place."""
    monkeypatch.setattr(yamux, "MAX_INBOUND_STREAMS", 8)
    async with pair(our_host, our_host) as (a, b):
        conn_a, conn_b = muxed(a, b), muxed(b, a)
        held = [await conn_b.open_stream() for _ in range(8)]
        for stream in held:
            await stream.write(b"?")  # the SYN goes with a stream's first frame
        await settled(lambda: conn_a.inbound_open == 8)
        refused = await conn_b.open_stream()
        with trio.fail_after(10), pytest.raises(MuxedStreamReset):
            await refused.read(1)
        assert conn_a.streams_refused == 1
        await held[0].reset()
        await settled(lambda: conn_a.inbound_open == 7)
        again = await conn_b.open_stream()
        await again.write(b"x")
        await settled(lambda: conn_a.inbound_open == 8)
        assert conn_a.streams_refused == 1
        assert not conn_a.event_closed.is_set()


async def _echo_under_window(make_peer: Callable[[], IHost], window: int
                             ) -> tuple[bool, int, int]:
    """Echo 5 MB from a peer to a host whose streams have `window`: (all came back,
    the host's window, the most a's end let the peer have in flight plus held)."""
    def small_window_host() -> IHost:
        return new_libp2p_host(create_new_key_pair(),
                               yamux.configured(64, lambda: None, receive_window=window))

    async with pair(small_window_host, make_peer) as (a, b):
        data = pattern(5 * MB, seed=7)
        stream = await b.new_stream(a.get_id(), [ECHO])
        conn_a = muxed(a, b)
        peak = 0

        async def send() -> None:
            await stream.write(data)
            await stream.close()

        async def sample(done: trio.Event) -> None:
            nonlocal peak
            while not done.is_set():
                for s in list(conn_a.streams.values()):
                    peak = max(peak, s._recv_window + len(s._buffer) - s._offset)
                await trio.lowlevel.checkpoint()

        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(sample, done)
            got = await read_all(stream)
            done.set()
        return got == data, conn_a.window, peak


async def test_a_configured_receive_window_bounds_what_a_stream_has_in_flight() -> None:
    """stream_receive_window: a sender never has more than it in flight to us, and a
    5 MB echo still goes through, with our muxer or a stock py-libp2p peer."""
    with pytest.raises(ValueError, match="breaks the spec"):
        yamux.configured(64, lambda: None, receive_window=100_000)
    for make_peer in (our_host, stock_host):
        whole, window, peak = await _echo_under_window(make_peer, 300_000)
        assert whole
        assert window == 300_000
        assert 0 < peak <= 300_000
