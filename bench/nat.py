"""NAT traversal: relay set-up, the DCUtR upgrade, and chat latency relayed and direct.

Run: `.venv/bin/python -m bench.nat [--tries 10] [--out bench/results/nat.json]` as
root (network namespaces and iptables, as tests/integration/test_netns_*.py; not part
of `bench.run`). About 8 minutes at the defaults on 2 cores.

Every try builds a fresh `Scenario.nat(["r"], ["a"], ["b"])`: a public relay daemon r
and daemons a and b, each behind its own masquerading router (harness/nat.py), and a
dials b's relayed address. Per try:
- reserved_s: from a home daemon's ready line to its first /p2p-circuit address
  (AutoNAT says private, then a reservation on r); both a and b;
- connect_s: from a's `connect` on b's circuit address until both list the other;
- upgraded_s: from then until both hold only a direct connection to the other
  (none when it did not happen within `upgrade_timeout_s`), beside the daemons' own
  `status.holepunch.last_time_to_direct_s` (circuit to direct, measured inside b);
- chat latency: `messages` messages, alternately a -> b and b -> a, one every 0.2 s;
  latency is a `watch` subscription's arrival time on the receiver minus the send
  time (bench/daemons.py WatchHub: the daemon's verify-store-notify path and the RPC
  hop included, as a chat program sees it).

Kinds:
- `punch_dropping`: port-preserving routers that drop an unsolicited SYN (most home
  routers; the harness's `stealth`); `tries` tries.
- `punch_refusing`: port-preserving routers that answer it with a RST (the harness's
  default); `tries` tries.
- `relayed`: hole punching off in a and b (`hole_punching = false`), so the chat runs
  over r; `relayed_tries` tries.
- `symmetric`: `--random-fully` routers; the punch fails and the chat stays on r;
  `relayed_tries` tries.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from harness.nat import NO_PUNCH, ROOM, Meeting, direct_only, meet_through_relay
from harness.netns import Scenario, network
from harness.netns import unavailable as netns_unavailable
from harness.system_packages import ensure_apt
from harness.waiting import WaitTimeout, wait_for

from .daemons import start_watchers
from .stats import percentile, rounded

KINDS: dict[str, dict[str, Any]] = {
    "punch_dropping": {"stealth": True},
    "punch_refusing": {},
    "relayed": {"config": NO_PUNCH},
    "symmetric": {"random_fully": True},
}


def chat_latencies(met: Meeting, messages: int, gap_s: float = 0.2,
                   deadline_s: float = 15.0) -> list[float | None]:
    """Seconds each message took to reach the other side (None: not within deadline_s)."""
    watchers = {w.daemon.name: w for w in start_watchers([met.a, met.b])}
    sent: list[tuple[str, str, float]] = []
    for k in range(messages):
        sender, receiver = (met.a, met.b) if k % 2 == 0 else (met.b, met.a)
        text = f"bench {k} from {sender.name}"
        sent.append((receiver.name, text, time.time()))
        sender.call("send", room=ROOM, text=text)
        time.sleep(gap_s)
    try:
        wait_for(lambda: all(text in watchers[name].arrivals for name, text, _ in sent),
                 timeout=deadline_s, message="every message to arrive")
    except WaitTimeout:
        pass
    return [rounded(watchers[name].arrivals[text] - at, 4)
            if text in watchers[name].arrivals else None for name, text, at in sent]


def one_try(kind: str, messages: int, upgrade_timeout_s: float) -> dict[str, Any]:
    with network(Scenario.nat(["r"], ["a"], ["b"])) as net:
        met = meet_through_relay(net, **KINDS[kind])
        run: dict[str, Any] = {"reserved_s": met.reserved_s, "connect_s": met.connect_s}
        if kind in ("punch_dropping", "punch_refusing"):
            try:
                wait_for(lambda: direct_only(met.a, met.b) and direct_only(met.b, met.a),
                         timeout=upgrade_timeout_s, interval=0.02,
                         message="a direct connection")
                run["upgraded_s"] = round(time.monotonic() - met.connected_at, 3)
            except WaitTimeout:
                run["upgraded_s"] = None
            run["holepunch"] = {d.name: d.call("status")["holepunch"] for d in (met.a, met.b)}
        elif kind == "symmetric":
            # Until b has given the punch up (3 attempts), so the chat is measured on r.
            wait_for(lambda: met.b.call("status")["holepunch"]["failed"].get("no_direct", 0)
                     + met.a.call("status")["holepunch"]["failed"].get("no_direct", 0) >= 3,
                     timeout=60, message="the punch to be given up")
        run["direct"] = direct_only(met.a, met.b) and direct_only(met.b, met.a)
        run["latencies_s"] = chat_latencies(met, messages)
        run["relay_circuits_after"] = met.r.call("status")["relay"]["circuits"]
        return run


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and ranges over a kind's tries."""
    reserved = [v for r in runs for v in r["reserved_s"].values()]
    upgraded = [r["upgraded_s"] for r in runs if r.get("upgraded_s") is not None]
    inside = [r["holepunch"]["b"]["last_time_to_direct_s"] for r in runs
              if r.get("holepunch") and r["holepunch"]["b"]["last_time_to_direct_s"]]
    latencies = [v for r in runs for v in r["latencies_s"] if v is not None]
    sent = sum(len(r["latencies_s"]) for r in runs)
    out: dict[str, Any] = {
        "tries": len(runs),
        "reserved_s_p50": rounded(percentile(reserved, 50)),
        "reserved_s_max": rounded(max(reserved, default=None)),
        "connect_s_p50": rounded(percentile([r["connect_s"] for r in runs], 50)),
        "ended_direct": sum(bool(r["direct"]) for r in runs),
        "chat_p50_ms": _ms(percentile(latencies, 50)),
        "chat_p90_ms": _ms(percentile(latencies, 90)),
        "chat_max_ms": _ms(max(latencies, default=None)),
        "chat_delivered": f"{len(latencies)}/{sent}",
    }
    if any("upgraded_s" in r for r in runs):
        out["upgraded"] = f"{len(upgraded)}/{len(runs)}"
        out["upgraded_s_p50"] = rounded(percentile(upgraded, 50))
        out["upgraded_s_min"] = rounded(min(upgraded, default=None))
        out["upgraded_s_max"] = rounded(max(upgraded, default=None))
        out["time_to_direct_in_b_s_p50"] = rounded(percentile(inside, 50))
        out["first_attempt"] = sum(r["holepunch"]["b"]["attempts"] == 1
                                   and r["holepunch"]["b"]["succeeded"] == 1 for r in runs
                                   if r.get("holepunch"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results/nat.json"))
    parser.add_argument("--tries", type=int, default=10, help="per punch kind (default 10)")
    parser.add_argument("--relayed-tries", type=int, default=3,
                        help="for relayed and symmetric (default 3)")
    parser.add_argument("--messages", type=int, default=20, help="per try (default 20)")
    parser.add_argument("--upgrade-timeout", type=float, default=30.0)
    parser.add_argument("--only", default=",".join(KINDS),
                        help=f"comma-separated subset of {','.join(KINDS)}")
    args = parser.parse_args()
    reason = netns_unavailable() or ensure_apt("iptables")
    if reason:
        raise SystemExit(f"bench.nat: {reason}")
    results: dict[str, Any] = {"machine": {"loadavg_at_start": os.getloadavg()[0],
                                           "cpus": os.cpu_count()}, "kinds": {}}
    for kind in args.only.split(","):
        tries = args.tries if kind.startswith("punch") else args.relayed_tries
        runs = []
        for k in range(tries):
            run = one_try(kind, args.messages, args.upgrade_timeout)
            print(f"{kind} {k + 1}/{tries}:", json.dumps({key: v for key, v in run.items()
                                                       if key != "latencies_s"}), flush=True)
            runs.append(run)
        results["kinds"][kind] = {"summary": summary(runs), "runs": runs}
        print(f"{kind}:", json.dumps(results["kinds"][kind]["summary"]), flush=True)
    results["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
