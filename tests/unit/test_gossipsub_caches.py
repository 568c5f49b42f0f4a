"""core/gossipsub: the message cache, the seen cache, PRUNE backoff and the outbox."""

from __future__ import annotations

from libp2p.pubsub.pb import rpc_pb2

from gossipchat.daemon.core.gossipsub import rpc
from gossipchat.daemon.core.gossipsub.backoff import Backoff
from gossipchat.daemon.core.gossipsub.mcache import MessageCache
from gossipchat.daemon.core.gossipsub.outbox import Outbox
from gossipchat.daemon.core.gossipsub.seen import SeenCache


def test_mcache_gossips_recent_windows_and_forgets_old_ones() -> None:
    cache = MessageCache(history=3, gossip=2)
    cache.put(b"1", "t", b"w1")
    cache.shift()
    cache.put(b"2", "t", b"w2")
    cache.put(b"3", "u", b"w3")
    assert cache.gossip_ids("t") == [b"2", b"1"]
    cache.shift()
    assert cache.gossip_ids("t") == [b"2"]
    got = cache.get(b"1")
    assert got is not None
    assert got.wire == b"w1"
    cache.shift()
    assert cache.get(b"1") is None
    assert cache.get(b"2") is not None


def test_seen_cache_expires_by_time() -> None:
    seen = SeenCache(ttl=10)
    assert seen.add(b"a", now=0)
    assert not seen.add(b"a", now=1)
    seen.add(b"b", now=5)
    seen.expire(now=10.5)
    assert b"a" not in seen
    assert b"b" in seen


def test_backoff_holds_the_longer_of_two_and_expires() -> None:
    backoff = Backoff()
    backoff.add("t", "p", 10, now=0)
    backoff.add("t", "p", 1, now=0)
    assert backoff.active("t", "p", now=9)
    assert not backoff.active("t", "q", now=9)
    backoff.expire(now=11)
    assert not backoff.active("t", "p", now=9)


def _msg_field(i: int, size: int = 100) -> bytes:
    return rpc.message_field(rpc.Message(b"f", bytes([i % 256]) * size, i.to_bytes(8, "big"),
                                         ("t",)))


def test_outbox_merges_everything_queued_into_one_frame() -> None:
    box = Outbox()
    box.push_subscription(rpc.subscription_field(rpc.SubOpt(True, "t")))
    box.push_control(rpc.encode_control(rpc.Control(graft=("t",))))
    box.push_control(rpc.encode_control(rpc.Control(iwant=(b"x",))))
    for i in range(10):
        assert box.push_message(_msg_field(i))
    frame = box.take_frame()
    assert frame is not None
    assert box.take_frame() is None
    parsed = rpc_pb2.RPC.FromString(frame)
    assert len(parsed.publish) == 10
    assert len(parsed.subscriptions) == 1
    assert [g.topicID for g in parsed.control.graft] == ["t"]
    assert box.queued_bytes == 0
    assert box.frames == 1


def test_outbox_frames_stay_within_the_limit_and_lose_nothing() -> None:
    one = len(_msg_field(0, 1000))
    box = Outbox(max_frame=one * 3 + 10)
    for i in range(10):
        box.push_message(_msg_field(i, 1000))
    frames = []
    while (frame := box.take_frame()) is not None:
        assert len(frame) <= box.max_frame
        frames.append(rpc.decode_rpc(frame))
    assert [len(f.publish) for f in frames] == [3, 3, 3, 1]


def test_outbox_refuses_past_its_byte_bound_and_counts() -> None:
    one = len(_msg_field(0))
    box = Outbox(max_bytes=one * 2)
    assert box.has_room(one)
    assert box.push_message(_msg_field(0))
    assert box.push_message(_msg_field(1))
    assert not box.has_room(one)
    assert not box.push_message(_msg_field(2))
    assert box.refused == 1
    box.take_frame()
    assert box.has_room(one)


def test_outbox_withdraws_a_queued_message_by_id_and_sends_the_rest() -> None:
    box = Outbox()
    fields = [_msg_field(i) for i in range(3)]
    for i, field in enumerate(fields):
        assert box.push_message(field, f"id{i}".encode())
    assert box.withdraw(b"id1")
    assert not box.withdraw(b"id1")  # once
    assert not box.withdraw(b"unknown")
    assert box.queued_bytes == len(fields[0]) + len(fields[2])
    assert box.withdrawn == 1
    frame = box.take_frame()
    assert frame is not None
    assert [rpc.message_field(m) for m in rpc.decode_rpc(frame).publish] == [
        fields[0], fields[2]]
    assert not box.withdraw(b"id0")  # it has left
    assert box.queued_bytes == 0
    assert not box


def test_outbox_with_everything_withdrawn_is_empty_and_queues_anew() -> None:
    box = Outbox()
    assert box.push_message(_msg_field(0), b"a")
    assert box.push_message(_msg_field(1), b"b")
    assert box.withdraw(b"a")
    assert box.withdraw(b"b")
    assert not box
    assert box.take_frame() is None
    assert box.push_message(_msg_field(0), b"a")  # the same id may be queued again
    frame = box.take_frame()
    assert frame is not None
    assert len(rpc.decode_rpc(frame).publish) == 1


def test_outbox_queues_a_message_id_once_until_it_leaves() -> None:
    box = Outbox()
    assert box.push_message(_msg_field(0), b"a")
    assert box.push_message(_msg_field(0), b"a")  # queued already: not twice
    frame = box.take_frame()
    assert frame is not None
    assert len(rpc.decode_rpc(frame).publish) == 1
    assert box.push_message(_msg_field(0), b"a")  # gone: queued again
    frame = box.take_frame()
    assert frame is not None
    assert len(rpc.decode_rpc(frame).publish) == 1
