"""Store health: whether the SQLite store takes writes, and what waits until it does.

Rules:
- Pure state: no clock, no I/O; callers pass `now_ms`.
- A failed write makes the store degraded until a write succeeds again. Damage (a
  "malformed" page) keeps it degraded until a restart, whose start-up check refuses
  the file and says how to rebuild it from peers.
- Verified envelopes that could not be written wait in a bounded buffer, in arrival
  order and without duplicates; what does not fit is counted and left to history sync,
  which fetches it from peers once the store takes writes again.
- Write retries back off from RETRY_FIRST_S, doubling up to RETRY_MAX_S.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import StoreDamaged, StoreUnavailable
from .envelope import Envelope

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
PENDING_MAX_BYTES = 16 * 1024 * 1024


@dataclass
class StoreHealth:
    """Counts storage errors and says whether the store is degraded, and why."""

    writes_failing: bool = False
    damaged: bool = False
    reason: str = ""
    since_ms: int = 0
    write_errors: int = 0
    read_errors: int = 0
    recoveries: int = 0

    @property
    def degraded(self) -> bool:
        """True while writes fail or after damage was found."""
        return self.writes_failing or self.damaged

    def failed(self, error: StoreUnavailable, *, write: bool, now_ms: int) -> bool:
        """Record one storage error; True if it is news: writes began failing, or the
        store was found damaged."""
        damage = isinstance(error, StoreDamaged)
        # SQLite's own words ("database or disk is full") say it shortest.
        data = error.data if isinstance(error.data, dict) else {}
        reason = str(data.get("sqlite", error.message))
        news = (write and not self.writes_failing) or (damage and not self.damaged)
        if not self.degraded and (write or damage):
            self.since_ms = now_ms
        if write:
            self.write_errors += 1
            self.writes_failing = True
        else:
            self.read_errors += 1
        if damage or (write and not self.damaged):
            # A transient read error on a healthy store is counted, not reported as the
            # state of the store; and damage, once found, stays the reason given.
            self.reason = reason
        if damage:
            self.damaged = True
        return news

    def write_succeeded(self) -> bool:
        """A write went through; True if that ended a spell of failing writes."""
        if not self.writes_failing:
            return False
        self.writes_failing = False
        self.recoveries += 1
        if not self.damaged:
            self.reason = ""
            self.since_ms = 0
        return True

    def view(self) -> dict[str, Any]:
        """The `store` section of `status` (without the pending buffer)."""
        return {
            "degraded": self.degraded,
            "reason": self.reason or None,
            "damaged": self.damaged,
            "since_ms": self.since_ms or None,
            "write_errors": self.write_errors,
            "read_errors": self.read_errors,
            "recoveries": self.recoveries,
        }


class PendingEnvelopes:
    """Verified envelopes waiting for the store, bounded by their wire bytes."""

    def __init__(self, max_bytes: int = PENDING_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0
        self._held: dict[bytes, Envelope] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, envelopes: Iterable[Envelope]) -> int:
        """Keep what fits (duplicates once); count the rest as dropped. Returns how many
        were newly kept."""
        kept = 0
        for env in envelopes:
            if env.id in self._held:
                continue
            if self.bytes + len(env.wire) > self.max_bytes:
                self.dropped += 1
                continue
            self._held[env.id] = env
            self.bytes += len(env.wire)
            kept += 1
        return kept

    def envelopes(self) -> list[Envelope]:
        """The held envelopes, oldest first."""
        return list(self._held.values())

    def release(self, written: Iterable[Envelope]) -> None:
        """Forget envelopes that are on disk now."""
        for env in written:
            if self._held.pop(env.id, None) is not None:
                self.bytes -= len(env.wire)


class Backoff:
    """Delays between retries: first_s, doubling up to max_s; `reset` starts over."""

    def __init__(self, first_s: float = RETRY_FIRST_S, max_s: float = RETRY_MAX_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the one after."""
        delay = self._next
        self._next = min(self.max_s, self._next * 2)
        return delay

    def reset(self) -> None:
        """Start again from first_s."""
        self._next = self.first_s
