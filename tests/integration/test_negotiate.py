"""Opening streams with multistream-select in one round trip, or with the first bytes in
the same write (adapters/negotiate.py),
against stock py-libp2p hosts: what they answer, and that no byte of the protocol's own
is lost. js-libp2p answers it in tests/integration/test_gossip_interop.py and
test_bitswap_interop.py, where every stream we open goes through it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamReset
from libp2p.utils.varint import encode_delim

from gossipchat.daemon.adapters import negotiate
from gossipchat.daemon.adapters.p2p import new_libp2p_host
from harness.libp2p_hosts import muxed, recording_writes, running_pair, stock_host

OLD = "/gossipchat-test/echo/1.0.0"
NEW = "/gossipchat-test/echo/2.0.0"


async def _greet_then_echo(stream: INetStream) -> None:
    # The responder speaks first, right after the negotiation: our reads there must
    # not take its greeting.
    await stream.write(b"hello")
    await stream.write(await stream.read(100))
    await stream.close()


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += await stream.read(n - len(data))
    return data


class _Writes:
    """Counts the writes a connection makes to its secure channel (frames sent)."""

    def __init__(self, conn: object) -> None:
        self.count = 0
        secured = conn.secured_conn  # type: ignore[attr-defined]
        real = secured.write

        async def write(data: bytes) -> None:
            self.count += 1
            await real(data)

        secured.write = write


async def test_one_write_selects_the_protocol_and_the_first_bytes_stay() -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), _greet_then_echo)
        writes = _Writes(muxed(b, a))
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        assert stream.get_protocol() == OLD
        assert await _read_exactly(stream, 5) == b"hello"
        ours = writes.count
        await stream.write(b"ping")
        assert await _read_exactly(stream, 4) == b"ping"
        await stream.close()
        # py-libp2p's own new_stream on the same connection: header and protocol
        # each in a write of their own, a round trip apart.
        writes.count = 0
        stock = await b.new_stream(a.get_id(), [TProtocol(OLD)])
        assert await _read_exactly(stock, 5) == b"hello"
        print(f"writes to open a stream and read its first bytes: ours {ours}, "
              f"py-libp2p's {writes.count}")
        assert writes.count > ours
        await stock.reset()


def _our_host() -> IHost:
    return new_libp2p_host(create_new_key_pair())


# The responders: py-libp2p's own host, and ours (negotiate.serve_inbound).
RESPONDERS = pytest.mark.parametrize("responder", [stock_host, _our_host],
                                     ids=["py-libp2p", "ours"])


@RESPONDERS
async def test_the_next_protocol_is_proposed_when_the_first_is_not_available(
        responder: Callable[[], IHost]) -> None:
    async with running_pair(responder(), stock_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), _greet_then_echo)
        stream = await negotiate.open_stream(b, a.get_id(), [NEW, OLD])
        assert stream.get_protocol() == OLD
        assert await _read_exactly(stream, 5) == b"hello"
        await stream.reset()


@RESPONDERS
async def test_no_protocol_in_common_is_a_clear_error_and_the_stream_goes(
        responder: Callable[[], IHost]) -> None:
    async with running_pair(responder(), stock_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), _greet_then_echo)
        conn = muxed(b, a)
        with pytest.raises(negotiate.NegotiationError, match="not supported by the peer"):
            await negotiate.open_stream(b, a.get_id(), [NEW])
        # The connection is fine and carries the next stream.
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        assert await _read_exactly(stream, 5) == b"hello"
        assert muxed(b, a) is conn
        await stream.reset()


@pytest.mark.parametrize("sending", [False, True], ids=["open_stream", "open_stream_sending"])
async def test_a_peer_that_never_answers_times_out(sending: bool) -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):

        async def mute(stream: INetStream) -> None:
            await trio.sleep_forever()

        # The swarm hands each new stream to this instead of the host's multiselect,
        # as a peer that accepts streams but stalls would.
        a.get_network().set_stream_handler(mute)
        opening = (negotiate.open_stream_sending(b, a.get_id(), OLD, b"first", timeout_s=0.5)
                   if sending else negotiate.open_stream(b, a.get_id(), [OLD], timeout_s=0.5))
        with pytest.raises(negotiate.NegotiationError, match=r"within 0\.5 s"):
            await opening


async def test_first_bytes_go_with_the_negotiation_and_reach_the_handler() -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):
        got: list[bytes] = []

        async def take_then_answer(stream: INetStream) -> None:
            got.append(await _read_exactly(stream, 5))
            await stream.write(b"pong")
            await stream.close()

        a.set_stream_handler(TProtocol(OLD), take_then_answer)
        writes = _Writes(muxed(b, a))
        stream = await negotiate.open_stream_sending(b, a.get_id(), OLD, b"first")
        assert stream is not None
        assert stream.get_protocol() == OLD
        assert await _read_exactly(stream, 4) == b"pong"
        assert got == [b"first"]
        ours = writes.count
        await stream.close()
        # The same exchange with the first bytes written after the negotiation.
        writes.count = 0
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        await stream.write(b"first")
        assert await _read_exactly(stream, 4) == b"pong"
        assert got == [b"first", b"first"]
        print(f"writes to open a stream, send and read an answer: sending {ours}, "
              f"then writing {writes.count}")
        assert writes.count > ours
        await stream.close()


async def test_a_refused_protocol_takes_none_of_the_first_bytes() -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):
        handled: list[str] = []

        async def note(stream: INetStream) -> None:
            handled.append(str(stream.get_protocol()))
            await stream.write(await stream.read(100))
            await stream.close()

        a.set_stream_handler(TProtocol(OLD), note)
        conn = muxed(b, a)
        # A length-prefixed message, as bitswap's are: after "na" the responder reads
        # it as the next multistream-select message, and refuses it.
        message = negotiate.encode_delim(b"\x0a\x02want")
        assert await negotiate.open_stream_sending(b, a.get_id(), NEW, message) is None
        assert handled == []
        # The connection is fine and carries the next stream; after its round trip
        # the handler has run once, for it alone.
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        await stream.write(b"ping")
        assert await _read_exactly(stream, 4) == b"ping"
        assert handled == [OLD]
        assert muxed(b, a) is conn
        await stream.reset()


HELLO_WRITES = [encode_delim(negotiate.HEADER.encode()) + encode_delim(OLD.encode()),
                b"hello"]


def _record_writes(host: IHost) -> list[bytes]:
    """What `host` writes on the streams peers open to it, from now on, through the
    stream handler it was built with (new_libp2p_host:
    libp2p_patches.answer_multistream_in_one_write)."""
    writes: list[bytes] = []
    network = host.get_network()
    handler = network.common_stream_handler  # type: ignore[attr-defined]
    network.set_stream_handler(recording_writes(handler, writes))
    return writes


async def test_our_host_answers_a_pipelined_proposal_in_one_write() -> None:
    async with running_pair(_our_host(), _our_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), _greet_then_echo)
        writes = _record_writes(a)
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        assert await _read_exactly(stream, 5) == b"hello"
        await stream.write(b"ping")
        assert await _read_exactly(stream, 4) == b"ping"
        assert writes[:2] == HELLO_WRITES
        await stream.close()


async def test_a_dialer_that_waits_for_our_header_gets_it_first() -> None:
    # py-libp2p's own new_stream writes its header, then waits for ours to propose.
    async with running_pair(_our_host(), stock_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), _greet_then_echo)
        writes = _record_writes(a)
        with trio.fail_after(5):
            stream = await b.new_stream(a.get_id(), [TProtocol(OLD)])
            assert await _read_exactly(stream, 5) == b"hello"
        assert writes[:3] == [encode_delim(negotiate.HEADER.encode()),
                              encode_delim(OLD.encode()), b"hello"]
        await stream.reset()


async def test_our_host_lists_its_protocols() -> None:
    async with running_pair(_our_host(), _our_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), _greet_then_echo)
        stream = await b.get_network().new_stream(a.get_id())
        await stream.write(encode_delim(negotiate.HEADER.encode()) + encode_delim(b"ls"))
        with trio.fail_after(5):
            assert await negotiate._read_message(stream) == negotiate.HEADER
            listing = await negotiate._read_message(stream)
        assert OLD in listing.split("\n")
        await stream.reset()


async def test_our_host_resets_a_dialer_that_stalls() -> None:
    async with running_pair(_our_host(), _our_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), _greet_then_echo)
        a.get_network().set_stream_handler(partial(negotiate.serve_inbound, a, timeout_s=0.5))
        stream = await b.get_network().new_stream(a.get_id())
        await stream.write(encode_delim(negotiate.HEADER.encode()))  # and no proposal
        with trio.fail_after(5):
            assert await negotiate._read_message(stream) == negotiate.HEADER
            with pytest.raises(StreamReset):
                await stream.read(100)
        # The connection is fine and carries the next stream.
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        assert await _read_exactly(stream, 5) == b"hello"
        await stream.reset()


async def test_a_handler_that_raises_ends_its_stream_only(
        caplog: pytest.LogCaptureFixture) -> None:
    # py-libp2p's own host goes down (tests/upstream/test_stream_handler_errors.py).
    async def fragile(stream: INetStream) -> None:
        first = await stream.read(1)
        if first == b"!":
            raise RuntimeError("a bug in a handler")
        if first == b"r":  # the peer resets: a stream error, not a fault of ours
            await stream.read(1)
        await stream.write(b"ok")
        await stream.close()

    faults: list[str] = []
    a = new_libp2p_host(create_new_key_pair(), on_handler_fault=faults.append)
    async with running_pair(a, _our_host()) as (a, b):
        a.set_stream_handler(TProtocol(OLD), fragile)
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        await stream.write(b"!")
        with trio.fail_after(5), pytest.raises(StreamReset):
            await stream.read(2)
        # The host answers the next stream, on the same connection.
        conn = muxed(b, a)
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        await stream.write(b"?")
        assert await _read_exactly(stream, 2) == b"ok"
        assert muxed(b, a) is conn
        # A stream the peer resets under the handler ends it with a stream error:
        # logged at debug level, not a fault. (That handler has run by the time the
        # next stream on the connection is answered.)
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        await stream.write(b"r")
        await stream.reset()
        stream = await negotiate.open_stream(b, a.get_id(), [OLD])
        await stream.write(b"?")
        assert await _read_exactly(stream, 2) == b"ok"
    failures = [r for r in caplog.records if r.exc_info and r.levelname == "ERROR"]
    assert [str(r.exc_info[1]) for r in failures] == ["a bug in a handler"]
    assert faults == [OLD]
