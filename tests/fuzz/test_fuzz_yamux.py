"""Yamux frames from a hostile peer: ProtocolError and nothing else, in bounded memory.

Frames are parsed inside the connection class (`Yamux._dispatch`), so a real `Yamux` is
built under trio over an in-memory secure connection and fed the peer's bytes as its
reading task would feed them: appended to a buffer, whole frames dispatched.
"""

from __future__ import annotations

import logging

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from libp2p.peer.id import ID

from gossipchat.daemon.adapters import yamux
from gossipchat.daemon.adapters.yamux import HEADER_SIZE, ProtocolError, Yamux
from tests.fuzz.helpers import corpus, fuzz_settings, hostile, mutated, peak_bytes

SEEDS = corpus("yamux")
PEER = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(32))


class _MemorySecureConn:
    """The part of ISecureConn that Yamux uses: the peer's bytes in, ours recorded."""

    is_initiator = True

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.written = bytearray()
        self.closed = False

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.written += data

    async def close(self) -> None:
        self.closed = True

    def get_remote_address(self) -> tuple[str, int] | None:
        return ("127.0.0.1", 4001)


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = zip([0, *cuts], [*cuts, len(data)], strict=True)
    return [data[a:b] for a, b in bounds if b > a]


def _dispatch_all(pieces: list[bytes]) -> None:
    """Feed pieces as `_read_loop` does; check the invariants after every piece."""

    async def main() -> None:
        conn = Yamux(_MemorySecureConn([]), PEER)  # type: ignore[arg-type]
        plain = bytearray()
        for piece in pieces:
            plain += piece
            try:
                pos = conn._dispatch(plain)
            except ProtocolError:
                return
            assert 0 <= pos <= len(plain)
            del plain[:pos]
            # What is left is one incomplete frame: a header, or a data frame whose
            # length was checked against the window before its body was awaited.
            assert len(plain) <= HEADER_SIZE + yamux.RECEIVE_WINDOW
            for stream in conn.streams.values():
                assert len(stream._buffer) <= yamux.RECEIVE_WINDOW
            assert conn._out_bytes <= yamux.SEND_BUFFER + yamux.MAX_CONTROL_BYTES + HEADER_SIZE

    trio.run(main)


@st.composite
def _session(draw: st.DrawFn) -> list[bytes]:
    frames = draw(st.lists(st.sampled_from(SEEDS) | mutated(SEEDS) | st.binary(max_size=24),
                           min_size=1, max_size=12))
    data = b"".join(frames)
    return _pieces(data, sorted(draw(st.lists(st.integers(0, len(data)), max_size=5))))


def test_seed_frames_dispatch() -> None:
    _dispatch_all(list(SEEDS))


@fuzz_settings()
@given(_session())
def test_dispatch_raises_only_protocol_error(pieces: list[bytes]) -> None:
    _dispatch_all(pieces)


@fuzz_settings()
@given(hostile(SEEDS, max_size=64))
def test_one_frame_raises_only_protocol_error(frame: bytes) -> None:
    _dispatch_all([frame])


class _Leaks(logging.Handler):
    """Records the debug line `Yamux.start` logs for an exception it did not expect."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "connection to" in record.getMessage() and "ended" in record.getMessage():
            self.records.append(record)


def _run_connection(pieces: list[bytes]) -> _MemorySecureConn:
    """A whole connection over the hostile bytes: it must end, and only as designed."""
    secured = _MemorySecureConn(pieces)
    logger = logging.getLogger(yamux.__name__)
    leaks = _Leaks()
    level = logger.level
    logger.addHandler(leaks)
    logger.setLevel(logging.DEBUG)
    try:
        async def main() -> None:
            conn = Yamux(secured, PEER)  # type: ignore[arg-type]
            await conn.start()
            assert conn.is_closed

        trio.run(main)
    finally:
        logger.removeHandler(leaks)
        logger.setLevel(level)
    # start() turns any other exception into a quiet end: it must not have needed to.
    assert not leaks.records, leaks.records[0].getMessage()
    assert secured.closed
    return secured


@fuzz_settings(scale=0.3)
@given(_session())
def test_a_hostile_connection_ends_with_go_away(pieces: list[bytes]) -> None:
    secured = _run_connection(pieces)
    go_away = secured.written[-HEADER_SIZE:]
    _, kind, _, _, reason = yamux.HEADER.unpack(bytes(go_away))
    assert kind == yamux.TYPE_GO_AWAY
    assert reason in (yamux.GO_AWAY_NORMAL, yamux.GO_AWAY_PROTOCOL_ERROR)


CLAIMS = {
    "data frame of 4 GiB - 1": yamux.header(yamux.TYPE_DATA, yamux.FLAG_SYN, 1, 2**32 - 1),
    "data frame over the window": yamux.header(yamux.TYPE_DATA, 0, 1,
                                               yamux.RECEIVE_WINDOW + 1),
    "window update of 4 GiB - 1": yamux.header(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 2,
                                               2**32 - 1) + yamux.header(yamux.TYPE_DATA, 0, 2,
                                                                         2**32 - 1),
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_claimed_lengths_are_not_allocated(name: str) -> None:
    secured, peak = peak_bytes(lambda: _run_connection([CLAIMS[name] + b"\x00" * 64]))
    assert isinstance(secured, _MemorySecureConn), secured
    assert secured.written.endswith(yamux.header(yamux.TYPE_GO_AWAY, 0, 0,
                                                 yamux.GO_AWAY_PROTOCOL_ERROR))
    assert peak < 1024 * 1024, f"{name}: peak {peak} bytes"
