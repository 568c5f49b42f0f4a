"""The room's DHT key is Kubo's pubsub rendezvous key for the room's topic."""

from __future__ import annotations

import hashlib

from gossipchat.daemon.core.rendezvous import cid_text, namespace_multihash, room_key
from gossipchat.daemon.core.rooms import topic_for


def test_the_key_is_the_sha256_multihash_of_floodsub_and_the_topic() -> None:
    key = room_key(topic_for("x"))
    assert key == b"\x12\x20" + hashlib.sha256(b"floodsub:/gossipchat/1/room/x").digest()
    assert key == namespace_multihash("floodsub:/gossipchat/1/room/x")
    assert room_key(topic_for("y")) != key


def test_the_cid_is_v1_raw_in_base32() -> None:
    # The CIDv1 (raw) of sha2-256("hello"), as `ipfs block put --cid-codec raw` prints it
    # for the bytes "hello".
    assert cid_text(namespace_multihash("hello")) == (
        "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq")
    assert cid_text(room_key(topic_for("x"))).startswith("bafkrei")
