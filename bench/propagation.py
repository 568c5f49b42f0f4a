"""Propagation: how fast one chat message reaches every other member, at a steady rate.

What: `daemons` gossipchatd processes in a sparse random topology (each dials `dials`
random others, seeded, so every run of the suite has the same graph), all in one room.
One message per 1/rate seconds, from rotating senders, `messages` per run. Latency is
the arrival time on each other daemon minus the send time; delivered_ratio is the
arrivals within the deadline over messages x (daemons - 1).

How:
- Send time is `time.time()` just before the `send` call. Arrival is `time.time()` as
  the notification is read off a `subscribe` connection to each daemon (one thread
  reads them all: bench/daemons.py WatchHub), so our figure includes the daemon's
  verify-store-notify path and the RPC hop to a client: what a chat program would
  see. The baselines stamp arrivals inside their nodes.
- The daemons start once per suite run; each of the `rounds` runs uses a fresh room
  (join, wait until every daemon sees its neighbours in the room, one warm-up message
  that must reach everyone, then the measured messages). Starting 20 daemons costs
  about 20 s of both cores, which a full run cannot spend three times per scenario.
- After the warm-up, the round waits (up to SETTLE_TIMEOUT_S) until the processes
  together use under a quarter of a core: joining a room sets off a storm of join
  messages and history-sync sessions that is not steady-state chat. How long that
  took (settle_s) and the load left (settle_load_cores) are in each run, and
  idle_load_cores is the cluster's CPU use, in cores, idle after the last round.
- The deadline is `grace_s` after the last send; later arrivals count as lost.
- self_p50_ms is the sender's own feed: send to the message showing up in the
  sender's `watch`, no network involved (for the baseline: publish to the raw
  node's own subscription), the fixed cost under every other figure.
- by_hop splits the latencies by how far the receiver is from the sender in the
  dialed graph (hops, all rounds pooled): pairs, p50_ms and p90_ms for each distance.
  It tells the cost of a hop from the length of the paths. The daemons may dial
  more members by themselves; at 20 daemons they hold about the dialed graph
  (5.8 live connections each against 5.7 dialed, measured 2026-12-06).

Baselines: the same number of bare GossipSub processes with the daemon's parameters,
the same topology and seed, the same rate and rotation, the same warm-up and
settling; arrival is stamped inside the node as its subscription yields. `baseline`
is bench/raw_node.py on py-libp2p; `baseline_js` is tests/interop/bench_gossip_node.mjs
on js-libp2p with @libp2p/gossipsub (skipped where node or its packages are missing).
A baseline that fails becomes {"error": ...} in its place; ours still stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from harness.waiting import WaitTimeout, wait_for

from .daemons import Cluster, cluster_load, sparse_topology, start_watchers, wait_quiet
from .raw_cluster import (
    JS_NODE,
    JS_WHAT,
    PY_NODE,
    RawCluster,
    RawNode,
    js_missing,
    run_baseline,
)
from .stats import aggregate, percentile, rounded

WARMUP_TIMEOUT_S = 20.0
SETTLE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PropagationConfig:
    """Sizes of the propagation scenario."""

    daemons: int
    messages: int
    rounds: int
    rate_msg_s: float = 1.0
    dials: int = 3
    seed: int = 20240601
    grace_s: float = 5.0
    idle_window_s: float = 2.0


@dataclass
class RoundResult:
    """One run: per-pair latencies and how many pairs arrived."""

    latencies_ms: list[float] = field(default_factory=list)
    self_ms: list[float] = field(default_factory=list)
    by_hop: dict[int, list[float]] = field(default_factory=dict)  # distance -> latencies
    expected: int = 0
    late_or_lost: int = 0
    warmup_s: float = 0.0
    settle_s: float = 0.0
    settle_load_cores: float = 0.0
    subscriptions_unseen: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "p50_ms": rounded(percentile(self.latencies_ms, 50)),
            "p90_ms": rounded(percentile(self.latencies_ms, 90)),
            "p99_ms": rounded(percentile(self.latencies_ms, 99)),
            "max_ms": rounded(max(self.latencies_ms, default=0.0)),
            "self_p50_ms": rounded(percentile(self.self_ms, 50)),
            "delivered_ratio": rounded(len(self.latencies_ms) / self.expected, 4)
            if self.expected else None,
            "warmup_s": rounded(self.warmup_s),
            "settle_s": rounded(self.settle_s),
            "settle_load_cores": rounded(self.settle_load_cores),
            "subscriptions_unseen": self.subscriptions_unseen,
        }


def hop_distances(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int | None]]:
    """distances[a][b]: the fewest edges from node a to node b (None if unreachable)."""
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    distances: list[list[int | None]] = []
    for start in range(n):
        row: list[int | None] = [None] * n
        row[start] = 0
        queue = [start]
        for node in queue:
            further = (row[node] or 0) + 1  # every node queued has its distance
            for other in neighbours[node]:
                if row[other] is None:
                    row[other] = further
                    queue.append(other)
        distances.append(row)
    return distances


def by_hop_summary(rounds: Sequence[RoundResult]) -> dict[str, dict[str, Any]]:
    """Latencies by hop distance, all rounds pooled (see the module's doc)."""
    pooled: dict[int, list[float]] = {}
    for result in rounds:
        for hops, latencies in result.by_hop.items():
            pooled.setdefault(hops, []).extend(latencies)
    return {str(hops): {"pairs": len(latencies),
                        "p50_ms": rounded(percentile(latencies, 50)),
                        "p90_ms": rounded(percentile(latencies, 90))}
            for hops, latencies in sorted(pooled.items())}


def all_have(arrivals: list[dict[str, float]], tag: str) -> bool:
    """True once every arrival record holds tag."""
    return all(tag in record for record in arrivals)


def _paced_round(n: int, cfg: PropagationConfig, round_no: int,
                 send: Callable[[int, str], None],
                 arrived: Callable[[int, str], float | None],
                 hops: Sequence[Sequence[int | None]]) -> RoundResult:
    """Send cfg.messages at cfg.rate from rotating senders; collect latencies, also by
    hop distance (`hops` from `hop_distances`)."""
    sent: list[tuple[str, int, float]] = []
    start = time.monotonic() + 0.2
    for i in range(cfg.messages):
        due = start + i / cfg.rate_msg_s
        # Pacing at a fixed rate is the scenario itself, not waiting for a condition.
        time.sleep(max(0.0, due - time.monotonic()))
        sender = (i + round_no) % n
        tag = f"p{round_no}m{i}"
        sent_at = time.time()
        send(sender, tag)
        sent.append((tag, sender, sent_at))
    deadline_wall = time.time() + cfg.grace_s

    def all_arrived() -> bool:
        return all(arrived(j, tag) is not None
                   for tag, sender, _ in sent for j in range(n) if j != sender)

    try:
        wait_for(all_arrived, timeout=cfg.grace_s, interval=0.1, message="every arrival")
    except WaitTimeout:
        pass  # what is missing at the deadline counts as lost
    result = RoundResult(expected=len(sent) * (n - 1))
    for tag, sender, sent_at in sent:
        own = arrived(sender, tag)
        if own is not None:
            result.self_ms.append((own - sent_at) * 1000.0)
        for j in range(n):
            if j == sender:
                continue
            at = arrived(j, tag)
            if at is None or at > deadline_wall:
                result.late_or_lost += 1
            else:
                latency = (at - sent_at) * 1000.0
                result.latencies_ms.append(latency)
                distance = hops[sender][j]
                if distance is not None:
                    result.by_hop.setdefault(distance, []).append(latency)
    return result


def _run_gossipchat(cfg: PropagationConfig, edges: list[tuple[int, int]]
                    ) -> tuple[list[RoundResult], float]:
    results = []
    with Cluster("prop") as cluster:
        daemons = cluster.start_many(cfg.daemons)
        cluster.connect(edges)
        watchers = start_watchers(daemons)
        clients = [d.client() for d in daemons]
        try:
            for r in range(cfg.rounds):
                room = f"prop-{r}"
                cluster.join_all(room)
                missing = cluster.wait_room_known(room)
                warm = time.monotonic()
                clients[0].send(room, f"warm{r}")
                wait_for(partial(all_have, [w.arrivals for w in watchers], f"warm{r}"),
                         timeout=WARMUP_TIMEOUT_S, interval=0.05, message="the warm-up message")
                warmup_s = time.monotonic() - warm
                settle_s, load = wait_quiet([d.pid for d in daemons], timeout=SETTLE_TIMEOUT_S)

                def send(i: int, tag: str, room: str = room) -> None:
                    clients[i].send(room, tag)

                def arrived(j: int, tag: str) -> float | None:
                    return watchers[j].arrivals.get(tag)

                result = _paced_round(cfg.daemons, cfg, r, send, arrived,
                                      hop_distances(cfg.daemons, edges))
                result.warmup_s, result.settle_s, result.settle_load_cores = (
                    warmup_s, settle_s, load)
                result.subscriptions_unseen = len(missing)
                results.append(result)
            idle = cluster_load([d.pid for d in daemons], cfg.idle_window_s)
        finally:
            for c in clients:
                c.close()
    return results, idle


def _run_raw(cfg: PropagationConfig, edges: list[tuple[int, int]],
             argv: tuple[str, ...] = PY_NODE) -> tuple[list[RoundResult], float]:
    results = []
    with RawCluster(argv) as cluster:
        nodes: list[RawNode] = cluster.start(cfg.daemons)
        cluster.connect(edges)
        for r in range(cfg.rounds):
            topic = f"/gossipchat/1/room/prop-{r}"
            cluster.subscribe(topic)
            cluster.wait_mesh(topic, edges)
            warm = time.monotonic()
            nodes[0].send(f"pub {topic} warm{r}")
            wait_for(partial(all_have, [n.arrivals for n in nodes], f"warm{r}"),
                     timeout=WARMUP_TIMEOUT_S, interval=0.05, message="the warm-up message")
            warmup_s = time.monotonic() - warm
            settle_s, load = wait_quiet(cluster.pids, timeout=SETTLE_TIMEOUT_S)

            def send(i: int, tag: str, topic: str = topic) -> None:
                nodes[i].send(f"pub {topic} {tag}")

            def arrived(j: int, tag: str) -> float | None:
                return nodes[j].arrivals.get(tag)

            result = _paced_round(cfg.daemons, cfg, r, send, arrived,
                                  hop_distances(cfg.daemons, edges))
            result.warmup_s, result.settle_s, result.settle_load_cores = (
                warmup_s, settle_s, load)
            results.append(result)
        idle = cluster_load(cluster.pids, cfg.idle_window_s)
    return results, idle


KEYS = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "delivered_ratio", "self_p50_ms")


def _baseline(what: str, rounds: list[RoundResult], idle: float) -> dict[str, Any]:
    runs = [r.summary() for r in rounds]
    return {"what": what,
            "measured_at": "inside the node as its subscription yields, wall clock",
            **aggregate(runs, KEYS), "by_hop": by_hop_summary(rounds),
            "idle_load_cores": rounded(idle), "runs": runs}


def run(cfg: PropagationConfig) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Run ours and the baselines; returns the JSON section and latency samples to plot."""
    edges = sparse_topology(cfg.daemons, cfg.dials, cfg.seed)
    ours, ours_idle = _run_gossipchat(cfg, edges)
    raw_measured, raw_section = run_baseline(lambda: [_run_raw(cfg, edges, PY_NODE)])
    raw, raw_idle = raw_measured[0] if raw_measured else ([], 0.0)
    js_measured, js_section = run_baseline(lambda: [_run_raw(cfg, edges, JS_NODE)],
                                           js_missing())
    js, js_idle = js_measured[0] if js_measured else ([], 0.0)
    ours_runs = [r.summary() for r in ours]
    section: dict[str, Any] = {
        "daemons": cfg.daemons,
        "rate_msg_s": cfg.rate_msg_s,
        "messages": cfg.messages,
        "rounds": cfg.rounds,
        "topology": {"dials_per_node": cfg.dials, "seed": cfg.seed, "edges": len(edges)},
        "deadline_s_after_last_send": cfg.grace_s,
        "measured_at": ("subscribe connection per daemon, all read by one thread"
                        " (WatchHub), time.time() as read"),
        **aggregate(ours_runs, KEYS),
        "by_hop": by_hop_summary(ours),
        "idle_load_cores": rounded(ours_idle),
        "runs": ours_runs,
        "baseline": raw_section or _baseline(
            "bench/raw_node.py: bare py-libp2p 0.8.1 GossipSub, one process each", raw, raw_idle),
        "baseline_js": js_section or _baseline(JS_WHAT, js, js_idle),
    }
    samples = {
        "gossipchat": [x for r in ours for x in r.latencies_ms],
        "raw py-libp2p": [x for r in raw for x in r.latencies_ms],
        "js-libp2p": [x for r in js for x in r.latencies_ms],
    }
    return section, samples
