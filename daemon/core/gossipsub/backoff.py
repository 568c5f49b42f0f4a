"""PRUNE backoff: after a PRUNE, neither side GRAFTs the other on that topic until the
backoff runs out (GossipSub v1.1). Pure: callers pass `now`."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """(topic, peer) -> the time before which we must not GRAFT."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}

    def add(self, topic: str, peer: str, seconds: float, now: float) -> None:
        """Back off from `peer` on `topic` for `seconds` (never shortening one held)."""
        until = now + seconds
        key = (topic, peer)
        if self._until.get(key, 0.0) < until:
            self._until[key] = until

    def active(self, topic: str, peer: str, now: float) -> bool:
        """True while we must not GRAFT `peer` on `topic`."""
        return self.until(topic, peer) > now

    def until(self, topic: str, peer: str) -> float:
        """When the backoff from `peer` on `topic` ends (0.0 if there is none)."""
        return self._until.get((topic, peer), 0.0)

    def expire(self, now: float) -> None:
        """Forget backoffs that ran out."""
        for key in [k for k, until in self._until.items() if until <= now]:
            del self._until[key]
