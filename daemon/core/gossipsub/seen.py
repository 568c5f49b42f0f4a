"""The seen cache: message ids heard within a TTL, so a message is handled once.

Pure: callers pass `now` (seconds). Entries expire in insertion order, which is time
order, so expiry is a walk from the front of an ordered dict.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SeenCache"]


class SeenCache:
    """Ids seen in the last `ttl` seconds (go's default TTL is 2 minutes)."""

    def __init__(self, ttl: float = 120.0, max_entries: int = 200_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._at: OrderedDict[bytes, float] = OrderedDict()

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._at

    def __len__(self) -> int:
        return len(self._at)

    def add(self, msg_id: bytes, now: float) -> bool:
        """Remember an id; False if it was seen already."""
        if msg_id in self._at:
            return False
        self._at[msg_id] = now
        while len(self._at) > self.max_entries:
            self._at.popitem(last=False)
        return True

    def expire(self, now: float) -> None:
        """Forget ids older than the TTL."""
        limit = now - self.ttl
        while self._at:
            msg_id, at = next(iter(self._at.items()))
            if at > limit:
                break
            del self._at[msg_id]
