"""Yamux for our py-libp2p hosts: the same `/yamux/1.0.0` on the wire, far less CPU.

py-libp2p 0.8.1's muxer is where a daemon's CPU goes whenever bytes flow (the bench
profiles put yamux and Noise at ~90% of a fetching client), and a bare py-libp2p
stream tops out near 55-70 MB/s on this machine, below what an image fetch needs:

- it sends a WINDOW_UPDATE on nearly every read (1,553 for 1,584 reads over 100 MB);
  gossipsub reads its length prefixes one byte at a time, so a message costs a
  dozen window updates;
- it formats debug f-strings for every frame, whether or not debug is on;
- every 64 KiB frame is read as a 12-byte header and a body, through a
  `SecureSession` that reads each Noise message as a 2-byte length and a body:
  three `recv` calls and several lock round trips per frame;
- a 64 KiB frame plus its header is larger than one Noise message, so every data
  frame goes out as two Noise messages and two `send` calls.

And `MuxerMultistream.new_conn` ignores the class given for `/yamux/1.0.0` in
`muxer_opt` (it always builds its own `Yamux`), so a host uses this one through
`libp2p_patches.build_negotiated_muxer`.

This module keeps the protocol (hashicorp's yamux spec, with go-yamux's habits) and
changes the mechanics:

- The reading side is one task (`Yamux.start`). On a Noise session it reads the TCP
  socket in 256 KiB gulps, decrypts every whole Noise message in them with the
  session's own cipher state (py-libp2p keeps the keys and did the handshake), and
  parses every whole frame in the plaintext before reading again. Over TCP it reads
  the kernel socket itself and waits for it before each read, unless the last read
  filled the buffer, so no read finds nothing. Other secure sessions are read a
  message at a time through their own `read`.
- One sender at a time (which also keeps the Noise nonces in order). A writer that
  finds nothing queued and nothing being sent seals its frames and hands them to the
  kernel socket itself, without a hop through another task. Otherwise, and for what
  the socket did not take, frames queue in a send buffer (1 MiB, then writers wait)
  for the writing task, and writers return, as a socket write does; whatever queued
  while that task was in `send` goes out in the next one, as Noise messages of at
  most 65,519 plaintext bytes. Under load one syscall carries many frames (a burst
  of gossip to a peer, acks, window updates).
- Each stream announces a 1 MiB receive window in its SYN or ACK (go-yamux grows to
  16 MiB; 1 MiB keeps a loopback pipe full with bounded memory per stream) and
  returns credit once half of it has been read, not on every read.
- A stream's SYN (opened here) or ACK (opened by the peer) goes out with the first
  frame the stream sends, in the same Noise message, and alone only when the stream
  waits to read before it has sent anything. A short exchange (a DHT query, a
  multistream-select answer) took a message and a syscall more for each on its own.
  The frames on the wire are the same, in the same order; go-yamux too ACKs a stream
  only once its application accepts it. A stream reset before its SYN went out
  sends nothing: the peer never heard of it.
- A peer that overruns its window, sends an unknown frame type or a bad version, or
  fails Noise authentication loses the connection (GO_AWAY protocol error).
- A ping every 30 s; a peer that leaves one unanswered for 30 s is hung up on, so a
  peer gone without a FIN is noticed (and redialled) even in a quiet room.

Stream semantics match py-libp2p's `YamuxStream` where callers can tell:
`read(n)` returns up to n buffered bytes (all of them for n None or -1) as soon as
any are there and raises `MuxedStreamEOF` after the peer's FIN and `MuxedStreamReset`
after a reset; `write` after `close` raises `MuxedStreamClosed`; `close` half-closes.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

import multiaddr
import trio
from libp2p.abc import IMuxedConn, IMuxedStream, ISecureConn
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import (
    MuxedConnUnavailable,
    MuxedStreamClosed,
    MuxedStreamEOF,
    MuxedStreamError,
    MuxedStreamReset,
)

from ..core import ticks
from ..errors import ProtocolError  # a peer breaking yamux: closed with GO_AWAY
from . import timers
from .locks import QuickLock

logger = logging.getLogger(__name__)

PROTOCOL_ID = TProtocol("/yamux/1.0.0")

VERSION = 0
TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3
FLAG_SYN = 1
FLAG_ACK = 2
FLAG_FIN = 4
FLAG_RST = 8
GO_AWAY_NORMAL = 0
GO_AWAY_PROTOCOL_ERROR = 1

HEADER = struct.Struct("!BBHII")
HEADER_SIZE = HEADER.size  # 12
INITIAL_WINDOW = 256 * 1024  # the spec's starting window, assumed by both sides
RECEIVE_WINDOW = 1024 * 1024  # what we let a peer have in flight per stream

# Noise transport messages: 2-byte length, at most 65,535 bytes of ciphertext, of
# which 16 are the Poly1305 tag.
NOISE_MAX_PLAINTEXT = 65535 - 16
MAX_FRAME_PAYLOAD = NOISE_MAX_PLAINTEXT - HEADER_SIZE  # one frame, one Noise message
WRITE_BATCH = 256 * 1024  # bytes of one stream write framed and sent in one go
SOCKET_READ = 256 * 1024
YIELD_EVERY = 64  # reads served from the buffer between two checkpoints
COMPACT_AT = 64 * 1024  # consumed bytes at the head of a stream buffer worth a memmove
ACCEPT_BACKLOG = 256  # inbound streams not yet accepted; beyond that they are reset
# Streams the peer may hold open on one connection; beyond that new ones are reset.
# Each may buffer up to RECEIVE_WINDOW, so this bounds what one peer makes us hold.
MAX_INBOUND_STREAMS = 256
KEEPALIVE_S = 30.0  # a ping this often (as go-yamux does) ...
KEEPALIVE_TIMEOUT_S = 30.0  # ... and a connection without the pong this long is dead
SEND_BUFFER = 1024 * 1024  # bytes queued for the socket before writers wait
MAX_CONTROL_BYTES = 64 * 1024  # our ACKs, pongs and resets beyond that: the peer reads nothing


def header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(VERSION, kind, flags, stream_id, length)


class _PlainReader:
    """Plaintext out of a secure session that is not the Noise fast path."""

    def __init__(self, secured: ISecureConn) -> None:
        self._secured = secured

    async def read(self) -> bytes:
        data = await self._secured.read(None)
        return data


class _NoiseReader:
    """Plaintext out of a py-libp2p Noise session, many Noise messages per recv.

    Over TCP it reads the kernel socket itself. A connection's reader mostly finds
    nothing waiting when it looks again (gossip arrives a frame at a time), and a read
    through py-libp2p's `RawConnection` then costs four layers of Python, a lock, a
    recv that fails with EAGAIN, the wait, and a second recv. Here it waits for the
    socket first, unless the last read filled its buffer (a bulk transfer: more is
    likely there), and then reads once.
    """

    def __init__(self, raw: Any, noise_state: Any) -> None:
        self._raw = raw
        self._noise = noise_state
        self._cipher = bytearray()
        self._socket = _tcp_socket(raw)
        self._full = False  # the last recv filled SOCKET_READ

    async def _recv(self) -> bytes:
        """The next bytes off the connection; b"" at EOF or once we closed it."""
        sock = self._socket
        if sock is None:
            chunk: bytes = await self._raw.read(SOCKET_READ)
            return chunk
        while True:
            if self._full:
                await trio.lowlevel.checkpoint()  # let others run, as trio's reads do
            else:
                fd = sock.fileno()
                if fd < 0:
                    return b""  # closed here, as the raw read reports it
                await trio.lowlevel.wait_readable(fd)
            try:
                chunk = sock.recv(SOCKET_READ)
            except BlockingIOError:
                self._full = False  # a false alarm: wait for the socket
                continue
            except OSError as exc:
                if sock.fileno() < 0:
                    return b""
                raise trio.BrokenResourceError(f"TCP connection failed: {exc}") from exc
            self._full = len(chunk) == SOCKET_READ
            return chunk

    async def read(self) -> bytes:
        """Every whole Noise message that has arrived, decrypted; b"" at EOF."""
        while True:
            chunk = await self._recv()
            if not chunk:
                return b""
            # Each message's ciphertext is copied once out of what recv returned (or,
            # when the last recv cut a message, out of the carried-over rest joined to
            # it); slicing a bytearray and then making bytes of it copied it twice.
            # (The noise library wants bytes: handed memoryviews, connections to a
            # js-libp2p relay broke in tests/integration/test_dcutr_interop.py.)
            buffer: bytes | bytearray = chunk
            if self._cipher:
                self._cipher += chunk
                buffer = self._cipher
            plain: list[bytes] = []
            pos, end = 0, len(buffer)
            with memoryview(buffer) as view:
                while end - pos >= 2:
                    length = (buffer[pos] << 8) | buffer[pos + 1]
                    if end - pos - 2 < length:
                        break
                    message = self._noise.decrypt(bytes(view[pos + 2 : pos + 2 + length]))
                    pos += 2 + length
                    plain.append(message)
            if buffer is self._cipher:
                del self._cipher[:pos]
            elif pos < end:
                self._cipher = bytearray(memoryview(buffer)[pos:])
            if plain:
                return plain[0] if len(plain) == 1 else b"".join(plain)


class _PlainWriter:
    def __init__(self, secured: ISecureConn) -> None:
        self._secured = secured

    async def write(self, data: bytes) -> None:
        await self._secured.write(data)


class _NoiseWriter:
    """Encrypts a batch of frames as few Noise messages and sends them at once.

    Over TCP the sealed bytes go to the kernel socket directly, without yielding: the
    writing task yields anyway when its queue is empty, and a trio socket send costs a
    scheduling round and py-libp2p's write lock on top of the syscall (one per
    frame batch per peer, the gossip path's most frequent await). Only what the
    socket does not take at once goes through the awaited path, which waits for it
    to drain.
    """

    def __init__(self, raw: Any, noise_state: Any) -> None:
        self._raw = raw
        self._noise = noise_state
        self._socket = _tcp_socket(raw)
        self.direct_sends = 0  # batches the kernel took whole, without an await
        self.partial_sends = 0  # batches whose rest waited for the socket

    @property
    def direct(self) -> bool:
        """True if `send_now` reaches a kernel socket (TCP), so callers may use it."""
        return self._socket is not None

    def seal(self, data: bytes) -> bytes:
        """data as Noise messages on the wire: 2-byte length, then ciphertext."""
        encrypt = self._noise.encrypt
        if len(data) <= NOISE_MAX_PLAINTEXT:
            sealed: bytes = encrypt(data)
            return len(sealed).to_bytes(2, "big") + sealed
        out = []
        for start in range(0, len(data), NOISE_MAX_PLAINTEXT):
            sealed = encrypt(data[start : start + NOISE_MAX_PLAINTEXT])
            out.append(len(sealed).to_bytes(2, "big"))
            out.append(sealed)
        return b"".join(out)

    def send_now(self, wire: bytes) -> int:
        """Hand wire to the kernel without waiting; how many bytes it took. Only
        where `direct`; raises OSError if the socket failed."""
        assert self._socket is not None
        try:
            sent = self._socket.send(wire)
        except BlockingIOError:
            sent = 0
        if sent == len(wire):
            self.direct_sends += 1
        else:
            self.partial_sends += 1
        return sent

    async def send_rest(self, wire: bytes | memoryview) -> None:
        """Sealed bytes the socket did not take at once, once it has room."""
        await self._raw.write(wire)

    async def write(self, data: bytes) -> None:
        wire = self.seal(data)
        if self._socket is not None:
            sent = self.send_now(wire)
            if sent == len(wire):
                return
            await self._raw.write(memoryview(wire)[sent:])
            return
        await self._raw.write(wire)


def _tcp_socket(raw: Any) -> socket.socket | None:
    """The kernel socket under py-libp2p's TCP `RawConnection`, else None (a relayed
    circuit or another transport: those go through their own `write`)."""
    from libp2p.io.trio import TrioTCPStream
    from libp2p.network.connection.raw_connection import RawConnection

    if type(raw) is not RawConnection or type(raw.stream) is not TrioTCPStream:
        return None
    stream = raw.stream.stream
    if not isinstance(stream, trio.SocketStream):
        return None
    sock = getattr(stream.socket, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _noise_parts(secured: ISecureConn) -> tuple[Any, Any] | None:
    """(raw connection, Noise cipher state) of a py-libp2p Noise session, else None.

    Only a `SecureSession` over `NoiseTransportReadWriter` qualifies; plaintext
    still in the session's own buffer is taken over by `Yamux.__init__`.
    """
    from libp2p.security.noise.io import NoiseTransportReadWriter
    from libp2p.security.secure_session import SecureSession

    if type(secured) is not SecureSession:
        return None
    transport = secured.conn
    if type(transport) is not NoiseTransportReadWriter:
        return None
    raw = getattr(transport.read_writer, "read_write_closer", None)
    if raw is None:
        return None
    return raw, transport.noise_state


class YamuxStream(IMuxedStream):
    """One stream. The connection's reading task fills it; its users drain it."""

    def __init__(self, conn: Yamux, stream_id: int) -> None:
        self.muxed_conn = conn
        self.conn = conn
        self.stream_id = stream_id
        self._buffer = bytearray()
        self._offset = 0  # bytes of _buffer already read
        self._reads_without_yield = 0
        self._readable = trio.Event()
        self._writable = trio.Event()
        # Free, taken without a scheduling round (one write per gossip frame per peer).
        self._write_lock = QuickLock()
        self._send_window = INITIAL_WINDOW
        self._recv_window = INITIAL_WINDOW  # what the peer may still send
        self._unacked = 0  # bytes read and not yet credited back
        self.recv_closed = False  # the peer's FIN (or a reset)
        self.send_closed = False  # our FIN (or a reset)
        self.reset_received = False  # a reset either way, or the connection's end
        self._announce = b""  # our SYN or ACK until it goes with the stream's first frame
        # Takes data as it arrives, from the reading task, instead of the buffer (sink).
        self._sink: Callable[[bytes | memoryview], bool] | None = None

    # -- fed by the connection's reading task ------------------------------------

    def _on_data(self, data: bytes | memoryview) -> None:
        if len(data) > self._recv_window:
            raise ProtocolError(
                f"stream {self.stream_id}: peer sent {len(data)} bytes into a "
                f"window of {self._recv_window}"
            )
        self._recv_window -= len(data)
        take = self._sink
        if take is not None:
            if not take(data):
                self._sink = None  # what follows buffers for `read`, not credited
                self._readable.set()
            self._credit_now(len(data))
            return
        self._buffer += data
        self._readable.set()

    def _on_window(self, delta: int) -> None:
        self._send_window += delta
        self._writable.set()

    def _on_fin(self) -> None:
        self.recv_closed = True
        self._readable.set()

    def _on_reset(self) -> None:
        self.reset_received = True
        self.recv_closed = True
        self.send_closed = True
        self._readable.set()
        self._writable.set()

    @property
    def closed(self) -> bool:
        return self.recv_closed and self.send_closed

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return len(self._buffer) - self._offset

    # -- IMuxedStream ---------------------------------------------------------------

    async def read(self, n: int | None = -1) -> bytes:
        if n == 0:
            return b""
        if self._offset < len(self._buffer):
            # Data is there: no need to wait, but let others run (and cancellation
            # reach us) now and then, so a loop of small reads cannot hog the loop.
            self._reads_without_yield += 1
            if self._reads_without_yield >= YIELD_EVERY:
                self._reads_without_yield = 0
                await trio.lowlevel.checkpoint()
        while self._offset == len(self._buffer):
            if self.reset_received:
                raise MuxedStreamReset("Stream was reset")
            if self.recv_closed:
                raise MuxedStreamEOF("Stream is closed for receiving")
            if self._announce:  # the peer may wait for it before it sends more
                try:
                    await self.conn._send(b"", self)
                except MuxedConnUnavailable:
                    # Over: the reading task ends the stream. Trying again would spin
                    # (the send fails before any checkpoint) and starve that task.
                    self._announce = b""
                continue
            await self._readable.wait()
            self._readable = trio.Event()
            self._reads_without_yield = 0
        buffer, start = self._buffer, self._offset
        if n is None or n < 0 or n >= len(buffer) - start:
            with memoryview(buffer) as view:
                data = bytes(view[start:])
            buffer.clear()
            self._offset = 0
        else:
            # Small reads (gossipsub reads its length prefixes a byte at a time) move
            # an offset; the buffer is compacted only once most of it is consumed.
            end = start + n
            with memoryview(buffer) as view:
                data = bytes(view[start:end])
            if end >= COMPACT_AT and end * 2 >= len(buffer):
                del buffer[:end]
                end = 0
            self._offset = end
        await self._credit(len(data))
        return data

    def sink(self, take: Callable[[bytes | memoryview], bool]) -> bool:
        """Hand what arrives to `take`, in the connection's reading task, instead of
        buffering it for `read`: a reader that only splits the bytes into messages
        for another task's queue saves its own wake-up on every frame.

        `take` must consume all it is given at once (a view valid only during the
        call). It returns False to stop: what arrives afterwards buffers for `read`,
        and the peer's window is credited only as `read` takes it, so a consumer that
        falls behind pushes back on the peer as a reader does. Data `take` consumed is
        credited at once. Not installed (False) while data waits in the buffer, while
        our ACK has not gone (`read` sends it), or once the peer closed its side:
        read first. `sink_done` waits for the end; `unsink` removes it."""
        if self._offset < len(self._buffer) or self._announce or self.recv_closed:
            return False
        self._sink = take
        return True

    async def sink_done(self) -> None:
        """Wait until the sink stopped or the peer closed or reset the stream."""
        while self._sink is not None and not self.recv_closed:
            await self._readable.wait()
            self._readable = trio.Event()
        self._sink = None

    def unsink(self) -> None:
        """Stop handing data to the sink (its task is gone): it buffers again."""
        self._sink = None

    def _owed(self, consumed: int) -> int:
        """Count `consumed` bytes as taken; the window to give the peer back now (once
        half of ours is taken), else 0."""
        self._unacked += consumed
        window = self.conn.window
        if self._unacked < window // 2 or self.recv_closed:
            return 0
        delta = (window - self._recv_window) - (len(self._buffer) - self._offset)
        self._unacked = 0
        if delta <= 0:
            return 0
        self._recv_window += delta
        return delta

    def _credit_now(self, consumed: int) -> None:
        """`_credit` from the reading task: the update is queued, never waited for."""
        if delta := self._owed(consumed):
            self.conn._queue(header(TYPE_WINDOW_UPDATE, 0, self.stream_id, delta))

    async def _credit(self, consumed: int) -> None:
        """Give the peer back the window it used once half of ours is read."""
        delta = self._owed(consumed)
        if not delta:
            return
        try:
            await self.conn._send(header(TYPE_WINDOW_UPDATE, 0, self.stream_id, delta), self)
        except MuxedConnUnavailable:
            pass  # the connection is gone: the data was read all the same

    def write_nowait(self, data: bytes) -> bool:
        """Send data now if that needs no wait at all; False (nothing sent) if it would
        wait (another write in progress, too little send window, a full send buffer)
        or cannot go (closed, reset): then `write` does it, or raises.

        For a task that must not wait on one peer, as the gossip router's, which hands
        each peer its frames this way and leaves to that peer's writer only what does
        not go at once."""
        size = len(data)
        if (self.reset_received or self.send_closed or self._write_lock.locked()
                or size > self._send_window or size > WRITE_BATCH
                or not self.conn._can_send_now()):
            return False
        view = memoryview(data)
        frames: list[bytes | memoryview] = []
        for start in range(0, size, MAX_FRAME_PAYLOAD):
            body = view[start : start + MAX_FRAME_PAYLOAD]
            frames.append(header(TYPE_DATA, 0, self.stream_id, len(body)))
            frames.append(body)
        try:
            self.conn._send_nowait(self._announced(b"".join(frames)))
        except MuxedConnUnavailable:
            return False
        self._send_window -= size
        return True

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        async with self._write_lock:
            sent = 0
            while sent < len(view):
                if self.reset_received:
                    raise MuxedStreamReset("Stream was reset")
                if self.send_closed:
                    raise MuxedStreamClosed("Stream is closed for sending")
                if self._send_window <= 0:
                    self._writable = trio.Event()
                    await self._writable.wait()
                    continue
                size = min(self._send_window, len(view) - sent, WRITE_BATCH)
                frames: list[bytes | memoryview] = []
                for start in range(sent, sent + size, MAX_FRAME_PAYLOAD):
                    body = view[start : min(start + MAX_FRAME_PAYLOAD, sent + size)]
                    frames.append(header(TYPE_DATA, 0, self.stream_id, len(body)))
                    frames.append(body)
                self._send_window -= size
                try:
                    await self.conn._send(b"".join(frames), self)
                except MuxedConnUnavailable as error:
                    raise MuxedStreamReset("Connection closed") from error
                sent += size

    async def close(self) -> None:
        """Half-close: our FIN. Reading what the peer still sends goes on."""
        if self.send_closed:
            return
        self.send_closed = True
        self._writable.set()
        try:
            await self.conn._send(header(TYPE_WINDOW_UPDATE, FLAG_FIN, self.stream_id, 0), self)
        except MuxedConnUnavailable:
            pass
        self.conn._forget_if_done(self)

    async def reset(self) -> None:
        # Nothing left to tell the peer, or it never heard of the stream (its SYN
        # did not go out); an ACK not sent yet need not go before the reset.
        finished = (self.reset_received or self.closed
                    or (bool(self._announce) and self.conn._opened_here(self)))
        self._announce = b""
        self._on_reset()
        self.conn._forget_if_done(self)
        if finished:
            return
        try:
            await self.conn._send(header(TYPE_WINDOW_UPDATE, FLAG_RST, self.stream_id, 0))
        except MuxedConnUnavailable:
            pass

    def _announced(self, frames: bytes) -> bytes:
        """frames, after our SYN or ACK if it has not gone yet (then it goes now)."""
        if not self._announce:
            return frames
        announce, self._announce = self._announce, b""
        return announce + frames

    def set_deadline(self, ttl: int) -> None:
        raise NotImplementedError("yamux streams have no deadlines; use trio timeouts")

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.conn.get_remote_address()

    async def __aenter__(self) -> YamuxStream:
        return self


T = TypeVar("T")


class Sink(Generic[T]):
    """What a `feed_sink` consumer derives from.

    - `take` runs in the connection's reading task, so a bug met in `_take` must not
      end the connection. It is kept in `failure` (and nothing more is taken), for the
      stream's own task to raise.
    - `_take` hands what it cuts out to the consumer's queue with `_queue`. What finds
      the queue full waits in `backlog`, in order, with everything after it; `_take`
      then returns False, the stream stops sinking, and the stream's own task sends
      the backlog with awaited sends (`feed_sink`'s `catch_up`), so the peer waits as
      it would for a slow reader.
    """

    failure: Exception | None = None

    def __init__(self) -> None:
        self.backlog: deque[T] = deque()

    def take(self, data: bytes | memoryview) -> bool:
        """`_take`, or False once it raised (see `failure`)."""
        if self.failure is not None:
            return False
        try:
            return self._take(data)
        except Exception as exc:
            self.failure = exc
            return False

    def _take(self, data: bytes | memoryview) -> bool:
        """Consume data (a view valid only during the call); False to stop sinking."""
        raise NotImplementedError

    def _queue(self, send_nowait: Callable[[T], None] | None, item: T) -> bool:
        """Hand `item` to the consumer's queue now, or keep it in `backlog` behind what
        waits there already; False if the consumer is gone (None: never started)."""
        if self.backlog:
            self.backlog.append(item)
            return True
        if send_nowait is None:
            return False
        try:
            send_nowait(item)
        except trio.WouldBlock:
            self.backlog.append(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True


async def feed_sink(stream: YamuxStream, take: Callable[[bytes | memoryview], bool],
                    catch_up: Callable[[], Awaitable[bool]], read_size: int) -> None:
    """Hand everything that arrives on `stream` to `take`, until the stream ends (the
    peer's FIN or a reset): through `stream.sink` while `take` keeps up, by reads
    (`take` given each chunk) while what it returned False for waits.

    For a reader that only cuts the bytes into messages for another task's queue:
    before each sink or read, `catch_up()` sends what `take` could not queue at once
    (its backlog), and returns False to stop early (the stream broke a rule, the
    consumer is gone). The caller tells a reset from a FIN by `reset_received`."""
    try:
        while await catch_up():
            if stream.sink(take):
                await stream.sink_done()
                if stream.recv_closed and not stream.buffered:
                    return
                continue
            try:
                chunk = await stream.read(read_size)
            except MuxedStreamEOF:
                return
            if not chunk:
                return
            take(chunk)
    finally:
        stream.unsink()


class Yamux(IMuxedConn):
    """One yamux session over one secure connection."""

    # Streams the peer may hold open (None: MAX_INBOUND_STREAMS), and what to call
    # when one more is reset for it; set per host through `configured`.
    max_inbound_streams: int | None = None
    on_stream_refused: Callable[[], None] | None = None
    # What each stream may have in flight to us (None: RECEIVE_WINDOW).
    receive_window: int | None = None

    def __init__(
        self,
        secured_conn: ISecureConn,
        peer_id: ID,
        is_initiator: bool | None = None,
        on_close: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.secured_conn = secured_conn
        self.peer_id = peer_id
        self.on_close = on_close
        self._initiator = secured_conn.is_initiator if is_initiator is None else is_initiator
        self._next_id = 1 if self._initiator else 2
        self.streams: dict[int, YamuxStream] = {}
        self.inbound_open = 0  # streams in `streams` that the peer opened
        self.streams_refused = 0  # inbound streams reset at MAX_INBOUND_STREAMS
        self._accept_send, self._accept_receive = trio.open_memory_channel[YamuxStream](
            ACCEPT_BACKLOG
        )
        # The send buffer, drained by the writing task (`_write_loop`).
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._out_ready = trio.Event()  # set when _out has something
        self._drained = trio.Event()  # set when the writing task takes what is queued
        self._idle = trio.Event()  # set when everything queued is written
        self._idle.set()
        self._writer_running = False
        self._write_error: Exception | None = None
        # A direct send's sealed bytes that the socket did not take, and whether the
        # writing task is in a send: while either holds, frames queue for that task.
        self._rest: bytes | memoryview = b""
        self._loop_sending = False
        self._connection_scope: trio.CancelScope | None = None
        self.event_started = trio.Event()
        self.event_closed = trio.Event()
        self._closing = False  # no new streams either way
        self._shutting_down = False
        self.keepalive_s = KEEPALIVE_S
        self.keepalive_timeout_s = KEEPALIVE_TIMEOUT_S
        self._ping_id = 0
        self._pong = trio.Event()
        self.rtt_s = 0.0  # from the last keepalive ping
        self._created_at = trio.current_time()
        noise = _noise_parts(secured_conn)
        self._reader: _NoiseReader | _PlainReader
        self._writer: _NoiseWriter | _PlainWriter
        self._pending = b""
        # The writer that callers may seal and send with themselves (Noise over TCP).
        self._direct: _NoiseWriter | None = None
        if noise is not None:
            raw, state = noise
            self._reader, self._writer = _NoiseReader(raw, state), _NoiseWriter(raw, state)
            if self._writer.direct:
                self._direct = self._writer
            # Plaintext that multistream-select left in the session's buffer.
            self._pending = cast(Any, secured_conn)._drain(None)
        else:
            self._reader, self._writer = _PlainReader(secured_conn), _PlainWriter(secured_conn)

    # -- IMuxedConn -----------------------------------------------------------------

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def is_established(self) -> bool:
        return self.event_started.is_set() and not self._closing

    @property
    def is_closed(self) -> bool:
        return self.event_closed.is_set()

    @property
    def window(self) -> int:
        """What each stream may have in flight to us."""
        return RECEIVE_WINDOW if self.receive_window is None else self.receive_window

    def get_transport_addresses(self) -> list[multiaddr.Multiaddr]:
        return self.secured_conn.get_transport_addresses()

    def get_connection_type(self) -> ConnectionType:
        return self.secured_conn.get_connection_type()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.secured_conn.get_remote_address()

    async def start(self) -> None:
        """Read and dispatch frames until the connection ends (the swarm runs this).

        Three tasks: this one reads; `_write_loop` owns the socket's sending side;
        `_keepalive` pings. The reading task never waits on the sending side (the
        frames it answers with only join the send buffer), so two peers both busy
        writing cannot deadlock each other's readers."""
        self.event_started.set()
        reason = GO_AWAY_NORMAL
        async with trio.open_nursery() as nursery:
            self._connection_scope = nursery.cancel_scope
            self._writer_running = True
            nursery.start_soon(self._write_loop, nursery.cancel_scope)
            nursery.start_soon(self._keepalive, nursery.cancel_scope)
            try:
                await self._read_loop()
            except ProtocolError as error:
                logger.info("yamux: %s broke the protocol: %s", self.peer_id, error)
                reason = GO_AWAY_PROTOCOL_ERROR
            except (trio.ClosedResourceError, trio.BrokenResourceError, MuxedConnUnavailable):
                pass
            except Exception as error:  # the socket or Noise failed: the connection is over
                logger.debug("yamux: connection to %s ended: %r", self.peer_id, error)
            nursery.cancel_scope.cancel()
        await self._shutdown(reason)

    async def open_stream(self) -> YamuxStream:
        if self._closing:
            raise MuxedStreamError("Connection is closed")
        stream_id = self._next_id
        self._next_id += 2
        stream = YamuxStream(self, stream_id)
        stream._recv_window = self.window
        self.streams[stream_id] = stream
        if self.event_closed.is_set() or self._write_error is not None:
            self.streams.pop(stream_id, None)
            raise MuxedStreamError("Connection is closed")
        # Sent with the stream's first frame (see the module's rules).
        stream._announce = header(TYPE_WINDOW_UPDATE, FLAG_SYN, stream_id,
                                  self.window - INITIAL_WINDOW)
        await trio.lowlevel.checkpoint_if_cancelled()
        return stream

    async def accept_stream(self) -> IMuxedStream:
        try:
            return await self._accept_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as error:
            raise MuxedConnUnavailable("Connection closed") from error

    async def close(self) -> None:
        await self._shutdown(GO_AWAY_NORMAL)

    # -- writing --------------------------------------------------------------------

    async def _send(self, data: bytes, stream: YamuxStream | None = None) -> None:
        """Send frames, in the order of the calls; `stream`'s SYN or ACK first if it
        has not gone yet (taken when the frames are queued, so nothing of the stream's
        can pass it). Empty data sends that alone, or nothing.

        When nothing is queued or being sent, the caller's task seals and hands the
        frames to the kernel itself (over TCP and Noise): no hop through the writing
        task, no scheduling round. Otherwise they queue for the writing task, and
        frames queued while it is in a `send` go out together in the next one: under
        load one syscall and one Noise message carry many frames. Either way this
        returns once the bytes are queued or sent, as a socket write returns once the
        kernel has them; it waits only while SEND_BUFFER bytes are already queued.
        MuxedConnUnavailable once the connection is closed or its socket failed.
        """
        while True:
            if self.event_closed.is_set() or self._write_error is not None:
                raise MuxedConnUnavailable(f"Connection closed ({self._write_error!r})")
            if self._out_bytes < SEND_BUFFER:
                break
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()
        if stream is not None:
            data = stream._announced(data)
        if data:
            self._send_nowait(data)
        # Cancellation still reaches the caller here, but no scheduling round: the
        # writing task runs once the caller next waits, and takes everything queued
        # by then in one send.
        await trio.lowlevel.checkpoint_if_cancelled()

    def _can_send_now(self) -> bool:
        """True if `_send_nowait` may be called: open, and the send buffer not full."""
        return (not self.event_closed.is_set() and self._write_error is None
                and self._out_bytes < SEND_BUFFER)

    def _send_nowait(self, data: bytes) -> None:
        """Send or queue frames, never waiting (the caller checked `_can_send_now`)."""
        writer = self._direct
        if (writer is not None and self._writer_running and not self._out and not self._rest
                and not self._loop_sending):
            self._send_direct(writer, data)
        else:
            self._enqueue(data)

    def _send_direct(self, writer: _NoiseWriter, data: bytes) -> None:
        """Seal and send from the caller's task; what the socket leaves, the writing
        task sends before anything queued after it."""
        wire = writer.seal(data)
        try:
            sent = writer.send_now(wire)
        except OSError as error:
            self._write_failed(error)
            raise MuxedConnUnavailable(f"Connection closed ({error!r})") from error
        if sent < len(wire):
            self._rest = memoryview(wire)[sent:]
            self._out_ready.set()
            if self._idle.is_set():
                self._idle = trio.Event()

    def _write_failed(self, error: Exception) -> None:
        """The socket failed: the connection is over."""
        self._write_error = error
        self._drained.set()
        self._idle.set()
        if self._connection_scope is not None:
            self._connection_scope.cancel()

    def _enqueue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        self._out_ready.set()
        if self._idle.is_set():
            self._idle = trio.Event()

    def _queue(self, frame: bytes) -> None:
        """A control frame from the reading task: queued, never waited for."""
        if self._out_bytes >= SEND_BUFFER + MAX_CONTROL_BYTES:
            raise ProtocolError("it does not read the answers to its own frames")
        self._enqueue(frame)

    async def _write_loop(self, connection: trio.CancelScope) -> None:
        """The task that sends what queued while the socket was busy, at once."""
        try:
            while True:
                if self._rest and self._direct is not None:  # only a direct send leaves one
                    rest, self._rest = self._rest, b""
                    self._loop_sending = True
                    await self._direct.send_rest(rest)
                    self._loop_sending = False
                    continue
                if not self._out:
                    self._idle.set()
                    await self._out_ready.wait()
                    self._out_ready = trio.Event()
                    continue
                frames, self._out, self._out_bytes = self._out, [], 0
                self._drained.set()
                self._loop_sending = True
                await self._writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
                self._loop_sending = False
        except Exception as error:  # the socket failed: the connection is over
            self._write_failed(error)
            connection.cancel()
        finally:
            self._writer_running = False
            self._idle.set()  # a `_shutdown` waiting for the queue to drain goes on

    async def _keepalive(self, connection: trio.CancelScope) -> None:
        """Ping the peer now and then; end the connection if it stops answering.

        A peer that vanished without a FIN (power cut, dropped route) would
        otherwise look connected until a write fails, which for a quiet room is
        never, and redial would not start."""
        try:
            while True:
                # On the daemon's shared grid (core/ticks.py): a quiet daemon pings
                # all of its connections in one wake-up, not one each.
                await timers.sleep_until(ticks.next_at(trio.current_time(), self.keepalive_s))
                self._ping_id = (self._ping_id + 1) & 0xFFFFFFFF
                self._pong = trio.Event()
                sent = trio.current_time()
                await self._send(header(TYPE_PING, FLAG_SYN, 0, self._ping_id))
                with trio.move_on_after(self.keepalive_timeout_s):
                    await self._pong.wait()
                if not self._pong.is_set():
                    logger.info(
                        "yamux: %s did not answer a ping in %g s; closing",
                        self.peer_id,
                        self.keepalive_timeout_s,
                    )
                    connection.cancel()
                    return
                self.rtt_s = trio.current_time() - sent
        except MuxedConnUnavailable:
            pass  # the reading task sees the end too

    # -- reading (the task in start() owns everything below) --------------------------

    async def _read_loop(self) -> None:
        plain = bytearray(self._pending)
        self._pending = b""
        while True:
            pos = self._dispatch(plain)
            if pos:
                del plain[:pos]
            data = await self._reader.read()
            if not data:
                return  # EOF
            plain += data

    def _dispatch(self, plain: bytearray) -> int:
        """Handle every whole frame in `plain`; return how many bytes they took."""
        pos, end = 0, len(plain)
        # Data frames go to their streams as views into `plain` (each stream copies
        # what it is handed into its own buffer at once), not as copies of copies.
        with memoryview(plain) as view:
            while end - pos >= HEADER_SIZE:
                version, kind, flags, stream_id, length = HEADER.unpack_from(plain, pos)
                if version != VERSION:
                    raise ProtocolError(f"version {version}")
                if kind == TYPE_DATA:
                    if length > self.window:
                        raise ProtocolError(f"a {length}-byte data frame")
                    if end - pos - HEADER_SIZE < length:
                        break
                    with view[pos + HEADER_SIZE : pos + HEADER_SIZE + length] as body:
                        self._on_stream_frame(flags, stream_id, body, 0)
                    pos += HEADER_SIZE + length
                elif kind == TYPE_WINDOW_UPDATE:
                    pos += HEADER_SIZE
                    self._on_stream_frame(flags, stream_id, b"", length)
                elif kind == TYPE_PING:
                    pos += HEADER_SIZE
                    if flags & FLAG_SYN:
                        self._queue(header(TYPE_PING, FLAG_ACK, 0, length))
                    elif flags & FLAG_ACK and length == self._ping_id:
                        self._pong.set()
                elif kind == TYPE_GO_AWAY:
                    pos += HEADER_SIZE
                    # No new streams; the ones open finish unless the peer hangs up.
                    self._closing = True
                    self._accept_send.close()
                else:
                    raise ProtocolError(f"frame type {kind}")
        return pos

    def _on_stream_frame(self, flags: int, stream_id: int, body: bytes | memoryview,
                         delta: int) -> None:
        stream = self.streams.get(stream_id)
        if flags & FLAG_SYN:
            if stream is not None or stream_id == 0 or stream_id % 2 == self._next_id % 2:
                raise ProtocolError(f"SYN for stream {stream_id}")
            stream = self._incoming(stream_id)
            if stream is None:
                return
        if stream is None:
            return  # a frame for a stream we forgot (we reset it): go-yamux drops it too
        if body:
            stream._on_data(body)
        if delta:
            stream._on_window(delta)
        if flags & FLAG_RST:
            stream._on_reset()
        elif flags & FLAG_FIN:
            stream._on_fin()
        self._forget_if_done(stream)

    def _incoming(self, stream_id: int) -> YamuxStream | None:
        """A stream the peer opened: ACK it with our window, or reset it."""
        if self._closing:
            self._queue(header(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
            return None
        limit = MAX_INBOUND_STREAMS if self.max_inbound_streams is None else (
            self.max_inbound_streams)
        if self.inbound_open >= limit:
            self.streams_refused += 1
            if self.streams_refused == 1:
                logger.info("yamux: %s holds %d open streams; resetting new ones",
                            self.peer_id, limit)
            if self.on_stream_refused is not None:
                self.on_stream_refused()
            self._queue(header(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
            return None
        stream = YamuxStream(self, stream_id)
        stream._recv_window = self.window
        try:
            self._accept_send.send_nowait(stream)
        except trio.WouldBlock:
            logger.info(
                "yamux: %s opened more than %d unaccepted streams", self.peer_id, ACCEPT_BACKLOG
            )
            self._queue(header(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
            return None
        self.streams[stream_id] = stream
        self.inbound_open += 1
        # Sent with the stream's first frame (see the module's rules).
        stream._announce = header(TYPE_WINDOW_UPDATE, FLAG_ACK, stream_id,
                                  self.window - INITIAL_WINDOW)
        return stream

    def _opened_here(self, stream: YamuxStream) -> bool:
        return stream.stream_id % 2 == self._next_id % 2

    def _forget_if_done(self, stream: YamuxStream) -> None:
        """Drop a stream from the table once both sides are done with it.

        Its object lives on with its buffer for whoever still holds it."""
        if stream.closed and self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            if not self._opened_here(stream):
                self.inbound_open -= 1

    # -- the end --------------------------------------------------------------------

    async def _write_rest_quietly(self) -> None:
        """Send what the writing task left when it stopped (its unsent tail first, in
        order); the peer may be gone already, and that is no error here."""
        rest, self._rest = self._rest, b""
        frames, self._out, self._out_bytes = self._out, [], 0
        try:
            if rest and self._direct is not None:
                await self._direct.send_rest(rest)
            await self._writer.write(b"".join(frames))
        except Exception:
            pass

    async def _shutdown(self, reason: int) -> None:
        if self._shutting_down:
            await self.event_closed.wait()
            return
        self._shutting_down = True
        self._closing = True
        with trio.CancelScope(shield=True):
            # GO_AWAY after whatever is still queued, then the socket is closed.
            goaway = header(TYPE_GO_AWAY, 0, 0, reason)
            with trio.move_on_after(1):
                if self._write_error is None:
                    self._enqueue(goaway)
                    if self._writer_running:
                        # The writing task sends it and goes idle, or it was cancelled
                        # (the connection is ending) and says so by setting _idle as
                        # it stops; either way this does not wait out the timeout.
                        await self._idle.wait()
                    if self._out and not self._writer_running and self._write_error is None:
                        await self._write_rest_quietly()
            self._out.clear()
            self.event_closed.set()
            self._drained.set()
            self._accept_send.close()
            for stream in list(self.streams.values()):
                stream._on_reset()
            self.streams.clear()
            self.inbound_open = 0
            try:
                await self.secured_conn.close()
            except Exception as error:
                logger.debug("yamux: closing the connection to %s: %r", self.peer_id, error)
            if self.on_close is not None:
                try:
                    await self.on_close()
                except Exception:
                    logger.exception("yamux: on_close for %s failed", self.peer_id)


def configured(max_inbound_streams: int, on_stream_refused: Callable[[], None],
               receive_window: int = RECEIVE_WINDOW) -> type[Yamux]:
    """A Yamux class for one host: at most `max_inbound_streams` streams the peer opened
    held at once on a connection (config `max_streams_per_connection`), and
    `on_stream_refused` called for each one reset past it (counted in `status`); each
    stream may have `receive_window` bytes in flight to us (config
    `stream_receive_window`, at least the spec's initial 256 KiB)."""
    if receive_window < INITIAL_WINDOW:
        raise ValueError(f"a receive window below {INITIAL_WINDOW} breaks the spec")
    return type("ConfiguredYamux", (Yamux,), {
        "max_inbound_streams": max_inbound_streams,
        "on_stream_refused": staticmethod(on_stream_refused),
        "receive_window": receive_window,
    })
