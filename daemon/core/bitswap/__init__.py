"""Bitswap (`/ipfs/bitswap/1.2.0`, 1.1.0, 1.0.0) as sans-IO state machines.

One concern per module; the adapter (daemon/adapters/bitswap.py) does the stream I/O,
the block store reads and writes, and runs one task per piece of state:

- `message.py`: the wire codec (`encode_frame`, `decode_message`, `FrameDecoder`).
- `ledger.py`: what one peer wants from us and what we answer next (`PeerLedger`),
  owned by that peer's link task.
- `wantlist.py`: what we want from whom across every fetch (`WantList`), owned by the
  engine task.
- `session.py`: one fetch's choice of peers (`Session`): want-have to every peer,
  want-block to those that have, direct before relayed, members before the
  original poster; owned by the fetch's task.

Rules of this package: it imports no trio or libp2p, opens nothing and reads no clock
(`now` is an argument); peers are any hashable the adapter chooses; everything that
comes from the network is untrusted and raises only `ProtocolError`.
"""

from __future__ import annotations

from .ledger import Composed, LedgerEntry, PeerLedger, hold_back
from .message import (
    MAX_MESSAGE_FIELDS,
    MAX_MESSAGE_SIZE,
    PROTOCOL_ID_100,
    PROTOCOL_ID_110,
    PROTOCOL_ID_120,
    PROTOCOLS,
    FrameDecoder,
    Message,
    Presence,
    WantEntry,
    decode_message,
    encode_frame,
    prefix_ok,
)
from .session import Plan, Session, SessionLimits
from .wantlist import BlockIn, CoWant, Event, GotBlock, Have, Outcome, PeerGone, WantList

__all__ = [
    "MAX_MESSAGE_FIELDS",
    "MAX_MESSAGE_SIZE",
    "PROTOCOLS",
    "PROTOCOL_ID_100",
    "PROTOCOL_ID_110",
    "PROTOCOL_ID_120",
    "BlockIn",
    "CoWant",
    "Composed",
    "Event",
    "FrameDecoder",
    "GotBlock",
    "Have",
    "LedgerEntry",
    "Message",
    "Outcome",
    "PeerGone",
    "PeerLedger",
    "Plan",
    "Presence",
    "Session",
    "SessionLimits",
    "WantEntry",
    "WantList",
    "decode_message",
    "encode_frame",
    "hold_back",
    "prefix_ok",
]
