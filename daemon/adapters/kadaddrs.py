"""Conversions between the DHT's binary forms and the project's text forms.

The kad wire carries peer ids as multihash bytes and addresses as binary multiaddrs;
the rest of the daemon uses base58 peer ids and multiaddr text. Only this adapter
knows the multiaddr codec. Bad input gives None, never an exception.
"""

from __future__ import annotations

import base58
import multiaddr

# Transports this daemon can dial; anything else in a provider record is skipped.
_DIALABLE_FIRST = ("/ip4/", "/ip6/", "/dns4/", "/dns6/", "/dns/")


def addr_to_bytes(text: str) -> bytes | None:
    """The binary multiaddr of text (its /p2p/ part removed), or None."""
    try:
        return bytes(multiaddr.Multiaddr(text.split("/p2p/")[0]).to_bytes())
    except Exception:  # multiaddr raises several unrelated types on bad input
        return None


def addr_from_bytes(data: bytes) -> str | None:
    """The text of a binary multiaddr, or None if it does not parse."""
    try:
        return str(multiaddr.Multiaddr(data))
    except Exception:  # multiaddr raises several unrelated types on bad input
        return None


def dialable(texts: list[str]) -> list[str]:
    """The TCP addresses among texts (this daemon dials TCP only), relays left out."""
    return [t for t in texts if t.startswith(_DIALABLE_FIRST) and "/tcp/" in t
            and "/p2p-circuit" not in t and "/ws" not in t and "/tls" not in t]


def peer_text(peer_id: bytes) -> str:
    """The base58 text of a binary peer id."""
    return str(base58.b58encode(peer_id).decode("ascii"))


def peer_bytes(text: str) -> bytes | None:
    """The binary form of a base58 peer id, or None."""
    if len(text) > 128:
        return None
    try:
        return bytes(base58.b58decode(text.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return None
