"""Pins: what pinning costs a member that holds many images.

A member pins every image of its rooms (daemon/images.py), in the block store
(daemon/adapters/blockstore.py, pins on disk in adapters/pinfile.py). These calls run
on the daemon's event loop, so their time is time that no gossip moves.

What, with `pinned` images already pinned, each a UnixFS file of a dag-pb root and
two 1 KB raw leaves on disk (so that walking a pin reads a root):
- open_ms: opening the block store (scan, load the pins, walk every pinned DAG);
- pin_ms: pinning one more image (the median of `ops`), as a received image is;
- unpin_ms: unpinning one image (the median of `ops`), as a failed send does;
- leave_room_ms: unpinning `room_images` images at once, as leaving a room does;
- put_full_us: storing one more 1 KB block into a store whose quota the pinned images
  nearly fill, as every block a member receives is once its store is full of its
  rooms' images: the median of the last half of `ops` x 10 puts (the first 50 fill
  the room left; from then on each evicts an older unpinned block).

How: the store is built once per run in a temporary directory (blocks put, pins
written by the store itself), then opened fresh for the measurements. Each run is
timed in this process, with nothing else of ours running.

Run: `python -m bench.pins [--pinned N]`; `bench.run` calls `run(PinsConfig(...))`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossipchat.daemon.adapters.blockstore import BlockStore
from gossipchat.daemon.core import unixfs
from gossipchat.daemon.core.unixfs.dagpb import encode_dag_pb, encode_unixfs_file

from .stats import aggregate, rounded


@dataclass(frozen=True)
class PinsConfig:
    """Sizes of the pins scenario."""

    rounds: int
    pinned: int = 10_000
    ops: int = 20
    room_images: int = 100


def image(n: int) -> list[tuple[bytes, bytes]]:
    """The blocks of a two-leaf UnixFS file, root first."""
    leaves = [n.to_bytes(8, "big") + bytes([k]) * 1000 for k in range(2)]
    cids = [unixfs.cid_v1(unixfs.CODEC_RAW, leaf) for leaf in leaves]
    node = encode_dag_pb(list(zip(cids, map(len, leaves), strict=True)),
                         encode_unixfs_file(sum(map(len, leaves)), list(map(len, leaves))))
    return [(unixfs.cid_v1(unixfs.CODEC_DAG_PB, node), node), *zip(cids, leaves, strict=True)]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def one_run(cfg: PinsConfig, directory: Path) -> dict[str, Any]:
    """Build a store of cfg.pinned pinned images under `directory` and time the calls."""
    store = BlockStore(directory)
    roots = []
    for n in range(cfg.pinned + cfg.ops):
        blocks = image(n)
        for cid, data in blocks:
            store.put(cid, data, verified=True)
        roots.append(blocks[0][0])
    for cid in roots[:cfg.pinned]:
        store.pin(cid)
    del store

    start = time.perf_counter()
    store = BlockStore(directory)
    open_ms = _ms(start)
    extra = roots[cfg.pinned:]
    pins, unpins = [], []
    for cid in extra:
        start = time.perf_counter()
        store.pin(cid)
        pins.append(_ms(start))
    for cid in extra:
        start = time.perf_counter()
        store.unpin(cid)
        unpins.append(_ms(start))
    start = time.perf_counter()
    left = store.unpin_many(roots[:cfg.room_images])
    leave_ms = _ms(start)
    if left != cfg.room_images or store.pinned_count != cfg.pinned - cfg.room_images:
        raise RuntimeError(f"unpinned {left} of {cfg.room_images}; "
                           f"{store.pinned_count} of {cfg.pinned} left pinned")
    for cid in roots[:cfg.room_images]:
        store.pin(cid)
    # The pinned images and 50 cached blocks fill the quota: each put evicts one.
    total = store.total_bytes
    store = BlockStore(directory, quota_bytes=total + 50 * 1024)
    puts = []
    for n in range(cfg.ops * 10):
        data = n.to_bytes(8, "big") + b"cache" * 203
        cid = unixfs.cid_v1(unixfs.CODEC_RAW, data)
        start = time.perf_counter()
        store.put(cid, data, verified=True)
        puts.append(_ms(start) * 1000.0)
    return {"open_ms": rounded(open_ms), "pin_ms": rounded(statistics.median(pins)),
            "unpin_ms": rounded(statistics.median(unpins)), "leave_room_ms": rounded(leave_ms),
            "put_full_us": rounded(statistics.median(puts[len(puts) // 2:]))}


KEYS = ("open_ms", "pin_ms", "unpin_ms", "leave_room_ms", "put_full_us")


def run(cfg: PinsConfig) -> dict[str, Any]:
    """The scenario's section of latest.json."""
    runs = []
    for _ in range(cfg.rounds):
        with tempfile.TemporaryDirectory(prefix="gcb-pins-") as tmp:
            runs.append(one_run(cfg, Path(tmp)))
    return {"pinned": cfg.pinned, "room_images": cfg.room_images, "rounds": cfg.rounds,
            "ops_per_run": cfg.ops, **aggregate(runs, KEYS), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pinned", type=int, default=PinsConfig.pinned)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(run(PinsConfig(rounds=args.rounds, pinned=args.pinned)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
