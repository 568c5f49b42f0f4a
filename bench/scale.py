"""Scale: a 1,000-message burst in a room of 50 daemons; what does each member pay?

What: `daemons` gossipchatd processes (50 in --full) in a sparse seeded topology, one
room, and the burst of bench/burst.py run on them as it is (three senders calling
`send` back to back, the same warm-up, settling, convergence check and deadline):
- delivered_ratio, converge_s: as in burst (fraction of the burst every member's
  history holds at the end; first send until all hold all of it, None if never).
- cpu_ms_per_msg_per_daemon: as in burst, the members' CPU from the first send until
  convergence (or the deadline) over messages x members.
- idle_cpu_pct_per_daemon: after the burst, once the room has settled (the members
  together under 1% of a core each, for up to idle_settle_timeout_s), the members'
  CPU over a quiet window of idle_window_s in which nobody calls them, as percent of
  one core per member: what heartbeats, presence and periodic sync cost in a room of
  this size.

How: the daemons start once (launched together, READY_TIMEOUT_S per daemon: 50 of
them importing py-libp2p on 2 cores take about a minute, start_s), settle, and dial
the topology (each failed dial tried again); each run uses a fresh room,
and after its idle window every member leaves it again, so that each burst and each
idle window sees the members in one room. The members' per-room counts are sampled
every sample_s (0.5 s, not burst's 0.1 s: a sweep is one call per member, and the
sweeps are part of the CPU measured).

Bounded: the burst stops at deadline_s whether or not it converged (the senders give
up there too), the settling waits at most idle_settle_timeout_s, and every other wait
has a deadline; a run that misses one reports what it got.

No baseline here: bare gossip at this size is what burst's baselines show at 10.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .burst import (
    KEYS,
    WORST,
    BurstConfig,
    burst_room,
    gossipchat_round,
    quiet_cores,
    run_rounds,
)
from .daemons import Caller, Cluster, cluster_load, sparse_topology, wait_quiet
from .stats import aggregate, percent_per_process, rounded

READY_TIMEOUT_S = 240.0  # 50 daemons starting at once on 2 busy cores
START_SETTLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ScaleConfig(BurstConfig):
    """Sizes of the scale scenario: burst's, other defaults, and the idle window."""

    seed: int = 20240603
    deadline_s: float = 90.0
    sample_s: float = 0.5
    idle_window_s: float = 5.0
    idle_settle_timeout_s: float = 30.0


def _scale_round(cluster: Cluster, cfg: ScaleConfig, r: int,
                 samplers: list[Caller]) -> dict[str, Any]:
    burst = gossipchat_round(cluster, cfg, r, samplers)
    n = len(cluster.daemons)
    pids = [d.pid for d in cluster.daemons]
    settle_s, settle_load = wait_quiet(pids, below_cores=quiet_cores(n), window_s=1.0,
                                       timeout=cfg.idle_settle_timeout_s)
    idle_cores = cluster_load(pids, cfg.idle_window_s)
    cluster.leave_all(burst_room(r))
    return {
        **burst.summary(),
        "idle_cpu_pct_per_daemon": rounded(percent_per_process(idle_cores, n)),
        "idle_settle_s": rounded(settle_s),
        "idle_settle_load_cores": rounded(settle_load),
    }


def run(cfg: ScaleConfig) -> dict[str, Any]:
    """Run the scenario; returns its JSON section."""
    edges = sparse_topology(cfg.daemons, cfg.dials, cfg.seed)
    with Cluster("scale", ready_timeout=READY_TIMEOUT_S) as cluster:
        started = time.monotonic()
        daemons = cluster.start_many(cfg.daemons)
        start_s = time.monotonic() - started
        # Dial once the start-up wave has passed: dials into 50 daemons still busy
        # starting miss the daemon's 10 s dial limit (Cluster.connect retries, too).
        wait_quiet([d.pid for d in daemons], below_cores=quiet_cores(cfg.daemons),
                   timeout=START_SETTLE_TIMEOUT_S)
        cluster.connect(edges, timeout=120.0)
        runs = run_rounds(cluster, cfg, _scale_round)
    return {
        "daemons": cfg.daemons,
        "messages": cfg.messages,
        "senders": cfg.senders,
        "rounds": cfg.rounds,
        "topology": {"dials_per_node": cfg.dials, "seed": cfg.seed, "edges": len(edges)},
        "deadline_s": cfg.deadline_s,
        "idle_window_s": cfg.idle_window_s,
        "start_s": rounded(start_s),
        **aggregate(runs, (*KEYS, "idle_cpu_pct_per_daemon"), none_is_worst=WORST),
        "runs": runs,
    }
