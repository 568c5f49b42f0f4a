"""CPU per message per daemon in a small burst: what one gossiped chat message costs
each member, sender and forwarders alike (issue 13 item 1's measure).

What: `daemons` gossipchatd processes in a line (0 - 1 - 2 - ...), so that every
member but the ends forwards; one room. After a warm-up message reaches everyone and
the processes fall quiet, member 0 sends `messages` texts back to back over `senders` RPC
connections at once; when every member's history holds them all, each process's CPU time
(user + system, /proc) since the burst began is divided by `messages`.
- cpu_ms_per_message: per daemon, in line order, less what the daemon spends idle
  over the same time (measured just before the burst); `mean` over all of them;
  `raw_*` without that correction.
Presence, sync and the RPC calls the burst needs are included: this is what a member
spends, not the router alone. Arrival is read from `rooms` (a count), not from the
history, which would cost the daemons more than the burst.

Run: `.venv/bin/python -m bench.gossip_cpu [--daemons 4] [--messages 300] [--out F]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import subprocess
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from harness.daemons import Cluster, DaemonProcess, connect, texts, wait_mesh
from harness.waiting import wait_for

from .daemons import cpu_seconds, wait_quiet

ROOM = "cpu"
IDLE_WINDOW_S = 3.0


def _holds(member: DaemonProcess, text: str) -> bool:
    return text in texts(member, ROOM)


def _count_at_least(member: DaemonProcess, count: int) -> bool:
    return _room_count(member) >= count


def run(daemons: int = 4, messages: int = 300, profile: Path | None = None,
        senders: int = 1) -> dict[str, Any]:
    """Measure one burst; the result as JSON-ready data."""
    with Cluster(prefix="gc-cpu-", log_level="warning") as cluster:
        members = [cluster.start(f"n{i}") for i in range(daemons)]
        for left, right in itertools.pairwise(members):
            connect(left, right)
        for member in members:
            member.call("join", room=ROOM)
        for i, member in enumerate(members):
            wait_mesh(member, ROOM, 1 if i in (0, daemons - 1) else 2)
        members[0].call("send", room=ROOM, text="warm-up")
        for member in members:
            wait_for(partial(_holds, member, "warm-up"), timeout=60,
                     message=f"the warm-up at {member.name}")
        pids = [m.pid for m in members]
        wait_quiet(pids, below_cores=0.1, timeout=30)
        base = [_room_count(m) for m in members]
        idle_before, idle_started = [cpu_seconds(pid) for pid in pids], time.monotonic()
        time.sleep(IDLE_WINDOW_S)  # the idle cost is measured over this window
        idle_rate = [(cpu_seconds(pid) - b) / (time.monotonic() - idle_started)
                     for pid, b in zip(pids, idle_before, strict=True)]
        spy = None
        if profile is not None:  # py-spy (pip install py-spy) on member 1, a forwarder
            spy = subprocess.Popen(["py-spy", "record", "-p", str(pids[1]), "-r", "250",
                                    "-f", "raw", "-o", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # py-spy attaches
        before = [cpu_seconds(pid) for pid in pids]
        started = time.monotonic()
        def send(first: int) -> None:
            with members[0].client() as client:
                for i in range(first, messages, senders):
                    client.call("send", room=ROOM, text=f"burst {i}")

        threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for member, count in zip(members, base, strict=True):
            wait_for(partial(_count_at_least, member, count + messages), timeout=120,
                     interval=0.5, message=f"the burst at {member.name}")
        elapsed = time.monotonic() - started
        used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    raw = [round(u * 1000 / messages, 3) for u in used]
    net = [round(max(u - rate * elapsed, 0.0) * 1000 / messages, 3)
           for u, rate in zip(used, idle_rate, strict=True)]
    return {"daemons": daemons, "messages": messages, "senders": senders,
            "elapsed_s": round(elapsed, 2),
            "idle_cores": [round(r, 3) for r in idle_rate],
            "cpu_ms_per_message": net, "mean": round(sum(net) / len(net), 3),
            "raw_cpu_ms_per_message": raw, "raw_mean": round(sum(raw) / len(raw), 3)}


def _room_count(member: DaemonProcess) -> int:
    for entry in member.call("rooms"):
        if entry["room"] == ROOM:
            return int(entry["messages"])
    return 0


def main() -> None:
    """Command line: print (and optionally write) one measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--senders", type=int, default=1,
                        help="RPC connections to member 0 sending at once")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of member 1")
    args = parser.parse_args()
    result = run(args.daemons, args.messages, args.profile, args.senders)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
