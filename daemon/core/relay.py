"""Circuit relay v2 book-keeping, sans-IO: reservations and circuits a relay holds,
and the limits it enforces (daemon/adapters/relay.py does the wire and the splice).

- A reservation is for the peer id Noise authenticated on the RESERVE stream, never
  one the message names. It lasts `reservation_ttl_s` and is renewed by another
  RESERVE; at most `max_reservations` live at once (a renewal always fits).
- A circuit needs a live reservation of its destination. Each peer takes part in at
  most `max_circuits_per_peer` circuits (as source or destination) and the relay
  carries at most `max_circuits`.
- Each circuit carries at most `circuit_bytes` per direction for at most
  `circuit_duration_s` seconds; the adapter then resets both streams (never writes
  anything into the spliced data).
- Two members that dial each other through relays at the same moment get a circuit
  each way. Both keep the circuits the lower peer id dialed and close the others
  (`crossed_circuits`): the same ones on both sides, with no message between them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# circuit v2 Status values (HopMessage / StopMessage).
OK = 100
RESERVATION_REFUSED = 200
RESOURCE_LIMIT_EXCEEDED = 201
PERMISSION_DENIED = 202
CONNECTION_FAILED = 203
NO_RESERVATION = 204
MALFORMED_MESSAGE = 400
UNEXPECTED_MESSAGE = 401


@dataclass(frozen=True)
class RelayLimits:
    """What a relay grants; config keys relay_* (docs/limits.md)."""

    max_reservations: int = 128
    max_circuits: int = 256
    max_circuits_per_peer: int = 16
    reservation_ttl_s: float = 3600.0
    circuit_duration_s: float = 3600.0
    circuit_bytes: int = 64 * 1024 * 1024


class RelayBook:
    """Who holds a reservation, which circuits run, and what was refused."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._reservations: dict[str, float] = {}  # peer -> expires (monotonic)
        self._circuits: Counter[str] = Counter()  # peer -> circuits it takes part in
        self.circuits = 0
        self.refused: Counter[str] = Counter()
        self.circuits_opened = 0
        self.circuits_cut = 0  # by a duration or byte limit
        self.bytes_relayed = 0

    def _expire(self, now: float) -> None:
        for peer in [p for p, t in self._reservations.items() if t <= now]:
            del self._reservations[peer]

    def reserve(self, peer: str, now: float) -> int:
        """RESERVE from an authenticated peer: OK (expires now + ttl) or a refusal."""
        self._expire(now)
        if peer not in self._reservations \
                and len(self._reservations) >= self.limits.max_reservations:
            self.refused["reservations"] += 1
            return RESOURCE_LIMIT_EXCEEDED
        self._reservations[peer] = now + self.limits.reservation_ttl_s
        return OK

    def drop(self, peer: str) -> None:
        """The peer went away: its reservation ends with its connection."""
        self._reservations.pop(peer, None)

    def has_reservation(self, peer: str, now: float) -> bool:
        """True while the peer holds a live reservation."""
        self._expire(now)
        return peer in self._reservations

    def open_circuit(self, src: str, dst: str, now: float) -> int:
        """CONNECT from src to dst: OK (counted; call close_circuit) or a refusal."""
        if not self.has_reservation(dst, now):
            self.refused["no_reservation"] += 1
            return NO_RESERVATION
        per_peer = self.limits.max_circuits_per_peer
        if self.circuits >= self.limits.max_circuits or self._circuits[src] >= per_peer \
                or self._circuits[dst] >= per_peer:
            self.refused["circuits"] += 1
            return RESOURCE_LIMIT_EXCEEDED
        self._circuits[src] += 1
        self._circuits[dst] += 1
        self.circuits += 1
        self.circuits_opened += 1
        return OK

    def close_circuit(self, src: str, dst: str, *, cut: bool, relayed: int) -> None:
        """A circuit ended (cut: by a limit) after relaying `relayed` bytes."""
        for peer in (src, dst):
            self._circuits[peer] -= 1
            if self._circuits[peer] <= 0:
                del self._circuits[peer]
        self.circuits -= 1
        self.circuits_cut += int(cut)
        self.bytes_relayed += relayed

    def reservations(self, now: float) -> int:
        """Live reservations."""
        self._expire(now)
        return len(self._reservations)


def crossed_circuits(us: str, them: str, dialed_by_us: Sequence[bool]) -> list[int]:
    """Of our relayed connections to `them` (True where we dialed it), the indices to
    close: the ones the higher peer id dialed, once one the lower peer id dialed is up.
    Both ends compute the same split, so each connection is kept or closed by both."""
    lower_dials = us < them  # True: the circuits we dialed are the ones kept
    if lower_dials not in dialed_by_us:
        return []
    return [i for i, ours in enumerate(dialed_by_us) if ours != lower_dials]
