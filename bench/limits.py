"""Gossip rate limit: how close honest relays come to it, and what a flood costs.

Run: `.venv/bin/python -m bench.limits [--out bench/results/limits.json]` (not part of
`bench.run`: it takes about two minutes and measures a config default, not a target).

What:
- honest: `daemons` daemons in a sparse seeded topology, one room, 1,000 messages
  from 3 members at once (as bench/burst.py), each as fast as `send` takes them.
  Afterwards every daemon's `status.gossip`: messages dropped by the rate limit
  (should be 0) and `bucket_low`, the fewest tokens any forwarder's bucket held
  (the burst when nobody came near).
- flood: a target daemon and an honest one in a room; a stock py-libp2p peer sends
  pre-signed messages of 200 bytes at `flood_rate` a second (100 to an RPC) for
  `flood_s`. Once with the default limit, once with the limit off (1,000,000/s):
  the target's RSS before, at its peak and after, its CPU seconds during the flood,
  what it dropped, whether it hung up on the flooder, and how many of the honest
  member's messages (one every 0.5 s meanwhile) arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import trio
from libp2p.pubsub.pb import rpc_pb2

from harness.daemons import DaemonProcess
from harness.libp2p_hosts import gossip_peer, signed_message
from harness.waiting import WaitTimeout, wait_for

from .daemons import Cluster, cpu_seconds, sparse_topology

ROOM = "lim"
TOPIC = f"/gossipchat/1/room/{ROOM}"


def _texts(daemon: DaemonProcess, limit: int) -> list[str]:
    return [m["text"] for m in daemon.call("history", room=ROOM, limit=limit)]


def honest(daemons: int = 10, messages: int = 1000, senders: int = 3, seed: int = 7
           ) -> dict[str, Any]:
    """A 1,000-message burst from `senders` members at once through a sparse room with
    the default limits."""
    with Cluster("lim-honest") as cluster:
        cluster.start_many(daemons)
        cluster.connect(sparse_topology(daemons, 2, seed))
        cluster.join_all(ROOM)
        sender_daemons = [cluster.daemons[i * daemons // senders] for i in range(senders)]
        sender_daemons[0].call("send", room=ROOM, text="warm")
        wait_for(lambda: all("warm" in _texts(d, 10) for d in cluster.daemons), timeout=60)

        def send_share(k: int) -> None:
            with sender_daemons[k].client() as client:
                for i in range(k, messages, senders):
                    client.send(ROOM, f"m{i}")

        threads = [threading.Thread(target=send_share, args=(k,)) for k in range(senders)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        send_s = time.monotonic() - started
        try:
            wait_for(lambda: all(len(_texts(d, messages + 10)) >= messages + 1
                                 for d in cluster.daemons), timeout=120, interval=0.5)
        except WaitTimeout:
            pass
        all_s = time.monotonic() - started
        gossip = [d.call("status")["gossip"] for d in cluster.daemons]
        return {
            "daemons": daemons, "messages": messages, "senders": senders,
            "send_s": round(send_s, 2),
            "send_rate_per_s": round(messages / send_s),
            "all_delivered_s": round(all_s, 2),
            "delivered_min": min(len(_texts(d, messages + 10)) - 1 for d in cluster.daemons),
            "rate_limited": sum(sum(g["rate_limited"].values()) for g in gossip),
            "bucket_low_min": min(g["bucket_low"] for g in gossip),
            "burst_per_peer": gossip[0]["burst_per_peer"],
            "max_msgs_per_peer_s": gossip[0]["max_msgs_per_peer_s"],
        }


def _sampler(daemon: DaemonProcess, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        if daemon.running:
            peak.append(daemon.rss_mb())
        stop.wait(0.25)


async def _flood(target: DaemonProcess, rate: int, seconds: float) -> tuple[int, bool]:
    per_rpc = 100
    async with gossip_peer(target.addr, TOPIC) as ((host, router, pubsub), target_id):
        batches = [[signed_message(pubsub, TOPIC, b"f%d " % (b * per_rpc + i) + os.urandom(200))
                    for i in range(per_rpc)] for b in range(int(rate * seconds / per_rpc))]
        start = trio.current_time()
        sent = 0
        for n, batch in enumerate(batches):
            if not host.get_network().get_connections(target_id):
                return sent, True
            await trio.sleep_until(start + n * per_rpc / rate)
            router.send_rpc(target_id, rpc_pb2.RPC(publish=batch))
            sent += len(batch)
        return sent, not host.get_network().get_connections(target_id)


def flood(limit: float | None, rate: int = 5000, seconds: float = 10.0) -> dict[str, Any]:
    """One flood against a daemon with `limit` (None: the default)."""
    with Cluster("lim-flood") as cluster:
        home = cluster.home("target")
        home.mkdir(mode=0o700, parents=True)
        if limit is not None:
            (home / "config.toml").write_text(f"gossip_max_msgs_per_peer_s = {limit}\n"
                                              f"gossip_burst_per_peer = {int(limit * 4)}\n")
        target = cluster.start("target")
        honest_member = cluster.start("honest")
        honest_member.call("connect", addr=target.addr)
        for d in (target, honest_member):
            d.call("join", room=ROOM)
        wait_for(lambda: any(ROOM in p["rooms"] for p in target.call("peers")), timeout=30)
        time.sleep(1.0)
        rss_before = target.rss_mb()
        cpu_before = cpu_seconds(target.pid)
        stop = threading.Event()
        peak: list[float] = []
        sampler = threading.Thread(target=_sampler, args=(target, stop, peak), daemon=True)
        sampler.start()
        honest_texts: list[str] = []

        def chat() -> None:
            i = 0
            while not stop.is_set():
                text = f"honest {i}"
                try:
                    honest_member.call("send", room=ROOM, text=text)
                    honest_texts.append(text)
                except Exception:  # a send that failed counts as not arrived
                    pass
                i += 1
                stop.wait(0.5)

        chatter = threading.Thread(target=chat, daemon=True)
        chatter.start()
        started = time.monotonic()
        sent, cut = trio.run(_flood, target, rate, seconds)
        flood_s = time.monotonic() - started
        cpu_during = cpu_seconds(target.pid) - cpu_before
        stop.set()
        chatter.join(30)
        time.sleep(5.0)
        try:
            wait_for(lambda: set(honest_texts) <= set(_texts(target, 10_000)), timeout=30)
        except WaitTimeout:
            pass
        arrived = len(set(honest_texts) & set(_texts(target, 10_000)))
        sampler.join(5)
        status = target.call("status")
        return {
            "limit_per_s": status["gossip"]["max_msgs_per_peer_s"],
            "flood_rate_per_s": rate, "flood_sent": sent, "flood_s": round(flood_s, 1),
            "flooder_cut": cut, "flooders_cut": status["gossip"]["flooders_cut"],
            "rate_limited": status["gossip"]["rate_limited"],
            "rejected": status["rejected"], "gossip_received": status["gossip"]["received"],
            "rss_mb_before": round(rss_before, 1), "rss_mb_peak": round(max(peak or [0]), 1),
            "rss_mb_after": round(target.rss_mb(), 1),
            "cpu_s_during_flood": round(cpu_during, 2),
            "honest_sent": len(honest_texts), "honest_arrived": arrived,
            "target_alive": target.running,
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results/limits.json"))
    parser.add_argument("--skip-honest", action="store_true")
    parser.add_argument("--only-honest", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if not args.skip_honest:
        results["honest"] = honest()
        print("honest:", json.dumps(results["honest"]))
    if args.only_honest:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return
    results["flood_default_limit"] = flood(None)
    print("flood, default limit:", json.dumps(results["flood_default_limit"]))
    results["flood_no_limit"] = flood(1_000_000)
    print("flood, no limit:", json.dumps(results["flood_no_limit"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
