"""core/gossipsub/rpc.py: the pubsub RPC codec against py-libp2p's own protobuf classes
(generated from the same rpc.proto), both ways, and exact frame sizes."""

from __future__ import annotations

import pytest
from libp2p.pubsub.pb import rpc_pb2

from gossipchat.daemon.core.gossipsub import rpc
from gossipchat.daemon.core.protobuf import len_field


def _reference() -> rpc_pb2.RPC:
    return rpc_pb2.RPC(
        subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid="a"),
                       rpc_pb2.RPC.SubOpts(subscribe=False, topicid="b")],
        publish=[rpc_pb2.Message(from_id=b"f" * 38, data=b"hello", seqno=b"\x00" * 7 + b"\x01",
                                 topicIDs=["a"], signature=b"s" * 64, key=b"k" * 36)],
        control=rpc_pb2.ControlMessage(
            ihave=[rpc_pb2.ControlIHave(topicID="a", messageIDs=[b"id1", b"id2"])],
            iwant=[rpc_pb2.ControlIWant(messageIDs=[b"id3"])],
            graft=[rpc_pb2.ControlGraft(topicID="a")],
            prune=[rpc_pb2.ControlPrune(topicID="b", backoff=60,
                                        peers=[rpc_pb2.PeerInfo(peerID=b"p" * 38)])]),
        senderRecord=b"ignored",
    )


def test_decodes_what_protobuf_encodes() -> None:
    got = rpc.decode_rpc(_reference().SerializeToString())
    assert got.subscriptions == (rpc.SubOpt(True, "a"), rpc.SubOpt(False, "b"))
    assert got.publish == (rpc.Message(b"f" * 38, b"hello", b"\x00" * 7 + b"\x01", ("a",),
                                       b"s" * 64, b"k" * 36),)
    assert got.control.ihave == (rpc.IHave("a", (b"id1", b"id2")),)
    assert got.control.iwant == (b"id3",)
    assert got.control.graft == ("a",)
    assert got.control.prune == (rpc.Prune("b", (rpc.PxPeer(b"p" * 38),), 60),)


def test_encodes_what_protobuf_decodes_byte_for_byte() -> None:
    reference = _reference()
    reference.ClearField("senderRecord")
    ours = rpc.encode_rpc(rpc.decode_rpc(reference.SerializeToString()))
    assert ours == reference.SerializeToString()
    assert rpc_pb2.RPC.FromString(ours) == reference


def test_signed_payload_is_the_message_without_signature_and_key() -> None:
    msg = rpc.Message(b"f", b"d", b"s", ("t",), b"sig", b"key")
    expected = rpc_pb2.Message(from_id=b"f", data=b"d", seqno=b"s", topicIDs=["t"])
    assert rpc.signed_payload(msg) == expected.SerializeToString()


@pytest.mark.parametrize("junk", [b"\x0a\xff", b"\x12\x05ab", b"\x0b", b"\x1a\x02\x0a\xff"])
def test_malformed_frames_raise_rpc_error(junk: bytes) -> None:
    with pytest.raises(rpc.RpcError):
        rpc.decode_rpc(junk)


def test_a_frame_is_the_concatenation_of_its_fields() -> None:
    msg = rpc.Message(b"f", b"d", b"s", ("t",))
    control = rpc.Control(graft=("t",))
    parts = [rpc.subscription_field(rpc.SubOpt(True, "t")), rpc.message_field(msg),
             rpc.control_field(control)]
    frame = b"".join(parts)
    assert rpc.decode_rpc(frame) == rpc.RPC((rpc.SubOpt(True, "t"),), (msg,), control)


def test_a_received_message_keeps_its_bytes_and_signed_prefix() -> None:
    reference = rpc_pb2.Message(from_id=b"f", data=b"d", seqno=b"s", topicIDs=["t"],
                                signature=b"x" * 64, key=b"k")
    raw = reference.SerializeToString()
    msg = rpc.decode_message(raw)
    assert msg.raw == raw
    unsigned = rpc_pb2.Message(from_id=b"f", data=b"d", seqno=b"s", topicIDs=["t"])
    assert rpc.signed_payload(msg) == unsigned.SerializeToString()
    assert rpc.message_field(msg) == rpc.message_field(rpc.Message(
        b"f", b"d", b"s", ("t",), b"x" * 64, b"k"))


def test_fields_out_of_order_fall_back_to_re_encoding() -> None:
    out_of_order = (rpc_pb2.Message(data=b"d").SerializeToString()
                    + rpc_pb2.Message(from_id=b"f").SerializeToString())
    msg = rpc.decode_message(out_of_order)
    assert msg.signed_len == -1
    assert rpc.signed_payload(msg) == rpc_pb2.Message(
        from_id=b"f", data=b"d").SerializeToString()
    with_unknown = rpc_pb2.Message(from_id=b"f").SerializeToString() + b"\x38\x01"  # field 7
    assert rpc.decode_message(with_unknown).signed_len == -1


def test_messages_whose_id_was_seen_are_listed_not_decoded() -> None:
    first = rpc.Message(b"f" * 38, b"d" * 300, (1).to_bytes(8, "big"), ("t",), b"s" * 64)
    second = rpc.Message(b"f" * 38, b"e" * 20, (2).to_bytes(8, "big"), ("t",), b"s" * 64)
    third = rpc.Message(b"g" * 38, b"x" * 20_000, (1).to_bytes(8, "big"), ("t",))
    frame = b"".join(rpc.message_field(m) for m in (first, second, third))
    seen = {first.msg_id, third.msg_id}
    got = rpc.decode_rpc(frame, seen=seen)
    # Data lengths of two bytes (the first) and three (the third, 20,000) alike.
    assert got.publish == (second,)
    assert got.known == (first.msg_id, third.msg_id)
    assert rpc.decode_rpc(frame).publish == (first, second, third)
    assert rpc.decode_rpc(frame).known == ()


def test_a_seen_id_in_another_field_order_is_decoded_whole() -> None:
    # seqno before data: not the canonical shape, so not peeked at.
    shuffled = (rpc_pb2.Message(from_id=b"f").SerializeToString()
                + rpc_pb2.Message(seqno=b"\x00" * 8).SerializeToString()
                + rpc_pb2.Message(data=b"d").SerializeToString())
    frame = len_field(2, shuffled)
    got = rpc.decode_rpc(frame, seen={b"f" + b"\x00" * 8})
    assert got.known == ()
    assert [m.msg_id for m in got.publish] == [b"f" + b"\x00" * 8]


@pytest.mark.parametrize("place", [1, 3])
def test_a_message_with_a_field_0_is_refused_with_or_without_seen_ids(place: int) -> None:
    # Field number 0 is invalid protobuf. The message reader took it as an unknown
    # field while the reader that peeks at ids refused it, so a frame was refused or
    # not by what the receiver had seen (found by `make fuzz`).
    fields = [len_field(1, b"f" * 38), len_field(2, b"d"), len_field(3, b"\x00" * 8)]
    fields.insert(place, len_field(0, b"zz"))
    frame = len_field(2, b"".join(fields))
    msg_id = b"f" * 38 + b"\x00" * 8
    for seen in ((), {b"other"}, {msg_id}):
        if place == 3 and seen == {msg_id}:
            # Past the id's three fields, a seen message is skipped unread: the rules'
            # "a broken message with a seen id may be skipped, never more".
            assert rpc.decode_rpc(frame, seen=seen).known == (msg_id,)
            continue
        with pytest.raises(rpc.RpcError, match=r"field (number )?0"):
            rpc.decode_rpc(frame, seen=seen)
