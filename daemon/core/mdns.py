"""LAN discovery over multicast DNS, as the libp2p mDNS spec has it: codec and state.

Rules:
- The service is `_p2p._udp.local`. A query is one PTR question for it. A response
  answers with a PTR record `_p2p._udp.local -> <instance>._p2p._udp.local` and, in
  its additional section, a TXT record of that instance with one character string
  `dnsaddr=<multiaddr>/p2p/<peer id>` per address (RFC 6763, at most 255 bytes each).
  `<instance>` is a random name of this run; the peer id lives in the addresses.
- What we announce: the node's dialable addresses (core/addrs.py's list) less
  loopback, unspecified, multicast and link-local ones, at most MAX_ANNOUNCED.
- The parser takes untrusted bytes and raises nothing but MdnsError, whose `reason`
  names a counter. It refuses a packet over MAX_PACKET bytes or with more than
  MAX_RECORDS records before it reads them, checks every length against the packet,
  and follows a compression pointer only backwards, at most MAX_POINTERS times a name.
- A response yields at most one peer: its id must be an Ed25519 peer id and not ours;
  of its addresses only `/ip4|ip6/<ip>/tcp/<port>` ones that another host can dial
  are kept, at most MAX_ADDRS_PER_PEER.
- `Discovery` keeps at most MAX_PEERS peers, each until its TTL (capped at MAX_TTL_S)
  runs out; when full, a new peer is refused (the known ones keep their place).
- Dials are bounded so that a hostile LAN cannot turn us into a dial flood: a peer is
  dialed at most MAX_ATTEMPTS times in ATTEMPTS_KEPT_S, successful dials included (a
  peer that accepts and hangs up at once must not get a dial loop; one whose
  connection drops is the Redialer's to reconnect), after a failure the gap doubles
  from RETRY_AFTER_S, attempts are remembered across goodbyes and re-announcements,
  at most MAX_DIALS_IN_FLIGHT run at once and at most DIALS_PER_WINDOW start per
  DIAL_WINDOW_S in all.
- Answers are rate-limited: at most one response per ANSWER_GAP_S (RFC 6762 §6); a
  query heard in the gap is answered when it ends.
- Pure: no sockets and no clock; `now` (seconds) comes in as an argument.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import peerid
from .presence import PresenceError, check_addr

SERVICE = "_p2p._udp.local"
GROUP = "224.0.0.251"
PORT = 5353
TTL_S = 120

TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_AAAA, TYPE_SRV, TYPE_ANY = 1, 12, 16, 28, 33, 255
CLASS_IN = 1
FLAG_RESPONSE = 0x8000
FLAG_AUTHORITATIVE = 0x0400

MAX_PACKET = 9000  # RFC 6762 §17: no mDNS packet is larger
MAX_RECORDS = 64
MAX_POINTERS = 16
MAX_NAME = 255
MAX_ANNOUNCED = 8
MAX_ADDRS_PER_PEER = 8
MAX_PEERS = 64
MAX_TTL_S = 600
MAX_ATTEMPTS = 3
RETRY_AFTER_S = 5.0
ATTEMPTS_KEPT_S = 600.0
MAX_ATTEMPTS_KEPT = 1024
MAX_DIALS_IN_FLIGHT = 2
DIALS_PER_WINDOW = 10
DIAL_WINDOW_S = 60.0
ANSWER_GAP_S = 1.0
DNSADDR = b"dnsaddr="


class MdnsError(ValueError):
    """A packet or a response we drop; `reason` names the counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Question:
    """One question: a name (lower case) and a type."""

    name: str
    qtype: int


@dataclass(frozen=True)
class Record:
    """One resource record; `target` for PTR, `strings` for TXT, else empty."""

    name: str
    rtype: int
    ttl: int
    target: str = ""
    strings: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Message:
    """A parsed packet: a query or a response, with its questions and records."""

    response: bool
    questions: tuple[Question, ...]
    records: tuple[Record, ...]

    def asks_for_us(self) -> bool:
        """True for a query with a PTR (or ANY) question for our service."""
        return not self.response and any(
            q.name == SERVICE and q.qtype in (TYPE_PTR, TYPE_ANY) for q in self.questions)


@dataclass(frozen=True)
class Announcement:
    """A peer found in a response: its id, the addresses we may dial, its TTL."""

    peer: str
    addrs: tuple[str, ...]
    ttl: int
    instance: str
    skipped_addrs: int = 0


# encoding


def _name(name: str) -> bytes:
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= 63:
            raise ValueError(f"bad DNS label {label!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\x00")


def build_query() -> bytes:
    """A query: one PTR question for `_p2p._udp.local` (id 0, as mDNS wants)."""
    return struct.pack(">6H", 0, 0, 1, 0, 0, 0) + _name(SERVICE) + struct.pack(
        ">2H", TYPE_PTR, CLASS_IN)


def build_response(instance: str, addrs: Sequence[str], ttl: int = TTL_S) -> bytes:
    """A response naming our instance, with one `dnsaddr=` string per address.

    `addrs` are full multiaddrs ending in /p2p/<id>; a TTL of 0 is a goodbye.
    """
    full = f"{instance}.{SERVICE}"
    target = _name(full)
    ptr = _name(SERVICE) + struct.pack(">2HIH", TYPE_PTR, CLASS_IN, ttl, len(target)) + target
    strings = b""
    for addr in addrs:
        raw = DNSADDR + addr.encode("ascii")
        if len(raw) > 255:
            continue
        strings += bytes([len(raw)]) + raw
    txt = target + struct.pack(">2HIH", TYPE_TXT, CLASS_IN, ttl, len(strings)) + strings
    header = struct.pack(">6H", 0, FLAG_RESPONSE | FLAG_AUTHORITATIVE, 0, 1, 0, 1)
    return header + ptr + txt


def announceable(addrs: Iterable[str], own_peer: str) -> list[str]:
    """The addresses we put in a response, /p2p/<own peer> appended: dialable from
    another host (never 0.0.0.0, loopback, multicast or link-local), at most
    MAX_ANNOUNCED."""
    out: list[str] = []
    for addr in addrs:
        bare = addr.split("/p2p/")[0]
        if _dialable(bare) and bare not in out:
            out.append(bare)
        if len(out) == MAX_ANNOUNCED:
            break
    return [f"{a}/p2p/{own_peer}" for a in out]


def _dialable(bare: str) -> bool:
    try:
        check_addr(bare)
    except PresenceError:
        return False
    ip = ipaddress.ip_address(bare.split("/")[2])
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


# parsing


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MdnsError("truncated", f"{n} bytes at {self.pos}")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def name(self) -> str:
        """A (possibly compressed) name; the reader ends up after its first part."""
        labels: list[bytes] = []
        length = 0
        pos = self.pos
        jumps = 0
        end: int | None = None
        data = self.data
        while True:
            if pos >= len(data):
                raise MdnsError("truncated", "name runs off the packet")
            size = data[pos]
            if size & 0xC0 == 0xC0:
                if pos + 1 >= len(data):
                    raise MdnsError("truncated", "pointer runs off the packet")
                target = ((size & 0x3F) << 8) | data[pos + 1]
                if end is None:
                    end = pos + 2
                jumps += 1
                if target >= pos or jumps > MAX_POINTERS:
                    raise MdnsError("bad_pointer", f"pointer to {target} at {pos}")
                pos = target
                continue
            if size & 0xC0:
                raise MdnsError("bad_label", f"label type {size >> 6}")
            pos += 1
            if size == 0:
                break
            if pos + size > len(data):
                raise MdnsError("truncated", "label runs off the packet")
            length += size + 1
            if length > MAX_NAME:
                raise MdnsError("bad_name", "longer than 255 bytes")
            labels.append(data[pos:pos + size])
            pos += size
        self.pos = end if end is not None else pos
        return ".".join(label.decode("latin-1") for label in labels).lower()


def parse(data: bytes) -> Message:
    """Decode a packet; raises MdnsError (and nothing else) for anything malformed."""
    if len(data) > MAX_PACKET:
        raise MdnsError("oversize", f"{len(data)} bytes")
    reader = _Reader(data)
    _ident, flags, qd, an, ns, ar = struct.unpack(">6H", reader.take(12))
    if qd + an + ns + ar > MAX_RECORDS:
        raise MdnsError("too_many_records", f"{qd + an + ns + ar} records")
    if flags & 0x7800:
        raise MdnsError("bad_opcode", f"opcode {(flags >> 11) & 0xF}")
    questions = []
    for _ in range(qd):
        name = reader.name()
        qtype, _qclass = reader.u16(), reader.u16()
        questions.append(Question(name, qtype))
    records = []
    for _ in range(an + ns + ar):
        name = reader.name()
        rtype, _rclass, ttl, rdlength = reader.u16(), reader.u16(), reader.u32(), reader.u16()
        start = reader.pos
        reader.take(rdlength)
        if rtype == TYPE_PTR:
            inner = _Reader(data[:start + rdlength])
            inner.pos = start
            target = inner.name()
            if inner.pos != start + rdlength:
                raise MdnsError("bad_rdata", "PTR data longer than its name")
            records.append(Record(name, rtype, ttl, target=target))
        elif rtype == TYPE_TXT:
            records.append(Record(name, rtype, ttl, strings=_txt(data[start:start + rdlength])))
        else:
            records.append(Record(name, rtype, ttl))
    return Message(bool(flags & FLAG_RESPONSE), tuple(questions), tuple(records))


def _txt(rdata: bytes) -> tuple[bytes, ...]:
    strings = []
    pos = 0
    while pos < len(rdata):
        size = rdata[pos]
        if pos + 1 + size > len(rdata):
            raise MdnsError("bad_txt", "string runs off its record")
        strings.append(rdata[pos + 1:pos + 1 + size])
        pos += 1 + size
    return tuple(strings)


def _split_dnsaddr(raw: bytes) -> tuple[str, str] | None:
    """(transport part, peer id) of `dnsaddr=<multiaddr>/p2p/<id>`, or None."""
    if not raw.startswith(DNSADDR):
        return None
    try:
        text = raw[len(DNSADDR):].decode("ascii")
    except UnicodeDecodeError:
        return None
    head, sep, peer = text.rpartition("/p2p/")
    if not sep or "/" in peer:
        return None
    return head, peer


def read_response(message: Message, own_peer: str, own_instance: str
                  ) -> Announcement | None:
    """The peer a response announces; None when it says nothing about our service (or
    is our own echo); MdnsError when it names one but badly."""
    if not message.response:
        return None
    suffix = "." + SERVICE
    ptrs = [r for r in message.records if r.rtype == TYPE_PTR and r.name == SERVICE]
    if not ptrs:
        return None
    ptr = ptrs[0]
    if not ptr.target.endswith(suffix):
        raise MdnsError("bad_ptr", "the PTR target is not an instance of the service")
    instance = ptr.target[: -len(suffix)]
    if instance == own_instance.lower():
        return None
    strings = [s for r in message.records
               if r.rtype == TYPE_TXT and r.name == ptr.target for s in r.strings]
    if not strings:
        raise MdnsError("no_txt", "no TXT record for the instance")
    peer: str | None = None
    addrs: list[str] = []
    skipped = 0
    for raw in strings:
        split = _split_dnsaddr(raw)
        if split is None:
            skipped += raw.startswith(DNSADDR)
            continue
        head, claimed = split
        if peer is None:
            if not peerid.is_valid_text(claimed):
                raise MdnsError("bad_peer_id", "not the peer id of an Ed25519 key")
            if claimed == own_peer:
                raise MdnsError("own_peer_id", "a response in our own peer id")
            peer = claimed
        if claimed != peer or not _dialable(head) or head in addrs:
            skipped += 1
            continue
        if len(addrs) == MAX_ADDRS_PER_PEER:
            skipped += 1
            continue
        addrs.append(head)
    if peer is None:
        raise MdnsError("bad_addrs", "no dnsaddr= string with a /p2p/ part")
    if not addrs:
        raise MdnsError("no_dialable_addr", "none of its addresses can be dialed")
    return Announcement(peer, tuple(addrs), min(ptr.ttl, MAX_TTL_S), instance, skipped)


# state


@dataclass
class Peer:
    """A discovered peer: where to dial it, until when, and how dialing went."""

    addrs: tuple[str, ...]
    expires_at: float
    dialing: bool = False


@dataclass
class _Attempts:
    count: int
    last: float
    failed: bool


@dataclass
class Discovery:
    """Peers heard on the LAN, the dials they are owed, and when to answer queries."""

    own_peer: str
    max_peers: int = MAX_PEERS
    peers: dict[str, Peer] = field(default_factory=dict)
    attempts: dict[str, _Attempts] = field(default_factory=dict)
    dial_starts: deque[float] = field(default_factory=deque)
    last_answer: float | None = None
    answer_pending: bool = False

    def heard(self, ann: Announcement, now: float) -> str:
        """Take an announcement: "new", "refreshed", "goodbye", "full" or "ignored"."""
        if ann.peer == self.own_peer:
            return "ignored"
        kept = self.peers.get(ann.peer)
        if ann.ttl == 0:
            if kept is not None and not kept.dialing:
                del self.peers[ann.peer]
            return "goodbye"
        if kept is not None:
            kept.addrs = ann.addrs
            kept.expires_at = now + ann.ttl
            return "refreshed"
        self.expire(now)
        if len(self.peers) >= self.max_peers:
            return "full"
        self.peers[ann.peer] = Peer(ann.addrs, now + ann.ttl)
        return "new"

    def expire(self, now: float) -> None:
        """Forget peers whose TTL ran out and dial attempts older than ATTEMPTS_KEPT_S."""
        for peer in [p for p, e in self.peers.items() if e.expires_at <= now and not e.dialing]:
            del self.peers[peer]
        for peer in [p for p, a in self.attempts.items() if now - a.last > ATTEMPTS_KEPT_S]:
            del self.attempts[peer]

    def dials(self, now: float, *, connected: set[str], blocked: set[str],
              room: int) -> list[tuple[str, tuple[str, ...]]]:
        """The (peer, addresses) to dial now; each is marked dialing until reported.

        `room` is how many more connections the node may open in all.
        """
        while self.dial_starts and now - self.dial_starts[0] >= DIAL_WINDOW_S:
            self.dial_starts.popleft()
        in_flight = sum(1 for e in self.peers.values() if e.dialing)
        out: list[tuple[str, tuple[str, ...]]] = []
        for peer, entry in self.peers.items():
            if in_flight >= MAX_DIALS_IN_FLIGHT or len(self.dial_starts) >= DIALS_PER_WINDOW \
                    or len(out) >= room:
                break
            if entry.dialing or peer in connected or peer in blocked or peer == self.own_peer:
                continue
            tried = self.attempts.get(peer)
            if tried is not None and (tried.count >= MAX_ATTEMPTS or (
                    tried.failed and now < tried.last + RETRY_AFTER_S * 2 ** (tried.count - 1))):
                continue
            entry.dialing = True
            in_flight += 1
            self.dial_starts.append(now)
            out.append((peer, entry.addrs))
        return out

    def dialed(self, peer: str, ok: bool, now: float) -> None:
        """A dial ended, well or not: it counts as one of the peer's attempts."""
        entry = self.peers.get(peer)
        if entry is not None:
            entry.dialing = False
        tried = self.attempts.get(peer)
        self.attempts[peer] = _Attempts(1 if tried is None else tried.count + 1, now, not ok)
        if len(self.attempts) > MAX_ATTEMPTS_KEPT:
            oldest = min(self.attempts, key=lambda p: self.attempts[p].last)
            del self.attempts[oldest]

    def query_heard(self, now: float) -> None:
        """A query for our service arrived: answer it now or when the gap ends."""
        self.answer_pending = True

    def answer_due(self, now: float) -> bool:
        """True (and the answer counted as sent) if a pending query may be answered now."""
        if not self.answer_pending:
            return False
        if self.last_answer is not None and now - self.last_answer < ANSWER_GAP_S:
            return False
        self.answer_pending = False
        self.last_answer = now
        return True

    def next_answer_at(self) -> float | None:
        """When a pending answer may go, or None if none is pending."""
        if not self.answer_pending:
            return None
        return 0.0 if self.last_answer is None else self.last_answer + ANSWER_GAP_S
