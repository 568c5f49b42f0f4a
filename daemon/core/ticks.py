"""When a periodic task wakes next: on a grid shared by all of the daemon's timers.

Rules:
- A task that runs every `period` seconds sleeps until the next multiple of `period`
  on the event loop's clock, not for `period` from whenever it last ran. The
  daemon's one-second timers (the gossipsub heartbeat, peer scoring, presence, the
  DHT, sync) then come due at the same instant and the loop wakes once for all of
  them; so do the two-second and thirty-second ones, on the same grid.
- Why: a process that sleeps between timers pays for each wake-up on its own (cold
  caches, the kernel's timer and the loop's round), about 0.3 ms each on the bench
  machine. Ten timers at 1 Hz in separate phases cost a quiet daemon ten times what
  one shared wake-up does: a quiet member of a 50-daemon room used 0.29% of a core
  with its timers apart, and 0.18% with them on the grid.
- The grid makes the timers wake in one round of the loop; adapters/timers.py makes
  that round cost one timer expiry, not one per timer (trio wakes a sleeper by
  raising `Cancelled` through it: over a quarter of a lone daemon's CPU).
- The phase differs from process to process (trio's clock starts at a random
  offset), so daemons on one host do not all wake together.
- Pure: the caller passes `now`.
"""

from __future__ import annotations

import math


def next_at(now: float, period: float) -> float:
    """The first multiple of `period` after `now` (never `now` itself)."""
    if period <= 0:
        raise ValueError(f"period must be positive, not {period}")
    return (math.floor(now / period) + 1) * period
