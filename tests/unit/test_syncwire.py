"""Sync protocol frames: round trips, limits, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.daemon.core import syncwire
from gossipchat.daemon.core.syncwire import (
    Done,
    Envelopes,
    Hello,
    Push,
    Reconcile,
    Refuse,
    SyncWireError,
    Want,
    Welcome,
)

FRAMES = [
    Hello("lobby", 123), Hello("lobby", 123, 1_700_000_000_000), Welcome(0),
    Refuse("not in room"), Reconcile(b"\x01abc"),
    Push((b"e1", b"e2")), Want((b"\x00" * 32, b"\x01" * 32)), Envelopes((b"x",), last=False),
    Envelopes(()), Done(),
]


def _split(data: bytes) -> bytes:
    length = syncwire.read_length(data[:5])
    assert length is not None
    header = len(data) - length
    return data[header:]


@pytest.mark.parametrize("frame", FRAMES)
def test_round_trip(frame: syncwire.Frame) -> None:
    assert syncwire.decode(_split(syncwire.encode(frame))) == frame


def test_length_prefix() -> None:
    assert syncwire.read_length(b"") is None
    assert syncwire.read_length(b"\x80") is None
    assert syncwire.read_length(b"\x05") == 5
    assert syncwire.read_length(b"\x80\x01") == 128
    with pytest.raises(SyncWireError):
        syncwire.read_length(b"\x80\x00")  # not minimal
    with pytest.raises(SyncWireError):
        syncwire.read_length(b"\xff\xff\xff\x7f")  # over MAX_FRAME_BYTES


def test_hello_without_until_is_the_1_0_frame_and_until_0_is_refused() -> None:
    import cbor2

    assert _split(syncwire.encode(Hello("lobby", 5))) == cbor2.dumps([1, "lobby", 5])
    assert syncwire.decode(cbor2.dumps([1, "lobby", 5, 9])) == Hello("lobby", 5, 9)
    for bad in ([1, "lobby", 5, 0], [1, "lobby", 5, -1], [1, "lobby", 5, 9, 9]):
        with pytest.raises(SyncWireError):
            syncwire.decode(cbor2.dumps(bad))


def test_want_ids_must_be_32_bytes() -> None:
    import cbor2

    with pytest.raises(SyncWireError):
        syncwire.decode(cbor2.dumps([6, [b"short"]]))
    with pytest.raises(SyncWireError):
        syncwire.decode(cbor2.dumps([6, [b"\x00" * 32] * (syncwire.MAX_IDS_PER_WANT + 1)]))


def test_batches_respect_limits() -> None:
    wires = [b"x" * 100_000 for _ in range(12)]
    parts = syncwire.batches(wires)
    assert [w for p in parts for w in p] == wires
    assert all(sum(map(len, p)) <= syncwire.ENVELOPE_BATCH_BYTES for p in parts)
    small = syncwire.batches([b"y"] * 2000)
    assert all(len(p) <= syncwire.MAX_ENVELOPES_PER_FRAME for p in small)
    assert syncwire.batches([]) == []


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_sync_wire_error(data: bytes) -> None:
    try:
        syncwire.decode(data)
    except SyncWireError:
        pass
