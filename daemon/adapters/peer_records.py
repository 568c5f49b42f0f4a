"""Signed peer records in py-libp2p's pubsub, at the cost of once rather than per RPC.

py-libp2p 0.8.1 attaches the host's signed peer record (a libp2p Envelope holding its
addresses) to every pubsub RPC it sends, and checks the one in every RPC it receives:

- sending, `env_to_send_in_RPC(host)` calls `host.get_addrs()` (multiaddr parsing and
  base58 of the peer id) to see whether the cached record is still current, then
  serialises it again;
- receiving, `maybe_consume_signed_record` parses the Envelope, verifies its Ed25519
  signature and rewrites the sender's addresses in the peerstore.

A py-spy profile of ten daemons during a 1,000-message burst put 17.5% of all busy
samples in those two functions, more than our own decode, verify and store together.
The records barely ever change, so this module memoises both per host:

- the record to send is rebuilt at most every `SEND_TTL_S`;
- a record received from a peer that is byte for byte the one accepted from that
  peer within `RECEIVE_TTL_S` is taken as accepted without parsing or verifying it
  again (a different or expired one goes through py-libp2p's full check).

`install()` replaces the two names in py-libp2p's pubsub modules (they import them by
name); the wrappers keep py-libp2p's signatures and results.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

SEND_TTL_S = 5.0
RECEIVE_TTL_S = 60.0
MAX_REMEMBERED = 4096  # peers per host whose last accepted record is remembered

_State = tuple[float, bytes]  # (expires at, record bytes)


class _HostCache:
    def __init__(self) -> None:
        self.outbound: tuple[float, tuple[bytes, bool]] | None = None
        self.inbound: OrderedDict[ID, _State] = OrderedDict()


# Weak keys: a stopped host's memo goes with it.
_caches: weakref.WeakKeyDictionary[IHost, _HostCache] = weakref.WeakKeyDictionary()
_installed = False


def _cache(host: IHost) -> _HostCache:
    cache = _caches.get(host)
    if cache is None:
        cache = _caches[host] = _HostCache()
    return cache


def _memo_send(original: Callable[[IHost], tuple[bytes, bool]]) -> Callable[..., Any]:
    def env_to_send_in_RPC(host: IHost) -> tuple[bytes, bool]:
        cache = _cache(host)
        now = trio.current_time()
        if cache.outbound is not None and cache.outbound[0] > now:
            return cache.outbound[1][0], False
        result = original(host)
        cache.outbound = (now + SEND_TTL_S, result)
        return result

    env_to_send_in_RPC.__wrapped__ = original  # type: ignore[attr-defined]
    return env_to_send_in_RPC


def _memo_receive(original: Callable[[Any, IHost, ID], bool]) -> Callable[..., Any]:
    def maybe_consume_signed_record(msg: Any, host: IHost, peer_id: ID) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        cache = _cache(host).inbound
        now = trio.current_time()
        known = cache.get(peer_id)
        if known is not None and known[1] == record and known[0] > now:
            return True
        accepted = original(msg, host, peer_id)
        if accepted:
            cache[peer_id] = (now + RECEIVE_TTL_S, bytes(record))
            cache.move_to_end(peer_id)
            while len(cache) > MAX_REMEMBERED:
                cache.popitem(last=False)
        else:
            cache.pop(peer_id, None)
        return accepted

    maybe_consume_signed_record.__wrapped__ = original  # type: ignore[attr-defined]
    return maybe_consume_signed_record


def install() -> None:
    """Memoise the peer-record work of py-libp2p's pubsub in this process (idempotent)."""
    global _installed
    if _installed:
        return
    import libp2p.pubsub.gossipsub as gossipsub_module
    import libp2p.pubsub.pubsub as pubsub_module

    modules: tuple[Any, ...] = (pubsub_module, gossipsub_module)
    for module in modules:
        module.env_to_send_in_RPC = _memo_send(module.env_to_send_in_RPC)
        module.maybe_consume_signed_record = _memo_receive(module.maybe_consume_signed_record)
    _installed = True
