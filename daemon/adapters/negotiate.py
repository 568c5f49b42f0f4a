"""Opening a stream with multistream-select in one round trip.

py-libp2p's `BasicHost.new_stream` selects a protocol in two round trips and two
writes of ours: our header, wait for the peer's; then the protocol, wait for its echo.
Each write is a yamux frame, a Noise message and a syscall, and a stream is opened for
every DHT query, presence fetch, sync session and bitswap link, so in a room's join
storm stream opening was about a tenth of the daemons' CPU.

Here the header and the first protocol go out in one write, as go-libp2p's and
js-libp2p's dialers do when they propose one protocol: a responder reads the two
messages in turn and answers both (the multistream-select spec allows pipelining; a
responder that lacks the protocol says "na" and we propose the next one, one at a
time). The replies are read byte-exact, so nothing of the protocol's own first bytes
is taken from the stream.

`serve_inbound` is the other side, for the streams peers open to us: a dialer that
proposed with its header (go, js, ours) gets our header and the answer in one write
too. py-libp2p's host writes its header first and the answer after reading the
proposal: two writes, each a yamux frame, a Noise message and a syscall, and two
wake-ups of the dialer (tests/upstream/test_multiselect_responder.py). A dialer that
waits for our header before it proposes (py-libp2p's `new_stream`) still gets it at
once: we write it alone when nothing more has arrived.

`open_stream_sending` goes one step further for a protocol the peer announced (in
identify): the protocol's first message goes in that same write, so the peer has it
one round trip sooner, as with go-libp2p's lazy negotiation (`NewStream` with a
protocol the peerstore lists). A responder that answers "na" reads those bytes as
multistream-select messages and refuses them: nothing of them reaches a handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.utils.varint import encode_delim

from .yamux import YamuxStream

log = logging.getLogger(__name__)

HEADER = "/multistream/1.0.0"
NOT_AVAILABLE = "na"
# A multistream-select message is a protocol name and a newline; names are short.
MAX_MESSAGE = 1024
NEGOTIATE_TIMEOUT_S = 10.0
# Proposals one inbound stream may make before we give up on it.
MAX_PROPOSALS = 32
# What a stream that a peer reset or closed raises into its handler: not a bug.
_STREAM_ERRORS = (BaseLibp2pError, OSError, EOFError, trio.BrokenResourceError,
                  trio.ClosedResourceError)

_T = TypeVar("_T")


class NegotiationError(MultiselectClientError):
    """The peer did not agree on any of the protocols, or broke the exchange (a
    py-libp2p error, as `new_stream`'s are, so callers' handlers stay as they were)."""


async def open_stream(host: IHost, peer: ID, protocols: Sequence[str], *,
                      timeout_s: float = NEGOTIATE_TIMEOUT_S) -> INetStream:
    """A new stream to a connected `peer`, speaking the first of `protocols` it has.

    Raises NegotiationError if it has none of them or the exchange breaks or takes
    longer than `timeout_s`; the swarm's own errors if no stream can be opened.
    """
    if not protocols:
        raise ValueError("open_stream needs at least one protocol")
    stream = await host.get_network().new_stream(peer)
    selected = await _negotiated(stream, _select(stream, protocols), timeout_s)
    stream.set_protocol(TProtocol(selected))
    return stream


async def open_stream_sending(host: IHost, peer: ID, protocol: str, first: bytes, *,
                              timeout_s: float = NEGOTIATE_TIMEOUT_S) -> INetStream | None:
    """A new stream to a connected `peer` speaking `protocol`, whose first bytes
    (`first`: a whole message of the protocol) go out with the negotiation.

    Returns the stream once the peer accepted `protocol`: it then has `first`. Returns
    None if the peer answered "na": the stream is reset, and no handler saw `first`
    (open a stream with `open_stream` and send it again). Raises as `open_stream`.
    Meant for a protocol the peer announced; to a peer that lacks it, this costs
    `first` sent for nothing. After "na" the peer reads `first` as multistream-select
    messages, so it must not be one: a protocol's own message never is (a proposal is
    a protocol name and a newline).
    """
    stream = await host.get_network().new_stream(peer)
    accepted = await _negotiated(stream, _propose_with(stream, protocol, first), timeout_s)
    if not accepted:
        await _reset(stream)
        return None
    stream.set_protocol(TProtocol(protocol))
    return stream


async def serve_inbound(host: IHost, stream: INetStream, *,
                        timeout_s: float = NEGOTIATE_TIMEOUT_S,
                        on_fault: Callable[[str], None] | None = None) -> None:
    """Answer multistream-select on a stream the peer opened, then run the handler
    `host` holds for the protocol chosen (as py-libp2p's host does, in fewer writes).
    A stream that breaks the exchange or stalls past `timeout_s` is reset, and so is
    one whose handler raises: the exception is logged, and goes no further. A handler
    that raises anything but a stream error (a bug) is also reported to `on_fault`
    with its protocol."""
    handlers = host.get_mux().handlers
    try:
        protocol = await _negotiated(stream, _answer(stream, handlers), timeout_s)
    except NegotiationError as exc:
        log.debug("inbound stream from %s: %s", stream.muxed_conn.peer_id, exc)
        return
    handler = handlers[TProtocol(protocol)]
    assert handler is not None  # _answer chooses only protocols with a handler
    stream.set_protocol(TProtocol(protocol))
    try:
        await handler(stream)
    except Exception as exc:
        # py-libp2p lets a handler's exception out into the connection's nursery, and
        # the host's whole swarm goes down with it (tests/upstream/
        # test_stream_handler_errors.py): here it ends that stream only.
        peer = stream.muxed_conn.peer_id
        if isinstance(exc, _STREAM_ERRORS):
            log.debug("%s stream from %s ended: %r", protocol, peer, exc)
        else:
            log.exception("the %s handler failed on a stream from %s", protocol, peer)
            if on_fault is not None:
                on_fault(protocol)
        await _reset(stream)


async def _answer(stream: INetStream, handlers: dict[TProtocol | None, Any]) -> str:
    await _read_header(stream)
    pending = encode_delim(HEADER.encode())
    for _ in range(MAX_PROPOSALS):
        if pending and not _buffered(stream):
            await stream.write(pending)  # the dialer may wait for it to propose
            pending = b""
        proposal = await _read_message(stream)
        if handlers.get(TProtocol(proposal)) is not None:
            await stream.write(pending + encode_delim(proposal.encode()))
            return proposal
        if proposal == "ls":  # as py-libp2p answers it: the names in one message
            names = "".join(f"{p}\n" for p in handlers if p is not None)
            reply = encode_delim(names.encode())
        else:
            reply = encode_delim(NOT_AVAILABLE.encode())
        await stream.write(pending + reply)
        pending = b""
    raise NegotiationError(f"more than {MAX_PROPOSALS} proposals")


def _buffered(stream: INetStream) -> bool:
    """Whether bytes the peer sent wait unread on the stream (our yamux only)."""
    muxed = getattr(stream, "muxed_stream", None)
    return isinstance(muxed, YamuxStream) and muxed.buffered > 0


async def _negotiated(stream: INetStream, exchange: Awaitable[_T], timeout_s: float) -> _T:
    """Run a negotiation on `stream`; on any failure the stream is reset."""
    try:
        with trio.fail_after(timeout_s):
            return await exchange
    except trio.TooSlowError:
        await _reset(stream)
        raise NegotiationError(
            f"no answer to multistream-select within {timeout_s:g} s") from None
    except NegotiationError:
        await _reset(stream)
        raise
    except Exception as exc:  # a reset or closed stream raises a spread of types
        await _reset(stream)
        raise NegotiationError(f"multistream-select broke: {exc!r}") from exc
    except BaseException:  # cancelled: the stream goes with the caller
        await _reset(stream)
        raise


async def _reset(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:  # resetting a broken stream raises a spread of types
            pass


async def _select(stream: INetStream, protocols: Sequence[str]) -> str:
    first, *rest = protocols
    await stream.write(encode_delim(HEADER.encode()) + encode_delim(first.encode()))
    await _read_header(stream)
    answer = await _read_message(stream)
    if answer == first:
        return first
    for protocol in rest:
        if answer != NOT_AVAILABLE:
            break
        await stream.write(encode_delim(protocol.encode()))
        answer = await _read_message(stream)
        if answer == protocol:
            return protocol
    if answer != NOT_AVAILABLE:
        raise NegotiationError(f"unexpected multistream-select answer {answer[:40]!r}")
    raise NegotiationError(f"protocols not supported by the peer: {', '.join(protocols)}")


async def _propose_with(stream: INetStream, protocol: str, first: bytes) -> bool:
    await stream.write(b"".join((encode_delim(HEADER.encode()),
                                 encode_delim(protocol.encode()), first)))
    await _read_header(stream)
    answer = await _read_message(stream)
    if answer == protocol:
        return True
    if answer == NOT_AVAILABLE:
        return False
    raise NegotiationError(f"unexpected multistream-select answer {answer[:40]!r}")


async def _read_header(stream: INetStream) -> None:
    header = await _read_message(stream)
    if header != HEADER:
        raise NegotiationError(f"the peer does not speak multistream-select: {header[:40]!r}")


async def _read_message(stream: INetStream) -> str:
    length = 0
    for shift in (0, 7):  # MAX_MESSAGE fits in two varint bytes
        byte = (await _read_exactly(stream, 1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    else:
        raise NegotiationError("a multistream-select message longer than allowed")
    if not 0 < length <= MAX_MESSAGE:
        raise NegotiationError(f"a multistream-select message of {length} bytes")
    body = await _read_exactly(stream, length)
    if not body.endswith(b"\n"):
        raise NegotiationError("a multistream-select message without its newline")
    try:
        return body[:-1].decode()
    except UnicodeDecodeError:
        raise NegotiationError("a multistream-select message that is not UTF-8") from None


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.read(n - len(data))
        if not chunk:
            raise NegotiationError("the stream ended during multistream-select")
        data += chunk
    return data
