"""Our GossipSub router on hostile bytes: the RPC codec (core/gossipsub/rpc.py) raises
RpcError and nothing else, what it decodes re-encodes to a frame that decodes the
same, and a router fed junk frames stays whole (core/gossipsub/router.py)."""

from __future__ import annotations

import random

from hypothesis import given

from gossipchat.daemon.core.gossipsub import rpc
from gossipchat.daemon.core.gossipsub.router import Router
from gossipchat.daemon.core.scoring import DEFAULT
from tests.fuzz.helpers import fuzz_settings, hostile

SEEDS = (
    rpc.encode_rpc(rpc.RPC(
        subscriptions=(rpc.SubOpt(True, "/gossipchat/1/room/a"),),
        publish=(rpc.Message(b"\x00\x24\x08\x01\x12\x20" + bytes(32), b"data",
                             bytes(8), ("/gossipchat/1/room/a",), bytes(64), b"k"),),
        control=rpc.Control(ihave=(rpc.IHave("t", (b"id1", b"id2")),), iwant=(b"id3",),
                            graft=("t",), prune=(rpc.Prune("t", (rpc.PxPeer(b"p"),), 60),)))),
    rpc.encode_rpc(rpc.RPC(subscriptions=(rpc.SubOpt(False, "x"),))),
    rpc.encode_rpc(rpc.RPC(publish=tuple(
        rpc.Message(b"\x00\x24\x08\x01\x12\x20" + bytes(32), b"d" * size,
                    seqno.to_bytes(8, "big"), ("t",), bytes(64))
        for seqno, size in ((1, 200), (2, 3), (3, 20))))),
)


def _decode(data: bytes) -> rpc.RPC | None:
    try:
        return rpc.decode_rpc(data)
    except rpc.RpcError:
        return None


@fuzz_settings()
@given(hostile(SEEDS, max_size=1024))
def test_decode_raises_only_rpc_error_and_round_trips(data: bytes) -> None:
    decoded = _decode(data)
    if decoded is not None:
        assert rpc.decode_rpc(rpc.encode_rpc(decoded)) == decoded


@fuzz_settings()
@given(hostile(SEEDS, max_size=1024))
def test_skipping_seen_ids_leaves_out_only_messages_with_those_ids(data: bytes) -> None:
    """With `seen`, a frame decodes to what it decodes to without, less messages whose
    id is seen; a broken message with a seen id may be skipped unread, never more."""
    full = _decode(data)
    # Every other message's id: the rest must come through.
    seen = {m.msg_id for m in full.publish[::2]} if full is not None else {b"\x00" * 46}
    try:
        partial = rpc.decode_rpc(data, seen=seen)
    except rpc.RpcError:
        assert full is None
        return
    if full is None:
        assert partial.known
        assert all(msg_id in seen for msg_id in partial.known)
        return
    assert partial.subscriptions == full.subscriptions
    assert partial.control == full.control
    assert len(partial.publish) + len(partial.known) == len(full.publish)
    left_out = list(full.publish)
    for msg in partial.publish:  # in order, each once
        del left_out[left_out.index(msg)]
    assert all(msg.msg_id in seen for msg in left_out)
    assert list(partial.known) == [msg.msg_id for msg in left_out]  # listed, in order


@fuzz_settings(0.3)
@given(hostile(SEEDS, max_size=1024))
def test_a_router_takes_junk_frames_without_failing(data: bytes) -> None:
    router = Router(peer_bytes=b"\x00\x24\x08\x01\x12\x20" + bytes([1]) * 32,
                    public_key=bytes([1]) * 32, sign=lambda d: bytes(64), scoring=DEFAULT,
                    rng=random.Random(0))
    router.join("/gossipchat/1/room/a", 0.0)
    router.join("t", 0.0)
    router.add_peer("peer", b"\x00\x24\x08\x01\x12\x20" + bytes([2]) * 32)
    assert router.handle_rpc("peer", data, 1.0) == []  # nothing here is validly signed
    router.heartbeat(2.0)
