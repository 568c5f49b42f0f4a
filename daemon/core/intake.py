"""When the gossip intake writes at once and when it waits for more.

Rules:
- Every batch of gossip the intake writes to the store costs a SQLite transaction:
  a BEGIN and a WAL commit, whatever the batch holds. In a burst they came to a
  tenth of a forwarding daemon's CPU with one or two messages per batch.
- So while gossip flows fast (at least `burst_messages` messages taken in the last
  `window_s`), a batch waits up to `linger_s` for more before it is written.
- Otherwise, as for a message after a pause in a conversation, a batch is written
  and delivered at once: only a busy room's messages reach the screen later, and by
  at most `linger_s`.
- Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class IntakePacer:
    """How long the next batch waits: 0 unless gossip is flowing fast."""

    burst_messages: int = 10
    window_s: float = 0.1
    linger_s: float = 0.02
    _taken: deque[tuple[float, int]] = field(default_factory=deque)
    _in_window: int = 0

    def linger(self, now: float) -> float:
        """Seconds a batch that has just started should wait for more."""
        self._forget(now)
        return self.linger_s if self._in_window >= self.burst_messages else 0.0

    def took(self, now: float, count: int) -> None:
        """The intake has written a batch of `count` messages."""
        self._taken.append((now, count))
        self._in_window += count
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._taken and self._taken[0][0] < now - self.window_s:
            self._in_window -= self._taken.popleft()[1]
