"""Presence: the signed record each member announces in a room, and the room directory.

Rules:
- A record is canonical CBOR of [version, room, peer, addrs, nick, seq, signature]. The
  member signs DOMAIN + canonical CBOR of the first six fields with the Ed25519 key
  behind `peer`, so any peer can relay or serve it and the receiver still checks it.
- It is small on purpose: at most MAX_RECORD_BYTES in all, at most MAX_ADDRS
  addresses of at most MAX_ADDR_BYTES each, and only `/ip4|ip6/<ip>/tcp/<port>`
  forms (no /p2p part: the peer field says whose they are). The nick follows the
  envelope's nick rule or is empty.
- `seq` grows with every announcement of one peer (ms of its clock, or one more than
  the last); for a (room, peer) the highest seq wins, and a lower or equal one is a
  replay or a duplicate.
- Presence is not chat history: records are never envelopes, never in `history`, never
  reconciled by history sync.
- The directory of a room maps peer -> latest record and when it was last heard.
  Online means heard within ONLINE_FACTOR announce intervals, or connected now.
- The announce interval grows with the room: max(base, members * PER_MEMBER_S), base
  BASE_INTERVAL_S by default, so a whole room announces about once a second at most,
  however big.
- Pure: no I/O and no clock; times come in as arguments.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import cbor2
import nacl.bindings
import nacl.exceptions

from . import peerid, plaincbor
from .envelope import EnvelopeError, check_nick
from .rooms import _ROOM_RE

VERSION = 1
DOMAIN = b"gossipchat/presence/1\n"
TOPIC_PREFIX = "/gossipchat/1/presence/"
PROTOCOL = "/gossipchat/presence/1.0.0"

MAX_RECORD_BYTES = 4096
MAX_ADDRS = 16
MAX_ADDR_BYTES = 200
MAX_SEQ = 2**53 - 1
# Records whose checks decode remembers (about 0.5 KiB each with their bytes).
CHECKED_RECORDS = 4096
# Addresses whose checks check_addr remembers.
CHECKED_ADDRS = 4096
# A record whose seq (ms of the member's clock) is further ahead than this would lock
# out the member's real announcements until that time: refuse it.
MAX_FUTURE_SKEW_MS = 60 * 60 * 1000

BASE_INTERVAL_S = 60.0
PER_MEMBER_S = 1.0
ONLINE_FACTOR = 3
# A room's directory keeps at most this many members; the longest unheard go first.
MAX_MEMBERS = 10_000

Signer = Callable[[bytes], bytes]


class PresenceError(ValueError):
    """A record rejected on decode or validation; `reason` names the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PresenceRecord:
    """A decoded, verified presence record with its exact wire bytes."""

    room: str
    peer: bytes
    addrs: tuple[str, ...]
    nick: str
    seq: int
    signature: bytes
    wire: bytes

    @property
    def peer_text(self) -> str:
        """The member's peer id in base58."""
        return peerid.to_text(self.peer)


def topic_for(room: str) -> str:
    """The gossipsub topic that carries a room's presence records."""
    return TOPIC_PREFIX + room


def room_of_topic(topic: str) -> str | None:
    """The room of a presence topic, or None for any other topic."""
    if not topic.startswith(TOPIC_PREFIX):
        return None
    name = topic[len(TOPIC_PREFIX):]
    return name if _ROOM_RE.fullmatch(name) else None


def check_addr(addr: object) -> str:
    """An announceable address `/ip4|ip6/<ip>/tcp/<port>`, or a relay's such address
    with `/p2p/<relay id>/p2p-circuit` (circuit relay v2), or PresenceError("bad_addr")."""
    if not isinstance(addr, str) or len(addr.encode("utf-8", "surrogatepass")) > MAX_ADDR_BYTES:
        raise PresenceError("bad_addr", "not a string of at most 200 bytes")
    return _checked_addr(addr)


@functools.lru_cache(maxsize=CHECKED_ADDRS)
def _checked_addr(addr: str) -> str:
    """`check_addr` of a string of at most MAX_ADDR_BYTES; memoised, since members
    announce the same addresses again and again (`ipaddress` was a twentieth of an
    idle member's CPU). A bad address raises and is not kept."""
    parts = addr.split("/")
    if len(parts) == 8 and parts[5] == "p2p" and parts[7] == "p2p-circuit":
        if not peerid.is_valid_text(parts[6]):
            raise PresenceError("bad_addr", f"{parts[6][:60]!r} is not a relay's peer id")
        check_addr("/".join(parts[:5]))
        return addr
    if len(parts) != 5 or parts[0] != "" or parts[1] not in ("ip4", "ip6") \
            or parts[3] != "tcp":
        raise PresenceError("bad_addr", f"{addr[:60]!r} is not /ip4|ip6/<ip>/tcp/<port>")
    try:
        ip = ipaddress.ip_address(parts[2])
    except ValueError:
        raise PresenceError("bad_addr", f"{parts[2][:60]!r} is not an IP") from None
    if (ip.version == 4) != (parts[1] == "ip4") or str(ip) != parts[2]:
        raise PresenceError("bad_addr", f"{parts[2][:60]!r} is not in its canonical form")
    if ip.is_unspecified or ip.is_multicast:
        raise PresenceError("bad_addr", f"{ip} cannot be dialed")
    port = parts[4]
    if not port.isascii() or not port.isdigit() or str(int(port)) != port \
            or not 0 < int(port) < 65536:
        raise PresenceError("bad_addr", f"port {port[:10]!r}")
    return addr


def announceable(addrs: Iterable[str]) -> list[str]:
    """The first MAX_ADDRS of `addrs` that a record may carry, /p2p parts cut off."""
    out: list[str] = []
    for addr in addrs:
        circuit = addr.find("/p2p-circuit")
        bare = addr[:circuit + len("/p2p-circuit")] if circuit >= 0 else addr.split("/p2p/")[0]
        try:
            check_addr(bare)
        except PresenceError:
            continue
        if bare not in out:
            out.append(bare)
        if len(out) == MAX_ADDRS:
            break
    return out


def _signed_part(room: str, peer: bytes, addrs: list[str], nick: str, seq: int) -> bytes:
    return DOMAIN + cbor2.dumps([VERSION, room, peer, addrs, nick, seq], canonical=True)


def create(*, room: str, peer: bytes, addrs: Iterable[str], nick: str, seq: int,
           sign: Signer) -> PresenceRecord:
    """Build and sign a record; it passes `decode` or this raises PresenceError."""
    addr_list = list(addrs)
    _check_fields(room, peer, addr_list, nick, seq)
    signature = sign(_signed_part(room, peer, addr_list, nick, seq))
    wire = cbor2.dumps([VERSION, room, peer, addr_list, nick, seq, signature], canonical=True)
    if len(wire) > MAX_RECORD_BYTES:
        raise PresenceError("too_large", f"{len(wire)} bytes, limit {MAX_RECORD_BYTES}")
    return PresenceRecord(room, peer, tuple(addr_list), nick, seq, signature, wire)


def _check_fields(room: object, peer: object, addrs: object, nick: object, seq: object
                  ) -> None:
    if not isinstance(room, str) or not _ROOM_RE.fullmatch(room):
        raise PresenceError("bad_field", "room")
    if not isinstance(peer, bytes):
        raise PresenceError("bad_field", "peer")
    if not isinstance(addrs, list):
        raise PresenceError("bad_field", "addrs is not an array")
    if len(addrs) > MAX_ADDRS:
        raise PresenceError("too_many_addrs", f"{len(addrs)} addresses, limit {MAX_ADDRS}")
    for addr in addrs:
        check_addr(addr)
    if len(set(addrs)) != len(addrs):
        raise PresenceError("bad_addr", "an address is listed twice")
    if not isinstance(nick, str):
        raise PresenceError("bad_field", "nick")
    if nick:
        try:
            check_nick(nick)
        except EnvelopeError as exc:
            raise PresenceError("bad_nick", exc.detail) from None
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise PresenceError("bad_field", "seq")


def decode(wire: bytes, *, now_ms: int) -> PresenceRecord:
    """Decode and verify a record: size, canonical form, fields, the member's signature.

    A record checked before is not checked again: the same bytes come many times (in
    every directory reply of a room's members while it is new, in watch frames and
    re-announcements), and Ed25519 was the largest part of a join's CPU. Only the
    clock's verdict (`future`) is asked each time.
    """
    if len(wire) > MAX_RECORD_BYTES:
        raise PresenceError("too_large", f"{len(wire)} bytes, limit {MAX_RECORD_BYTES}")
    record = _checked(wire)
    if record.seq > now_ms + MAX_FUTURE_SKEW_MS:
        raise PresenceError("future", f"seq {record.seq} is more than an hour ahead of {now_ms}")
    return record


@functools.lru_cache(maxsize=CHECKED_RECORDS)
def _checked(wire: bytes) -> PresenceRecord:
    """Every check of `decode` that needs no clock (a pure function of the bytes, so
    memoised: a rejected record raises and is not kept)."""
    try:
        items = plaincbor.loads(wire)
    except Exception as exc:  # untrusted bytes: cbor2 raises a spread of types
        raise PresenceError("undecodable", type(exc).__name__) from None
    if not isinstance(items, list) or len(items) != 7:
        raise PresenceError("undecodable", "not a 7-element array")
    version, room, peer, addrs, nick, seq, signature = items
    if type(version) is not int or version != VERSION:
        raise PresenceError("unknown_version", repr(version)[:20])
    _check_fields(room, peer, addrs, nick, seq)
    if not isinstance(signature, bytes):
        raise PresenceError("bad_field", "signature")
    if cbor2.dumps(items, canonical=True) != wire:
        raise PresenceError("non_canonical", "bytes are not canonical CBOR")
    try:
        if len(signature) != 64:
            raise ValueError("an Ed25519 signature has 64 bytes")
        signed = _signed_part(room, peer, addrs, nick, seq)
        nacl.bindings.crypto_sign_open(signature + signed, peerid.public_key(peer))
    except (peerid.PeerIdError, nacl.exceptions.BadSignatureError, ValueError):
        raise PresenceError("bad_signature", "signature does not match the peer") from None
    return PresenceRecord(room, peer, tuple(addrs), nick, seq, signature, wire)


def from_trusted_wire(wire: bytes) -> PresenceRecord:
    """Decode a record this node verified before (its own store) without re-checking."""
    _version, room, peer, addrs, nick, seq, signature = cbor2.loads(wire)
    return PresenceRecord(room, peer, tuple(addrs), nick, seq, signature, wire)


def announce_interval_s(members: int, base_s: float = BASE_INTERVAL_S) -> float:
    """Seconds between a member's routine announcements in a room of `members`."""
    return max(base_s, members * PER_MEMBER_S)


@dataclass
class Entry:
    """A member of a room's directory: its latest record and when we last heard it."""

    record: PresenceRecord
    last_seen_ms: int


class Directory:
    """The members of one room, from their presence records."""

    def __init__(self, room: str, *, max_members: int = MAX_MEMBERS,
                 base_interval_s: float = BASE_INTERVAL_S) -> None:
        self.room = room
        self.max_members = max_members
        self.base_interval_s = base_interval_s
        self.entries: dict[str, Entry] = {}

    def offer(self, record: PresenceRecord, now_ms: int) -> str:
        """Take a verified record heard at now_ms; return what it was.

        "new" (a member not in the directory), "updated" (a higher seq), "duplicate"
        (the same seq again: refreshes last seen) or "stale" (a lower seq: dropped).
        """
        if record.room != self.room:
            raise ValueError(f"a record of {record.room!r} offered to {self.room!r}")
        peer = record.peer_text
        entry = self.entries.get(peer)
        if entry is None:
            self.entries[peer] = Entry(record, now_ms)
            self._evict()
            return "new"
        if record.seq < entry.record.seq:
            return "stale"
        entry.last_seen_ms = max(entry.last_seen_ms, now_ms)
        if record.seq == entry.record.seq:
            return "duplicate"
        entry.record = record
        return "updated"

    def restore(self, record: PresenceRecord, last_seen_ms: int) -> None:
        """Put back an entry read from the store."""
        self.entries[record.peer_text] = Entry(record, last_seen_ms)

    def _evict(self) -> None:
        while len(self.entries) > self.max_members:
            oldest = min(self.entries, key=lambda p: self.entries[p].last_seen_ms)
            del self.entries[oldest]

    def interval_s(self) -> float:
        """This room's announce interval."""
        return announce_interval_s(len(self.entries), self.base_interval_s)

    def online_window_ms(self) -> int:
        """How recently a member must have been heard to count as online."""
        return int(ONLINE_FACTOR * self.interval_s() * 1000)

    def is_online(self, peer: str, now_ms: int, connected: Collection[str] = ()) -> bool:
        """Heard within the online window, or connected now."""
        entry = self.entries.get(peer)
        if entry is None:
            return False
        return now_ms - entry.last_seen_ms <= self.online_window_ms() or peer in connected

    def online_count(self, now_ms: int, connected: Collection[str], besides: str) -> int:
        """How many members other than `besides` are online (`is_online`), with the
        window worked out once: `status` counts every room's members on every call."""
        window = self.online_window_ms()
        return sum(1 for peer, entry in self.entries.items()
                   if peer != besides
                   and (now_ms - entry.last_seen_ms <= window or peer in connected))

    def view(self, now_ms: int, connected: set[str]) -> list[dict[str, Any]]:
        """`members` rows: peer_id, nick, last_seen, online, and `nick_ms` (the record's
        seq: the author's clock when it announced that nick); sorted by peer id."""
        window = self.online_window_ms()
        rows = []
        for peer, entry in self.entries.items():
            online = now_ms - entry.last_seen_ms <= window or peer in connected
            rows.append({"peer_id": peer, "nick": entry.record.nick,
                         "last_seen": entry.last_seen_ms, "online": online,
                         "nick_ms": entry.record.seq})
        return sorted(rows, key=lambda r: r["peer_id"])

    def records(self, limit: int) -> list[PresenceRecord]:
        """Up to `limit` records, the most recently heard first (what a fetch serves)."""
        ordered = sorted(self.entries.values(), key=lambda e: e.last_seen_ms, reverse=True)
        return [e.record for e in ordered[:limit]]
