"""Conversions between the DHT's binary forms and the project's text forms.

The kad wire carries peer ids as multihash bytes and addresses as binary multiaddrs;
the rest of the daemon uses base58 peer ids and multiaddr text. Only this adapter
knows the multiaddr codec. Bad input gives None, never an exception.

The conversions are memoised (pure functions of their input, bounded caches): the
DHT's tick converts every connected peer's id and our own addresses each second, and
base58 and multiaddr parsing are slow in Python.
"""

from __future__ import annotations

import functools

import base58
import multiaddr

# Transports this daemon can dial; anything else in a provider record is skipped.
_DIALABLE_FIRST = ("/ip4/", "/ip6/", "/dns4/", "/dns6/", "/dns/")


@functools.lru_cache(maxsize=4096)
def addr_to_bytes(text: str) -> bytes | None:
    """The binary multiaddr of text with its trailing /p2p/<peer id> removed, or None.

    A relayed address keeps its relay: `/ip4/…/tcp/…/p2p/<relay>/p2p-circuit/p2p/<us>`
    goes out as `/ip4/…/tcp/…/p2p/<relay>/p2p-circuit`, as libp2p peer records carry it
    (cutting at the first /p2p/ would announce the relay's own address as ours).
    """
    head, sep, tail = text.rpartition("/p2p/")
    if sep and "/" not in tail:
        text = head
    try:
        return bytes(multiaddr.Multiaddr(text).to_bytes())
    except Exception:  # multiaddr raises several unrelated types on bad input
        return None


def addr_from_bytes(data: bytes) -> str | None:
    """The text of a binary multiaddr, or None if it does not parse."""
    try:
        return str(multiaddr.Multiaddr(data))
    except Exception:  # multiaddr raises several unrelated types on bad input
        return None


def dialable(texts: list[str]) -> list[str]:
    """The addresses among texts this daemon can dial, direct ones first: TCP, and
    relayed ones (one hop) through a relay at a TCP address."""
    direct, relayed = [], []
    for text in texts:
        relay, circuit, after = text.partition("/p2p-circuit")
        if circuit:
            if "/p2p/" in relay and "/p2p-circuit" not in after and _tcp(relay.split("/p2p/")[0]):
                relayed.append(text)
        elif _tcp(text):
            direct.append(text)
    return direct + relayed


def _tcp(text: str) -> bool:
    return (text.startswith(_DIALABLE_FIRST) and "/tcp/" in text and "/ws" not in text
            and "/tls" not in text)


@functools.lru_cache(maxsize=4096)
def peer_text(peer_id: bytes) -> str:
    """The base58 text of a binary peer id."""
    return str(base58.b58encode(peer_id).decode("ascii"))


@functools.lru_cache(maxsize=4096)
def peer_bytes(text: str) -> bytes | None:
    """The binary form of a base58 peer id, or None."""
    if len(text) > 128:
        return None
    try:
        return bytes(base58.b58decode(text.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return None
