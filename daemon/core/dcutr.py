"""DCUtR (`/libp2p/dcutr`, libp2p/specs relay/DCUtR.md), sans-IO: the message codec,
the addresses a peer may be sent and may be dialed at, and the punch book-keeping
(daemon/adapters/dcutr.py does the stream I/O and the dials).

The protocol, between A (dialed B through a relay) and B (received the relayed
connection, so B is the one behind a NAT that initiates):

0. if A announced a public address (identify), B dials it, and is done if it works;
1. B opens `/libp2p/dcutr` on the relayed connection and sends CONNECT with its
   public addresses, starting a timer;
2. A answers CONNECT with its own addresses; B's timer gives the RTT;
3. B sends SYNC and dials A's addresses after RTT/2; A dials B's as soon as SYNC
   arrives: the SYNs cross, TCP simultaneous open. On that connection A is the
   client (Noise initiator) and B the server (`upgrades_as_client`).
4. Once a direct connection works, the relayed one is closed. B tries up to
   `MAX_ATTEMPTS` times on the same stream, then stays on the relay.

Rules here:
- A message is `HolePunch {optional Type type = 1; repeated bytes ObsAddrs = 2}` with
  CONNECT = 100 and SYNC = 300, at most `MAX_MESSAGE` bytes and `MAX_ADDRS` addresses;
  unknown fields are skipped, as protobuf wants. Anything else raises `DcutrError`
  (a `ProtocolError`), never another exception.
- Addresses are binary multiaddrs. Only `/ip4|ip6/<ip>/tcp/<port>` (optionally with
  `/p2p/<id>`) on a public-looking IP is sent or dialed: no circuits, no loopback,
  LAN (RFC 1918, CGNAT, ULA), link-local, multicast or unspecified IPs, no port 0.
  198.18.0.0/15 counts as public: the tests use it so.
- Behind a port-preserving NAT a punch leaves from our listen port, so the addresses
  we send are our observed public IPs with our listen ports (`predicted_addrs`),
  as go-libp2p and py-libp2p predict them.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from ..errors import ProtocolError
from . import protobuf, varint

PROTOCOL: Final = "/libp2p/dcutr"
CONNECT: Final = 100
SYNC: Final = 300
MAX_MESSAGE: Final = 4 * 1024
MAX_ADDRS: Final = 16
MAX_ADDR_BYTES: Final = 128
MAX_ATTEMPTS: Final = 3
# After MAX_ATTEMPTS failed attempts, leave the peer on its relay this long.
RETRY_AFTER_S: Final = 600.0

# multiaddr protocol codes
_IP4: Final = 4
_TCP: Final = 6
_IP6: Final = 41
_P2P_CIRCUIT: Final = 290
_P2P: Final = 421

_LAN_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


class DcutrError(ProtocolError):
    """A peer sent a DCUtR message that is not one: junk, too long, a wrong type."""


@dataclass(frozen=True)
class HolePunch:
    """One DCUtR message: its type (CONNECT or SYNC) and the binary addresses."""

    type: int
    addrs: tuple[bytes, ...] = ()


def encode(msg: HolePunch) -> bytes:
    """The protobuf bytes of a message (without the length prefix)."""
    if msg.type not in (CONNECT, SYNC):
        raise ValueError(f"not a DCUtR message type: {msg.type}")
    out = protobuf.varint_field(1, msg.type)
    for addr in msg.addrs[:MAX_ADDRS]:
        out += protobuf.len_field(2, addr)
    return out


def decode(data: bytes) -> HolePunch:
    """Parse one message; `DcutrError` for anything that is not a valid one."""
    if len(data) > MAX_MESSAGE:
        raise DcutrError(f"DCUtR message of {len(data)} bytes (limit {MAX_MESSAGE})")
    kind: int | None = None
    addrs: list[bytes] = []
    try:
        for number, wire, value in protobuf.iter_fields(data):
            if number == 1:
                if wire != protobuf.WIRE_VARINT:
                    raise DcutrError("DCUtR type is not a varint")
                assert isinstance(value, int)
                kind = value
            elif number == 2:
                if wire != protobuf.WIRE_LEN:
                    raise DcutrError("DCUtR address is not bytes")
                assert isinstance(value, memoryview)
                addrs.append(bytes(value))
    except protobuf.ProtobufError as exc:
        raise DcutrError(f"malformed DCUtR message: {exc}") from None
    if kind not in (CONNECT, SYNC):
        raise DcutrError(f"DCUtR message of type {kind}")
    if len(addrs) > MAX_ADDRS:
        raise DcutrError(f"DCUtR message with {len(addrs)} addresses (limit {MAX_ADDRS})")
    return HolePunch(kind, tuple(addrs))


def frame(msg: HolePunch) -> bytes:
    """A message with its varint length prefix, as it goes on the stream."""
    body = encode(msg)
    return varint.encode(len(body)) + body


# addresses


def public_ip(text: str) -> bool:
    """True for an IP another network could reach us at (see the module rules)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return False
    if any(ip.version == net.version and ip in net for net in _LAN_NETS):
        return False
    return not (ip.version == 4 and ip in ipaddress.ip_network("240.0.0.0/4"))


def _tcp_parts(addr: str) -> tuple[str, str, int] | None:
    """(ip4|ip6, ip, port) of `/ip4|ip6/<ip>/tcp/<port>[/p2p/<id>]`, else None."""
    parts = addr.split("/")
    if len(parts) not in (5, 7) or parts[0] != "" or parts[1] not in ("ip4", "ip6") \
            or parts[3] != "tcp" or (len(parts) == 7 and parts[5] != "p2p"):
        return None
    if not parts[4].isdigit() or not 0 < int(parts[4]) < 65536 or len(parts[4]) > 5:
        return None
    try:
        ip = ipaddress.ip_address(parts[2])
    except ValueError:
        return None
    if (ip.version == 4) != (parts[1] == "ip4"):
        return None
    return parts[1], str(ip), int(parts[4])


def dialable(addr: str) -> str | None:
    """`/ip4|ip6/<ip>/tcp/<port>` of a text multiaddr worth punching to, else None."""
    parts = _tcp_parts(addr)
    if parts is None or not public_ip(parts[1]):
        return None
    return f"/{parts[0]}/{parts[1]}/tcp/{parts[2]}"


def addr_to_bytes(addr: str) -> bytes:
    """The binary multiaddr of `/ip4|ip6/<ip>/tcp/<port>` (ValueError otherwise)."""
    parts = _tcp_parts(addr)
    if parts is None or len(addr.split("/")) != 5:
        raise ValueError(f"not an ip/tcp multiaddr: {addr!r}")
    family, ip, port = parts
    packed = ipaddress.ip_address(ip).packed
    return varint.encode(_IP4 if family == "ip4" else _IP6) + packed \
        + varint.encode(_TCP) + port.to_bytes(2, "big")


def addr_from_bytes(data: bytes) -> str | None:
    """`/ip4|ip6/<ip>/tcp/<port>` of a binary multiaddr of that shape (a trailing
    `/p2p/<id>` is dropped); None for every other or malformed address."""
    if len(data) > MAX_ADDR_BYTES:
        return None
    try:
        code, pos = varint.decode(data, 0)
        if code == _IP4:
            size, family = 4, "ip4"
        elif code == _IP6:
            size, family = 16, "ip6"
        else:
            return None
        if len(data) < pos + size:
            return None
        ip = ipaddress.ip_address(data[pos:pos + size])
        pos += size
        code, pos = varint.decode(data, pos)
        if code != _TCP or len(data) < pos + 2:
            return None
        port = int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        if pos < len(data):
            code, pos = varint.decode(data, pos)
            if code != _P2P:
                return None  # a circuit (290) or anything else we do not dial
            size, pos = varint.decode(data, pos)
            if pos + size != len(data):
                return None
    except varint.VarintError:
        return None
    if port == 0:
        return None
    return f"/{family}/{ip}/tcp/{port}"


def peer_addrs(raw: tuple[bytes, ...]) -> list[str]:
    """The addresses of a peer's CONNECT worth dialing, in its order, no duplicates."""
    out: list[str] = []
    for data in raw[:MAX_ADDRS]:
        text = addr_from_bytes(data)
        if text is not None and dialable(text) is not None and text not in out:
            out.append(text)
    return out


def predicted_addrs(observed: list[str], listen: list[str]) -> list[str]:
    """The public addresses to send in CONNECT, at most MAX_ADDRS.

    Public listen addresses as they are; then each public IP peers observed us at,
    with each of our TCP listen ports of its family: a port-preserving NAT maps a
    punch that leaves from the listen port to that port.
    """
    out: list[str] = []
    ports: list[tuple[str, int]] = []
    for addr in listen:
        parts = _tcp_parts(addr)
        if parts is None:
            continue
        ports.append((parts[0], parts[2]))
        text = dialable(addr)
        if text is not None:
            out.append(text)
    for addr in observed:
        split = addr.split("/")
        if len(split) < 3 or split[1] not in ("ip4", "ip6") or not public_ip(split[2]):
            continue
        out.extend(f"/{family}/{split[2]}/tcp/{port}" for family, port in ports
                   if family == split[1])
    return list(dict.fromkeys(out))[:MAX_ADDRS]


# book-keeping


@dataclass
class HolePunchStats:
    """`status.holepunch`: what punching did, and the last success's timings."""

    attempts: int = 0  # one CONNECT/SYNC exchange and its dials, either role
    succeeded: int = 0  # peers that went from relayed to direct
    unilateral: int = 0  # of which by a plain dial of the peer's public address
    failed: Counter[str] = field(default_factory=Counter)  # by reason
    last_rtt_ms: float | None = None
    last_time_to_direct_s: float | None = None  # relayed connection up -> direct

    def view(self) -> dict[str, object]:
        """The JSON form."""
        return {"attempts": self.attempts, "succeeded": self.succeeded,
                "unilateral": self.unilateral,
                "failed": dict(self.failed), "last_rtt_ms": self.last_rtt_ms,
                "last_time_to_direct_s": self.last_time_to_direct_s}


class PunchBook:
    """Which peers are being punched to, and which gave up lately (by `now`)."""

    def __init__(self, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.retry_after_s = retry_after_s
        self._running: set[str] = set()
        self._gave_up: dict[str, float] = {}  # peer -> when

    def start(self, peer: str, now: float) -> bool:
        """True if a punch to `peer` may start now (none runs, none failed lately)."""
        if peer in self._running:
            return False
        failed_at = self._gave_up.get(peer)
        if failed_at is not None and now - failed_at < self.retry_after_s:
            return False
        self._gave_up.pop(peer, None)
        self._running.add(peer)
        return True

    def finish(self, peer: str, now: float, *, direct: bool) -> None:
        """A punch ended; without a direct connection, wait before the next."""
        self._running.discard(peer)
        if not direct:
            self._gave_up[peer] = now

    def running(self, peer: str) -> bool:
        """True while a punch to `peer` runs."""
        return peer in self._running


def upgrades_as_client(*, initiator: bool) -> bool:
    """Our role on the punched connection: True for the client (Noise initiator).

    A, which answered the punch, is the client and B, which initiated it, the server,
    as go-libp2p (`holePunchConnect(..., isClient)`: false on B, true on A) and
    js-libp2p (@libp2p/dcutr: B dials with `initiator: false`) have it. Until
    2026-12 we had it the other way round: a true simultaneous open with go or js
    then had two Noise initiators, and with js, whose dials leave from an ephemeral
    port so that only A's SYN ever reaches B's listener, two responders
    (tests/integration/test_dcutr_interop.py). The roles also match a plain
    accepted SYN of A's: B's listener is the server.
    """
    return not initiator


def sync_delay(rtt_s: float) -> float:
    """How long B waits after SYNC before dialing: half the RTT, bounded."""
    return min(max(rtt_s / 2, 0.0), 5.0)
