"""Fanout: one 5 MB image posted to a 20-member room; how soon does everyone hold it,
and how much of it did the sender have to upload itself?

What:
- all_have_s: from the start of the `send_image` call on the sender until the last
  member's `fetch` of the image's CID has returned, i.e. every member holds it.
- sender_upload_ratio: the bytes the sender's bitswap sent during the round over the
  image size. 1.0 means the sender uploaded one copy and the members spread the rest
  among themselves; daemons - 1 means the sender served everyone alone.

How: `daemons` gossipchatd processes in a sparse seeded topology, one room per run.
After all join the room, the round waits (up to SETTLE_TIMEOUT_S) for the processes
to fall under a quarter of a core, as propagation and burst do, so that the join
storm (DHT walks and announcements, presence, first syncs of 20 members joining in
the same second) does not run into the send. What the join cost is reported beside
it: join_settle_s (from the joins until quiet) and join_cpu_core_s (the daemons' CPU
over that time, all together). Until 2026-12-06 the send followed the joins at once,
and the slowest rounds were those the join storm ran into (all_have 5-9 s against
about 2 s). Each member has a thread with a `watch` subscription (one Client each); when the
image message arrives it calls `fetch {cid}` at once (again every FETCH_RETRY_S while
the daemon answers "not found", which it does while no neighbour holds the image
yet), and the time that call returns is when that member holds the image (a daemon
that fetched it already, as the daemons do by themselves, answers at once).

The image is a noisy PNG made with Pillow from a seeded RNG, so it barely
compresses. Each run posts a new one (the seed plus the run number), since a CID the
members already hold would measure nothing, and every suite run posts the same bytes.
The upload counter is looked up in `status` (`images.exchange.bytes_sent`, the
sender's bitswap total); when the daemon exposes none, the ratio is None with a note.

The scenario is skipped (with the reason) while the method table has no
`send_image` or `fetch`.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from gossipchat.rpc.client import RpcError
from harness.daemons import DaemonProcess
from harness.waiting import WaitTimeout, wait_for

from .burst import quiet_cores
from .daemons import Cluster, cpu_total, sparse_topology, subscriptions_above, wait_quiet
from .stats import aggregate, rounded

MIB = 1024 * 1024
FETCH_RETRY_S = 0.1
SETTLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FanoutConfig:
    """Sizes of the fanout scenario."""

    daemons: int
    rounds: int
    size_mb: float = 5.0
    dials: int = 3
    seed: int = 20240603
    deadline_s: float = 90.0


def unavailable() -> str | None:
    """Why the scenario cannot run against this daemon, or None if it can."""
    try:
        from gossipchat.rpc.table import METHODS
    except ImportError as exc:
        return f"cannot import the method table: {exc}"
    missing = [m for m in ("send_image", "fetch") if m not in METHODS]
    if missing:
        return f"the RPC method table has no {' or '.join(missing)} yet"
    return None


def make_noisy_png(path: Path, size_bytes: int, seed: int) -> int:
    """Write an RGB PNG of seeded noise of about size_bytes; return its real size."""
    from PIL import Image

    side = max(16, int((size_bytes / 3) ** 0.5))
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    image.save(path, format="PNG", compress_level=1)
    return path.stat().st_size


def bitswap_bytes_sent(status: dict[str, Any]) -> int | None:
    """The bitswap bytes-sent counter in `status` (images.exchange.bytes_sent today).

    Looked up by name under any `bitswap` or `exchange` section, so that moving the
    counter inside `status` does not silently turn the figure into None.
    """
    def search(node: Any, inside: bool) -> int | None:
        if not isinstance(node, dict):
            return None
        if inside and isinstance(node.get("bytes_sent"), int):
            return int(node["bytes_sent"])
        for key, child in node.items():
            if key == "sync":
                continue  # history sync has a bytes_sent of its own
            found = search(child, inside or key in ("bitswap", "exchange"))
            if found is not None:
                return found
        return None

    return search(status, False)


class _Member(threading.Thread):
    """Waits for the image message in `room`, fetches it, stamps the time."""

    def __init__(self, daemon: DaemonProcess, room: str, out: Path, timeout: float) -> None:
        super().__init__(daemon=True, name=f"fanout-{daemon.name}")
        self.daemon_proc = daemon
        self.room = room
        self.out = out
        self.timeout = timeout
        self.done_at: float | None = None
        self.size: int | None = None
        self.retries = 0
        self.error = ""

    def run(self) -> None:
        try:
            with self.daemon_proc.client(timeout=None) as watcher:
                for message in watcher.watch([self.room]):
                    image = message.get("image")
                    if message.get("kind") == "image" and image:
                        self._fetch(image["cid"])
                        return
        except Exception as exc:  # reported per member; the round goes on
            self.error = f"{type(exc).__name__}: {exc}"

    def _fetch(self, cid: str) -> None:
        # A member's neighbours may still be fetching when the message arrives, and
        # `fetch` then answers "not found" at once: ask again until the deadline.
        deadline = time.monotonic() + self.timeout
        path: str | None = str(self.out)
        with self.daemon_proc.client(timeout=self.timeout) as client:
            while True:
                try:
                    got = client.call("fetch", cid=cid, path=path)
                    break
                except RpcError as exc:
                    not_found = "not found" in exc.message.lower()
                    if not_found and time.monotonic() < deadline:
                        self.retries += 1
                        time.sleep(FETCH_RETRY_S)
                    elif not not_found and path is not None:
                        path = None  # the daemon refused our path; its default will do
                    else:
                        raise
        self.done_at = time.time()
        self.size = int(got.get("size", 0)) if isinstance(got, dict) else None


def _round(cluster: Cluster, cfg: FanoutConfig, r: int, image: Path,
           size: int) -> dict[str, Any]:
    daemons = cluster.daemons
    sender, members = daemons[0], daemons[1:]
    room = f"fanout-{r}"
    pids = [d.pid for d in daemons]
    join_cpu, joined = cpu_total(pids), time.monotonic()
    cluster.join_all(room)
    missing = cluster.wait_room_known(room)
    _, settle_load = wait_quiet(pids, below_cores=quiet_cores(len(daemons)),
                                timeout=SETTLE_TIMEOUT_S)
    join_settle_s = time.monotonic() - joined
    join_cpu_core_s = cpu_total(pids) - join_cpu
    before = [d.call("status") for d in members]
    before_subs = [st["subscriptions"] for st in before]
    threads = [_Member(d, room, d.home / f"fetched-{r}.png", cfg.deadline_s) for d in members]
    for t in threads:
        t.start()
    for d, count in zip(members, before_subs, strict=True):
        wait_for(partial(subscriptions_above, d, count), timeout=30, message=f"{d.name}'s watch")
    with sender.client(timeout=cfg.deadline_s) as client:
        sent_before = bitswap_bytes_sent(client.status())
        t0 = time.time()
        message = client.call("send_image", room=room, path=str(image))
        posted = time.time()
        try:
            wait_for(lambda: all(t.done_at is not None or t.error for t in threads),
                     timeout=cfg.deadline_s, interval=0.02, message="every member's fetch")
        except WaitTimeout:
            pass
        sent_after = bitswap_bytes_sent(client.status())
    images = [d.call("status").get("images", {}) for d in members]

    def exchange_total(statuses: list[dict[str, Any]], key: str) -> int:
        return sum(int(st.get("exchange", {}).get(key, 0)) for st in statuses)

    received = exchange_total(images, "bytes_received") - exchange_total(
        [st.get("images", {}) for st in before], "bytes_received"
    )
    duplicates = exchange_total(images, "duplicate_blocks") - exchange_total(
        [st.get("images", {}) for st in before], "duplicate_blocks"
    )
    done = [t.done_at for t in threads]
    errors = [f"{t.daemon_proc.name}: {t.error}" for t in threads if t.error]
    took = sorted(d - t0 for d in done if d is not None)
    all_have = took[-1] if all(done) else None
    upload = None
    if sent_before is not None and sent_after is not None:
        upload = (sent_after - sent_before) / size
    return {
        "all_have_s": rounded(all_have),
        "send_image_s": rounded(posted - t0),
        "members_holding": sum(d is not None for d in done),
        "sender_upload_ratio": rounded(upload),
        # Bitswap bytes the members received over what they needed (1.0: no
        # duplicates), and when the median member had it.
        "members_received_ratio": rounded(received / (size * len(members))),
        "duplicate_blocks": duplicates,
        "member_s": [rounded(t) for t in took],
        "median_member_s": rounded(statistics.median_low(took)) if took else None,
        "subscriptions_unseen": len(missing),
        "join_settle_s": rounded(join_settle_s),
        "join_cpu_core_s": rounded(join_cpu_core_s),
        "settle_load_cores": rounded(settle_load),
        "fetch_retries": sum(t.retries for t in threads),
        "auto_fetched": sum(int(i.get("auto_fetched", 0)) for i in images),
        "auto_fetch_failed": sum(int(i.get("auto_fetch_failed", 0)) for i in images),
        "cid": (message.get("image") or {}).get("cid"),
        "errors": errors[:5],
    }


KEYS = ("all_have_s", "send_image_s", "sender_upload_ratio", "join_settle_s", "join_cpu_core_s")


def run(cfg: FanoutConfig) -> dict[str, Any]:
    """Run the fanout scenario, or return {"skipped": reason}."""
    reason = unavailable()
    if reason:
        return {"skipped": reason, "daemons": cfg.daemons, "size_mb": cfg.size_mb}
    edges = sparse_topology(cfg.daemons, cfg.dials, cfg.seed)
    with Cluster("fan") as cluster:
        images = []
        for r in range(cfg.rounds):
            image = cluster.root / f"noise-{r}.png"
            images.append((image, make_noisy_png(image, int(cfg.size_mb * MIB), cfg.seed + r)))
        cluster.start_many(cfg.daemons)
        cluster.connect(edges)
        runs = [_round(cluster, cfg, r, *images[r]) for r in range(cfg.rounds)]
        size = images[0][1]
    section: dict[str, Any] = {
        "daemons": cfg.daemons,
        "size_mb": cfg.size_mb,
        "size_bytes": size,
        "rounds": cfg.rounds,
        "topology": {"dials_per_node": cfg.dials, "seed": cfg.seed, "edges": len(edges)},
        **aggregate(runs, KEYS, none_is_worst=frozenset({"all_have_s"})),
        "runs": runs,
    }
    if section.get("sender_upload_ratio") is None:
        section["sender_upload_note"] = (
            "status exposes no bitswap bytes_sent counter; upload not measured")
    return section
