"""Footprint: memory of an idle daemon in five rooms, and how long it takes to start.

What:
- ready_s: from spawning `gossipchatd` (fresh home, so it also makes its identity key
  and store) to its ready line on stdout.
- rss_mb_idle_5_rooms: VmRSS from /proc/<pid>/status once the daemon has joined five
  rooms and then sat idle for `idle_s` (no peers, no traffic), sampled twice a second;
  the last sample is reported, the peak beside it.

How: one daemon at a time, alone on the machine, so start-up has both cores; each
run uses a fresh home. Runs come first in the suite, before any cluster has heated
the page cache and the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .daemons import Cluster
from .stats import aggregate, rounded

ROOMS = 5


@dataclass(frozen=True)
class FootprintConfig:
    """Sizes of the footprint scenario."""

    rounds: int
    idle_s: float = 3.0
    sample_s: float = 0.5


def _round(cfg: FootprintConfig, r: int) -> dict[str, Any]:
    with Cluster(f"fp{r}") as cluster:
        (daemon,) = cluster.start_many(1)
        with daemon.client() as client:
            for i in range(ROOMS):
                client.join(f"idle-{i}")
        samples = []
        end = time.monotonic() + cfg.idle_s
        # Idle for idle_s is what is measured; the sampling runs meanwhile.
        while True:
            samples.append(daemon.rss_mb())
            if time.monotonic() >= end:
                break
            time.sleep(cfg.sample_s)
        return {
            "ready_s": rounded(daemon.ready_seconds),
            "rss_mb_idle_5_rooms": rounded(samples[-1], 1),
            "rss_mb_peak": rounded(max(samples), 1),
        }


KEYS = ("rss_mb_idle_5_rooms", "rss_mb_peak", "ready_s")


def run(cfg: FootprintConfig) -> dict[str, Any]:
    """Run the footprint scenario; returns its JSON section."""
    runs = [_round(cfg, r) for r in range(cfg.rounds)]
    return {
        "rooms": ROOMS,
        "idle_s": cfg.idle_s,
        **aggregate(runs, KEYS),
        "runs": runs,
    }
