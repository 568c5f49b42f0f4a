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
import random
from dataclasses import dataclass

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


# When a joined room's key is walked (daemon/dht.py runs the walks).
PROVIDE_S = 300.0
PROVIDE_JITTER = 0.2
# Our addresses changed since the last announcement (a relay reservation came or
# went): announce again, but not more often than this.
REPROVIDE_ON_CHANGE_S = 10.0
FIND_FIRST_S = 2.0
FIND_MAX_S = 60.0
# A room that has had enough members connected for this long walks at FIND_FIRST_S
# again once it falls short (until then the last delay stands, so a room hovering at
# room_peers_min does not walk every FIND_FIRST_S).
FIND_RESET_S = 120.0


@dataclass
class RoomSchedule:
    """When one joined room is walked, and whether that walk announces.

    - Provide: at join, then every PROVIDE_S (+-20%); sooner (not within
      REPROVIDE_ON_CHANGE_S of the last) when our addresses changed. After a walk that
      met no server to announce to, again after FIND_FIRST_S, doubling to FIND_MAX_S.
    - Find: only while the room is short of connected members. The first find walks at
      once, the next after FIND_FIRST_S, doubling to FIND_MAX_S while it stays short.
      A room with enough members is not walked for members at all: its providers
      would not be dialed (nothing is wanted), and in a room of 20 each such walk
      dialed ~9 servers for a moment.
    - One walk at a time (`busy`).
    """

    rng: random.Random
    next_provide: float = 0.0
    next_find: float = 0.0
    find_delay: float = FIND_FIRST_S
    provide_delay: float = FIND_FIRST_S
    enough_since: float | None = None
    busy: bool = False
    provided: bool = False
    provided_at: float = 0.0
    provided_addrs: tuple[bytes, ...] = ()

    def due(self, now: float, *, short: bool, own_addrs: tuple[bytes, ...]) -> bool | None:
        """None if no walk is due now; else whether the walk due now announces.

        A walk that comes due is the caller's to run: the schedule is busy until
        `walked` or `failed`."""
        if short:
            self.enough_since = None
        elif self.enough_since is None:
            self.enough_since = now
        elif now - self.enough_since >= FIND_RESET_S:
            self.find_delay = FIND_FIRST_S
        if self.busy:
            return None
        if self.provided and own_addrs != self.provided_addrs \
                and now >= self.provided_at + REPROVIDE_ON_CHANGE_S:
            self.next_provide = min(self.next_provide, now)
        provide = now >= self.next_provide
        if not provide and not (short and now >= self.next_find):
            return None
        self.busy = True
        return provide

    def announced(self, now: float, addrs: tuple[bytes, ...] | None) -> None:
        """A providing walk ended: it announced `addrs`, or (None) met no server."""
        if addrs is None:
            self.next_provide = now + self.provide_delay
            self.provide_delay = min(FIND_MAX_S, self.provide_delay * 2)
            return
        self.provide_delay = FIND_FIRST_S
        self.provided, self.provided_at, self.provided_addrs = True, now, addrs
        self.next_provide = now + PROVIDE_S * self.rng.uniform(1 - PROVIDE_JITTER,
                                                               1 + PROVIDE_JITTER)

    def walked(self, now: float, *, short: bool) -> None:
        """A walk and its dials are done; `short`: the room still lacks members."""
        self.busy = False
        self.next_find = now + self.find_delay
        if short:
            self.find_delay = min(FIND_MAX_S, self.find_delay * 2)

    def failed(self, now: float) -> None:
        """A walk ended in a bug (logged by the caller): try again, but not soon."""
        self.busy = False
        self.next_find = max(self.next_find, now + FIND_MAX_S)
        self.next_provide = max(self.next_provide, now + FIND_MAX_S)
