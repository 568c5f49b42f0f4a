"""The connection manager's policy: which room members to dial, which connections to trim.

Rules:
- For each joined room keep live connections to at least `room_peers_min` members
  that were recently present (online ones first, then ones heard within RECENT_MS),
  chosen at random, so that no node turns into a hub because everyone bootstrapped
  to it. Never dial this node itself, a blocked peer, a peer already connected or
  being dialed.
- Above `room_peers_max` connected members in a room, trim at random among
  connections that no other room still needs. Above `max_connections` in all, trim
  the least useful first: peers that share no room, then peers whose rooms have the
  most connections to spare. A connection younger than GRACE_S is never trimmed.
- Addresses back off on failure, keyed by the address itself (not by the peer that
  announced it), so a member that announces a third party's address, or many members
  announcing one address, get it dialed a few times (the delay doubles from
  FIRST_BACKOFF_S: 6 dials in the first minute) and then ever more rarely, up to once
  per MAX_BACKOFF_S. An IP whose addresses failed HOST_FAILURES times in a row backs
  off as a whole for LONG_BACKOFF_S, so varying the port does not help either
  (loopback is exempt: every local daemon shares it). Dials in flight are capped.
- A member's direct addresses are dialed before its relayed ones, except right after
  a relayed connection to it was lost (its direct ones did not work for us, and the
  circuit is what reconnects it). Circuits through relays this node is connected to
  come before circuits through others (a relay that died is not tried first), in the
  order the member announced them (`dial_order`).
- Pure: the caller passes `now` (seconds), the rng, and the state; the result is a
  Plan of dials and trims.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

RECENT_MS = 60 * 60 * 1000
GRACE_S = 30.0
FIRST_BACKOFF_S = 1.0
LONG_BACKOFF_S = 600.0
MAX_BACKOFF_S = 3600.0
HOST_FAILURES = 8
MAX_DIALS_IN_FLIGHT = 4
# Addresses remembered for backoff; the ones failed longest ago are forgotten first.
MAX_TRACKED_ADDRS = 4096


@dataclass(frozen=True)
class Limits:
    """The manager's bounds (config keys of the same names)."""

    room_peers_min: int = 4
    room_peers_max: int = 10
    max_connections: int = 200
    max_dials_in_flight: int = MAX_DIALS_IN_FLIGHT


@dataclass(frozen=True)
class Member:
    """A room member as the directory knows it."""

    peer_id: str
    addrs: tuple[str, ...]
    online: bool
    last_seen_ms: int


@dataclass(frozen=True)
class RoomView:
    """One joined room: its members (this node left out or not, either works)."""

    room: str
    members: tuple[Member, ...]


@dataclass(frozen=True)
class Plan:
    """What to do now: dial (peer, address) pairs and hang up on peers."""

    dials: tuple[tuple[str, str], ...] = ()
    trims: tuple[str, ...] = ()


def relay_of(addr: str) -> str | None:
    """The relay's peer id in `<relay addr>/p2p/<relay>/p2p-circuit...`, else None."""
    before, circuit, _ = addr.partition("/p2p-circuit")
    if not circuit or "/p2p/" not in before:
        return None
    return before.rsplit("/p2p/", 1)[1].split("/")[0]


def dial_order(addrs: Sequence[str], *, relayed_last: bool,
               connected: Collection[str]) -> tuple[str, ...]:
    """A member's announced addresses in the order to dial them: direct ones first
    (last, when our last connection to it was relayed), then circuits through relays in
    `connected`, then the other circuits; otherwise as announced."""
    direct = [a for a in addrs if relay_of(a) is None]
    live = [a for a in addrs if relay_of(a) in connected]
    other = [a for a in addrs if relay_of(a) is not None and relay_of(a) not in connected]
    if relayed_last:
        return (*live, *other, *direct)
    return (*direct, *live, *other)


def host_of(addr: str) -> str:
    """The IP of an `/ip4|ip6/<ip>/tcp/<port>` address (the address itself otherwise)."""
    parts = addr.split("/")
    return parts[2] if len(parts) > 2 else addr


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1"


@dataclass
class _Failures:
    count: int
    retry_at: float
    failed_at: float


@dataclass
class AddressBackoff:
    """Failed dial attempts by address and by IP, with the time each may be tried again."""

    addrs: dict[str, _Failures] = field(default_factory=dict)
    hosts: dict[str, _Failures] = field(default_factory=dict)

    def allowed(self, addr: str, now: float) -> bool:
        """True if the address may be dialed at `now`."""
        for table, key in ((self.addrs, addr), (self.hosts, host_of(addr))):
            state = table.get(key)
            if state is not None and now < state.retry_at:
                return False
        return True

    def failed(self, addr: str, now: float) -> None:
        """A dial of the address failed at `now`."""
        state = self.addrs.get(addr)
        count = 1 if state is None else state.count + 1
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** min(count - 1, 32))
        self.addrs[addr] = _Failures(count, now + delay, now)
        host = host_of(addr)
        if _is_loopback(host):
            self._bound(self.addrs)
            return
        hstate = self.hosts.get(host)
        hcount = 1 if hstate is None else hstate.count + 1
        hretry = now + LONG_BACKOFF_S if hcount >= HOST_FAILURES else 0.0
        self.hosts[host] = _Failures(hcount, hretry, now)
        self._bound(self.addrs)
        self._bound(self.hosts)

    def succeeded(self, addr: str) -> None:
        """A dial of the address worked: forget its failures (and its IP's)."""
        self.addrs.pop(addr, None)
        self.hosts.pop(host_of(addr), None)

    def attempts(self, addr: str) -> int:
        """Failed attempts on record for the address."""
        state = self.addrs.get(addr)
        return 0 if state is None else state.count

    def backing_off(self, now: float) -> int:
        """How many addresses may not be dialed at `now`."""
        return sum(1 for s in self.addrs.values() if now < s.retry_at)

    @staticmethod
    def _bound(table: dict[str, _Failures]) -> None:
        if len(table) > MAX_TRACKED_ADDRS:
            for key in sorted(table, key=lambda k: table[k].failed_at)[
                    : len(table) - MAX_TRACKED_ADDRS]:
                del table[key]


def plan(*, rooms: Sequence[RoomView], connected: Mapping[str, float], self_id: str,
         blocked: Iterable[str], dialing: Iterable[str], backoff: AddressBackoff,
         limits: Limits, now: float, now_ms: int, rng: random.Random) -> Plan:
    """Dials and trims for this moment.

    `connected` maps each connected peer to the time (seconds, same clock as `now`) its
    connection was first seen; `dialing` are peers with a dial in flight.
    """
    blocked_set = set(blocked)
    dialing_set = set(dialing)
    members_of: dict[str, set[str]] = {}
    for view in rooms:
        members_of[view.room] = {m.peer_id for m in view.members if m.peer_id != self_id}
    dials = _dials(rooms, connected, self_id, blocked_set, dialing_set, backoff, limits,
                   now, now_ms, rng)
    trims = _trims(members_of, connected, limits, now, rng)
    return Plan(tuple(dials), tuple(trims))


def worth_keeping(peer: str, rooms: Sequence[RoomView], connected: Collection[str],
                  limits: Limits) -> bool:
    """Whether a connection that another service opened for a moment (a DHT query) is
    one the manager would have dialed: `peer` is a member of a room with fewer than
    `room_peers_min` other members connected.

    Not `room_peers_max`: the manager dials up to the minimum only, and with the
    maximum every querier kept its connections to the DHT's closest nodes to a room's
    key, which all the room's members query. In a room of 50 those nodes held 30-40
    connections each and trimmed them 30 s later, in the middle of whatever the room
    was doing.
    """
    for view in rooms:
        members = {m.peer_id for m in view.members}
        if peer not in members:
            continue
        members.discard(peer)
        if sum(1 for p in members if p in connected) < limits.room_peers_min:
            return True
    return False


def _dials(rooms: Sequence[RoomView], connected: Mapping[str, float], self_id: str,
           blocked: set[str], dialing: set[str], backoff: AddressBackoff, limits: Limits,
           now: float, now_ms: int, rng: random.Random) -> list[tuple[str, str]]:
    budget = limits.max_dials_in_flight - len(dialing)
    room_for = limits.max_connections - len(connected) - len(dialing)
    chosen: dict[str, str] = {}

    def first_allowed(member: Member) -> str | None:
        return next((a for a in member.addrs if backoff.allowed(a, now)), None)

    for view in rooms:
        members = [m for m in view.members if m.peer_id != self_id]
        have = sum(1 for m in members
                   if m.peer_id in connected or m.peer_id in dialing or m.peer_id in chosen)
        need = limits.room_peers_min - have
        if need <= 0:
            continue
        eligible = [m for m in members
                    if m.peer_id not in connected and m.peer_id not in dialing
                    and m.peer_id not in chosen and m.peer_id not in blocked
                    and now_ms - m.last_seen_ms <= RECENT_MS]
        online = [m for m in eligible if m.online]
        recent = [m for m in eligible if not m.online]
        rng.shuffle(online)
        rng.shuffle(recent)
        for member in online + recent:
            if need <= 0 or budget <= 0 or room_for <= 0:
                break
            addr = first_allowed(member)
            if addr is None:
                continue
            chosen[member.peer_id] = addr
            need -= 1
            budget -= 1
            room_for -= 1
    return list(chosen.items())


def _trims(members_of: Mapping[str, set[str]], connected: Mapping[str, float],
           limits: Limits, now: float, rng: random.Random) -> list[str]:
    counts = {room: sum(1 for p in members if p in connected)
              for room, members in members_of.items()}
    rooms_of: dict[str, list[str]] = {}
    for room, members in members_of.items():
        for peer in members:
            if peer in connected:
                rooms_of.setdefault(peer, []).append(room)
    old = [p for p, since in connected.items() if now - since >= GRACE_S]
    rng.shuffle(old)
    trims: list[str] = []

    def drop(peer: str) -> None:
        trims.append(peer)
        for room in rooms_of.get(peer, ()):
            counts[room] -= 1

    # Per room: a surplus member whose every room has a surplus too.
    for peer in old:
        rooms = rooms_of.get(peer)
        if rooms and all(counts[r] > limits.room_peers_max for r in rooms):
            drop(peer)
    # In all: the least useful first.
    excess = len(connected) - len(trims) - limits.max_connections
    if excess > 0:
        left = [p for p in old if p not in trims]

        def usefulness(peer: str) -> tuple[int, int]:
            rooms = rooms_of.get(peer, [])
            needed = sum(1 for r in rooms if counts[r] <= limits.room_peers_min)
            return (needed, len(rooms))

        left.sort(key=usefulness)  # stable: ties stay in their random order
        for peer in left[:excess]:
            drop(peer)
    return trims
