"""The DHT key under which the members of a room announce themselves.

A room's members PROVIDE this key on the Kademlia DHT and a joiner asks for its
providers. The derivation is Kubo's pubsub rendezvous (go-libp2p's RoutingDiscovery
`nsToCid`, Kubo's `getDHTRendezvousKey`): the namespace is `"floodsub:" + topic`, the
content id is a CIDv1 with the raw codec (0x55) over the sha2-256 multihash of the
namespace's UTF-8 bytes, and the key on the wire (GET_PROVIDERS, ADD_PROVIDER) is that
CID's multihash. A Kubo or go-libp2p node that advertises the same topic therefore
meets us under the same key.

Everything that needs the key calls `room_key`: a private room can later derive it
from a secret in this one place.
"""

from __future__ import annotations

import base64
import hashlib

NAMESPACE_PREFIX = "floodsub:"
_SHA2_256 = b"\x12\x20"  # multihash code 0x12, digest length 32
_CID_V1_RAW = b"\x01\x55"  # CID version 1, multicodec raw


def namespace_multihash(namespace: str) -> bytes:
    """The sha2-256 multihash of a rendezvous namespace (go's nsToCid(ns).Hash())."""
    return _SHA2_256 + hashlib.sha256(namespace.encode("utf-8")).digest()


def room_key(topic: str) -> bytes:
    """The DHT key (a multihash) that the members of the room on `topic` provide."""
    return namespace_multihash(NAMESPACE_PREFIX + topic)


def cid_text(key: bytes) -> str:
    """The CIDv1 (raw codec, base32) of a multihash key, as Kubo prints it."""
    encoded = base64.b32encode(_CID_V1_RAW + key).decode("ascii").lower().rstrip("=")
    return "b" + encoded
