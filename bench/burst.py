"""Burst: a thousand messages as fast as three members can post them; does every member
end up with all of them, and how soon?

What: `daemons` gossipchatd processes in a sparse seeded topology, one room. Three of
them (spread over the node numbers) each get one Client connection on its own thread
and call `send` back to back until the burst of `messages` is out.
- delivered_ratio: the fraction of the burst present in every member's history at
  the end (converged, or the 60 s deadline).
- converge_s: first send until every member's history holds the whole burst; None
  if that never happened before the deadline.
- delivery over time, for the plot: the fraction of (message, member) pairs present,
  sampled about every 100 ms from each member's per-room message count (`rooms`).
- cpu_ms_per_msg_per_daemon: the CPU time (user + system, /proc) all members used
  from the first send until convergence (or the deadline), divided by messages x
  members. It includes everything a member does meanwhile: the `send` calls, the
  sampling calls below, heartbeats and sync, not just gossip.

How: before the burst each sender posts one warm-up message and every member must
count all of them, so the meshes carry the room and the per-room chat count minus
that base is the number of burst messages a member holds. When every count says
"all", each member's history is fetched and checked id by id; only then is the burst
converged. The sampling itself costs each daemon about ten `rooms` calls a second
(sample_calls_per_daemon in each run). Like propagation, each run first waits (up to
SETTLE_TIMEOUT_S) for the processes to fall under a quarter of a core (or 1% of a
core per member, for larger rooms), so the join storm does not run into the burst.
The scale scenario (bench/scale.py) runs this same round with 50 members.

Baselines: the same number of bare GossipSub processes (same parameters, topology
and seed, the same warm-up once the meshes are formed): `baseline` is
bench/raw_node.py on py-libp2p, `baseline_js` tests/interop/bench_gossip_node.mjs on
js-libp2p with @libp2p/gossipsub (skipped where node or its packages are missing; a
baseline that fails becomes {"error": ...} in its place, and ours still stands).
Three of them get their share of the burst as `pub` lines written as fast as the
pipe takes them. Bare gossip has no history and no repair, so what it drops stays
lost: the run ends when every node has everything, or nothing new arrived for
`raw_quiet_s` after the last publish, or at the deadline. Their delivery curves come
from the arrival stamps inside the nodes, their CPU per message from the same /proc
figures over the same span (first publish to the end of the run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.waiting import WaitTimeout, wait_for

from .daemons import Caller, Cluster, cpu_total, sparse_topology, wait_quiet
from .raw_cluster import (
    JS_NODE,
    JS_WHAT,
    PY_NODE,
    RawCluster,
    RawNode,
    js_missing,
    run_baseline,
)
from .stats import aggregate, per_message_per_process_ms, rounded

WARMUP_TIMEOUT_S = 20.0
SETTLE_TIMEOUT_S = 15.0
# Before the burst the members must use less than this much CPU in total: a quarter
# of a core, or 1% of a core per member where that is more (50 idle daemons may sit
# above a quarter of a core for good).
QUIET_CORES = 0.25
QUIET_CORES_PER_MEMBER = 0.01


@dataclass(frozen=True)
class BurstConfig:
    """Sizes of the burst scenario."""

    daemons: int
    messages: int
    rounds: int
    senders: int = 3
    dials: int = 2
    seed: int = 20240602
    deadline_s: float = 60.0
    sample_s: float = 0.1
    raw_quiet_s: float = 1.0


@dataclass
class BurstRound:
    """One run of the burst."""

    delivered_ratio: float = 0.0
    pair_ratio: float = 0.0
    converge_s: float | None = None
    send_s: float | None = None
    curve: list[tuple[float, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "delivered_ratio": rounded(self.delivered_ratio, 4),
            "pair_ratio": rounded(self.pair_ratio, 4),
            "converge_s": rounded(self.converge_s),
            "send_s": rounded(self.send_s),
            "send_rate_msg_s": rounded(self.send_rate(), 1),
            **self.extra,
        }

    def send_rate(self) -> float | None:
        """Messages per second of sending, None if sending never finished."""
        messages = self.extra.get("messages")
        if not self.send_s or not messages:
            return None
        return float(messages) / self.send_s


def sender_indexes(n: int, senders: int) -> list[int]:
    """Senders spread over the node numbers: 0, n/3, 2n/3 for three."""
    return sorted({(k * n) // senders for k in range(senders)})


def shares(total: int, parts: int) -> list[int]:
    """Split total into parts that differ by at most one."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _room_count(caller: Caller, room: str) -> int:
    for entry in caller.call("rooms"):
        if entry["room"] == room:
            return int(entry["messages"])
    return 0


def burst_room(r: int) -> str:
    """The room of run r."""
    return f"burst-{r}"


def quiet_cores(members: int) -> float:
    """The total CPU load (cores) under which members count as settled."""
    return max(QUIET_CORES, QUIET_CORES_PER_MEMBER * members)


def gossipchat_round(cluster: Cluster, cfg: BurstConfig, r: int,
                     samplers: list[Caller]) -> BurstRound:
    """One burst in a fresh room `burst-<r>` of the cluster's daemons (joined here)."""
    daemons = cluster.daemons
    pids = [d.pid for d in daemons]
    n = len(daemons)
    room = burst_room(r)
    cluster.join_all(room)
    missing = cluster.wait_room_known(room)
    senders = sender_indexes(n, cfg.senders)
    # One warm-up message per sender, which every member must count: the meshes
    # carry the room before the burst starts. Counts cover chat messages only.
    for k in senders:
        samplers[k].call("send", room=room, text=f"warm{r}s{k}")
    try:
        wait_for(lambda: all(_room_count(c, room) >= len(senders) for c in samplers),
                 timeout=WARMUP_TIMEOUT_S, interval=0.05, message="every warm-up message")
    except WaitTimeout:
        pass  # a late warm-up only makes a count run ahead; history decides
    base = [_room_count(c, room) for c in samplers]
    settle_s, settle_load = wait_quiet(pids, below_cores=quiet_cores(n),
                                       timeout=SETTLE_TIMEOUT_S)
    counts = shares(cfg.messages, len(senders))
    sent_ids: list[list[str]] = [[] for _ in senders]
    done_at: list[float | None] = [None] * len(senders)
    errors: list[str] = []
    barrier = threading.Barrier(len(senders) + 1)
    stop = threading.Event()  # past the deadline: senders give up

    def send_share(k: int) -> None:
        with daemons[senders[k]].client() as client:
            barrier.wait()
            try:
                for i in range(counts[k]):
                    if stop.is_set():
                        errors.append(f"sender {k}: stopped at the deadline after {i}")
                        break
                    sent_ids[k].append(client.send(room, f"b{r}s{k}m{i}")["id"])
            except Exception as exc:  # reported in the result, the run goes on
                errors.append(f"sender {k}: {type(exc).__name__}: {exc}")
            done_at[k] = time.time()

    threads = [threading.Thread(target=send_share, args=(k,), daemon=True)
               for k in range(len(senders))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.time()
    cpu_start = cpu_total(pids)
    total = cfg.messages
    result = BurstRound(extra={"messages": total, "settle_s": rounded(settle_s),
                               "settle_load_cores": rounded(settle_load),
                               "subscriptions_unseen": len(missing)})

    def histories() -> list[set[str]]:
        return [{m["id"] for m in c.call("history", room=room, limit=total + n + 100)}
                for c in samplers]

    next_tick = time.monotonic()
    sample_calls = 0
    while True:
        now = time.time()
        present = [max(0, _room_count(c, room) - b) for c, b in zip(samplers, base, strict=True)]
        sample_calls += 1
        result.curve.append((now - t0, sum(min(p, total) for p in present) / (total * n)))
        senders_done = all(d is not None for d in done_at)
        # The CPU span ends here, before the history check (a costly call per member).
        cpu_end = cpu_total(pids)
        if senders_done and all(p >= total for p in present):
            burst_ids = {i for share in sent_ids for i in share}
            if all(burst_ids <= held for held in histories()):
                result.converge_s = now - t0
                break
        if now - t0 > cfg.deadline_s:
            break
        next_tick += cfg.sample_s
        time.sleep(max(0.0, next_tick - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(timeout=30)
    ids = [i for share in sent_ids for i in share]
    held = histories()
    # Over the whole burst: a message a sender never got out (an error, or the
    # deadline) was not delivered either.
    result.delivered_ratio = sum(all(i in h for h in held) for i in ids) / total
    result.pair_ratio = sum(i in h for i in ids for h in held) / (total * n)
    finished = [d for d in done_at if d is not None]
    result.send_s = (max(finished) - t0) if finished else None
    gossip = [c.call("status") for c in samplers]
    result.extra.update({
        "cpu_ms_per_msg_per_daemon": rounded(
            per_message_per_process_ms(cpu_end - cpu_start, total, n), 4),
        "sample_calls_per_daemon": sample_calls,
        "sent": len(ids),
        "sender_errors": errors,
        "publish_waits": sum(s["gossip"]["publish_waits"] for s in gossip),
        "inbound_dropped": sum(s["gossip"]["inbound_dropped"] for s in gossip),
        "received_duplicate": sum(s.get("received_duplicate", 0) for s in gossip),
        "sync_repaired": sum(s.get("sync", {}).get("repaired", 0) for s in gossip),
    })
    return result


C = TypeVar("C", bound=BurstConfig)
R = TypeVar("R")


def run_rounds(cluster: Cluster, cfg: C,
               one_round: Callable[[Cluster, C, int, list[Caller]], R]) -> list[R]:
    """cfg.rounds runs of one_round on a connected cluster, with a sampling Caller each."""
    samplers = [Caller(d) for d in cluster.daemons]
    try:
        return [one_round(cluster, cfg, r, samplers) for r in range(cfg.rounds)]
    finally:
        for c in samplers:
            c.close()


def _run_gossipchat(cfg: BurstConfig, edges: list[tuple[int, int]]) -> list[BurstRound]:
    with Cluster("burst") as cluster:
        cluster.start_many(cfg.daemons)
        cluster.connect(edges)
        return run_rounds(cluster, cfg, gossipchat_round)


def _raw_round(cluster: RawCluster, cfg: BurstConfig, r: int,
               edges: list[tuple[int, int]]) -> BurstRound:
    nodes: list[RawNode] = cluster.nodes
    n = len(nodes)
    topic = f"/gossipchat/1/room/{burst_room(r)}"
    cluster.subscribe(topic)
    cluster.wait_mesh(topic, edges)
    senders = sender_indexes(n, cfg.senders)
    for k in senders:
        nodes[k].send(f"pub {topic} warm{r}s{k}")
    try:
        wait_for(lambda: all(f"warm{r}s{k}" in node.arrivals
                             for k in senders for node in nodes),
                 timeout=WARMUP_TIMEOUT_S, interval=0.05, message="every warm-up message")
    except WaitTimeout:
        pass
    settle_s, settle_load = wait_quiet(cluster.pids, below_cores=quiet_cores(n),
                                       timeout=SETTLE_TIMEOUT_S)
    counts = shares(cfg.messages, len(senders))
    tags = [f"b{r}s{k}m{i}" for k in range(len(senders)) for i in range(counts[k])]
    done_at: list[float | None] = [None] * len(senders)
    barrier = threading.Barrier(len(senders) + 1)

    def publish_share(k: int) -> None:
        node = nodes[senders[k]]
        barrier.wait()
        for i in range(counts[k]):
            node.send(f"pub {topic} b{r}s{k}m{i}")
        # The node handles lines in order: `synced` means every publish call returned.
        node.command("sync", "synced", timeout=cfg.deadline_s)
        done_at[k] = time.time()

    threads = [threading.Thread(target=publish_share, args=(k,), daemon=True)
               for k in range(len(senders))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.time()
    cpu_start = cpu_total(cluster.pids)

    # A sender holds what it published even when its own subscription (32 slots,
    # unread while it publishes) dropped the copy py-libp2p delivers to itself.
    origin = {f"b{r}s{k}m{i}": senders[k] for k in range(len(senders)) for i in range(counts[k])}

    def holders(tag: str) -> int:
        return sum(1 for j, node in enumerate(nodes)
                   if j == origin[tag] or tag in node.arrivals)

    def arrivals() -> int:
        return sum(holders(tag) for tag in tags)

    last_total, last_change = -1, time.monotonic()
    while time.time() - t0 <= cfg.deadline_s:
        now_total = arrivals()
        if now_total == len(tags) * n:
            break
        if now_total != last_total:
            last_total, last_change = now_total, time.monotonic()
        elif all(d is not None for d in done_at) and \
                time.monotonic() - last_change > cfg.raw_quiet_s:
            break
        time.sleep(cfg.sample_s)
    cpu_used = cpu_total(cluster.pids) - cpu_start
    for t in threads:
        t.join(timeout=30)
    result = BurstRound(extra={
        "messages": len(tags), "settle_s": rounded(settle_s),
        "settle_load_cores": rounded(settle_load),
        "cpu_ms_per_msg_per_daemon": rounded(
            per_message_per_process_ms(cpu_used, len(tags), n), 4)})
    stamps = [node.arrivals[tag] - t0 for j, node in enumerate(nodes) for tag in tags
              if tag in node.arrivals and j != origin[tag]]
    result.pair_ratio = (len(stamps) + len(tags)) / (len(tags) * n)
    # For the curve, a sender holds its message when its own copy came back, or,
    # where py-libp2p dropped that copy, once its publish calls had all returned.
    sender_done = {senders[k]: (d if d is not None else time.time()) - t0
                   for k, d in enumerate(done_at)}
    for tag in tags:
        j = origin[tag]
        stamps.append(nodes[j].arrivals[tag] - t0 if tag in nodes[j].arrivals
                      else sender_done[j])
    stamps.sort()
    result.delivered_ratio = sum(holders(tag) == n for tag in tags) / len(tags)
    if result.delivered_ratio == 1.0 and stamps:
        result.converge_s = stamps[-1]
    finished = [d for d in done_at if d is not None]
    if len(finished) == len(done_at):
        result.send_s = max(finished) - t0
    horizon = max(stamps[-1] if stamps else 0.0, 1.0)
    index, steps = 0, int(horizon / cfg.sample_s) + 2
    for step in range(steps):
        at = step * cfg.sample_s
        while index < len(stamps) and stamps[index] <= at:
            index += 1
        result.curve.append((at, index / (len(tags) * n)))
    return result


def _run_raw(cfg: BurstConfig, edges: list[tuple[int, int]],
             argv: tuple[str, ...] = PY_NODE) -> list[BurstRound]:
    with RawCluster(argv) as cluster:
        cluster.start(cfg.daemons)
        cluster.connect(edges)
        return [_raw_round(cluster, cfg, r, edges) for r in range(cfg.rounds)]


KEYS = ("delivered_ratio", "pair_ratio", "converge_s", "send_s", "send_rate_msg_s",
        "cpu_ms_per_msg_per_daemon")
WORST = frozenset({"converge_s"})


def _baseline(what: str, rounds: list[BurstRound]) -> dict[str, Any]:
    runs = [r.summary() for r in rounds]
    return {"what": what, **aggregate(runs, KEYS, none_is_worst=WORST), "runs": runs}


def run(cfg: BurstConfig) -> tuple[dict[str, Any], dict[str, list[list[tuple[float, float]]]]]:
    """Run ours and the baselines; returns the JSON section and the delivery curves."""
    edges = sparse_topology(cfg.daemons, cfg.dials, cfg.seed)
    ours = _run_gossipchat(cfg, edges)
    raw, raw_section = run_baseline(lambda: _run_raw(cfg, edges, PY_NODE))
    js, js_section = run_baseline(lambda: _run_raw(cfg, edges, JS_NODE), js_missing())
    ours_runs = [r.summary() for r in ours]
    section: dict[str, Any] = {
        "daemons": cfg.daemons,
        "messages": cfg.messages,
        "senders": len(sender_indexes(cfg.daemons, cfg.senders)),
        "rounds": cfg.rounds,
        "topology": {"dials_per_node": cfg.dials, "seed": cfg.seed, "edges": len(edges)},
        "deadline_s": cfg.deadline_s,
        "sending": "one Client connection per sender thread, `send` calls back to back",
        **aggregate(ours_runs, KEYS, none_is_worst=WORST),
        "runs": ours_runs,
        "baseline": raw_section or _baseline(
            "bench/raw_node.py: bare py-libp2p 0.8.1 GossipSub, no repair", raw),
        "baseline_js": js_section or _baseline(f"{JS_WHAT}, no repair", js),
    }
    curves = {"gossipchat": [r.curve for r in ours], "raw py-libp2p": [r.curve for r in raw],
              "js-libp2p": [r.curve for r in js]}
    return section, curves
