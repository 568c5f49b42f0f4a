"""Image fetch throughput: our bitswap adapter against py-libp2p's own and the pipes below.

Five figures, each the median of `--repeat` transfers of the same `--size` bytes (10 MB
by default) from one peer to another over 127.0.0.1, in MB/s (10^6 bytes per second):

- mb_s: gossipchat's bitswap adapter (daemon/adapters/bitswap.py) fetching the file's
  UnixFS DAG: every block verified and written to a block store on disk, the file
  assembled in memory. Each run starts with an empty store.
- baseline_bitswap_mb_s: py-libp2p 0.8.1's own bitswap on the same bytes, used as its
  documentation shows (`BitswapClient` and `MerkleDag.add_file` / `fetch_file`).
- raw_stream_mb_s: a bare py-libp2p stream (TCP, Noise, yamux) carrying the bytes in
  256 KiB writes: the ceiling any protocol on this stack can reach.
- loopback_mb_s: a bare trio TCP connection, the ceiling of the machine.
- store_write_mb_s: no network at all: the file's blocks written into an empty block
  store (`BlockStore.put_many_async`, already verified, so no hashing), the client's
  disk half of a fetch. A fetch stores every block it gets, so it cannot be faster
  than this. It needs no peer, so it has no server and runs once per topology like
  the others. On a virtual machine whose memory the host backs only when the guest
  first touches it, this ceiling moves with the guest's memory: each new page of
  page cache may cost a host page fault, and a fresh store is all new pages (130 to
  930 MB/s on the development machine).

Beside them, `small_image`: the time to fetch a 200 KB image (one block, a typical
chat photo) from one peer, ours and py-libp2p's bitswap, in ms, measured the same way
(two processes, a fresh client host each time). A file this size is all latency: two
streams opened, one round trip each way, one block stored.

Every transfer goes server to client, as a fetch does, and the clock runs from the
request to the last byte (store_write: from the call to its return). Connections are
set up before; the bitswap clients get a fresh host and an empty store for every run,
so each run is a first fetch. The headline figures use two processes, server and
client each in its own, as two daemons run; the same five measured with both peers in
one trio loop are under "in_process" (both ends then share one core). Targets: mb_s
>= 40 and at least twice baseline_bitswap_mb_s.

The machine is shared: other work on its 2 cores moves every figure by a factor of two
or more from one minute to the next. Medians of alternating runs are the honest
summary; compare figures from the same run only.

Run: `python -m bench.image_fetch [--size BYTES] [--repeat N] [--out FILE]` from the
checkout's root with the project installed; it prints the JSON and writes it to
--out too. `bench.run` calls `run(quick=...)`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from gossipchat.daemon.adapters.bitswap import Bitswap
from gossipchat.daemon.adapters.blockstore import BlockStore
from gossipchat.daemon.adapters.p2p import new_libp2p_host
from gossipchat.daemon.core import unixfs
from harness.libp2p_hosts import LOOPBACK, stock_host

KINDS = ("ours", "baseline_bitswap", "raw_stream", "loopback", "store_write")
KEYS = {
    "ours": "mb_s",
    "baseline_bitswap": "baseline_bitswap_mb_s",
    "raw_stream": "raw_stream_mb_s",
    "loopback": "loopback_mb_s",
    "store_write": "store_write_mb_s",
}
STREAM_PROTOCOL = TProtocol("/gossipchat-bench/stream/1.0.0")
STREAM_WRITE = 256 * 1024
TARGET_MB_S = 40.0
TARGET_SPEEDUP = 2.0
TRANSFER_TIMEOUT = 120.0
SMALL_SIZE = 200_000  # small_image: one block
SMALL_KINDS = ("ours", "baseline_bitswap")


def payload(size: int) -> bytes:
    """Deterministic bytes whose 256 KiB chunks all differ (251 is prime)."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def make_host() -> IHost:
    """A stock py-libp2p 0.8.1 host (Noise, its own yamux): the baselines run on it."""
    return stock_host()


def make_our_host() -> IHost:
    """A host as gossipchatd builds it (Noise, our yamux): `ours` runs on it."""
    return new_libp2p_host(create_new_key_pair())


def mb_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


# --------------------------------------------------------------------------------------
# Servers: each calls task_status.started((address, cid_text)) and serves until cancelled


async def serve_ours(size: int, scratch: Path, *, task_status: Any) -> None:
    host = make_our_host()
    store = BlockStore(scratch / "server-blocks")  # creates the directories
    root = store.import_file(payload(size))
    async with host.run(listen_addrs=LOOPBACK), trio.open_nursery() as nursery:
        await nursery.start(Bitswap(host, store).run)
        task_status.started((str(host.get_addrs()[0]), unixfs.cid_to_str(root)))
        await trio.sleep_forever()


def _payload_file(scratch: Path, size: int) -> Path:
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "server-file"
    path.write_bytes(payload(size))
    return path


async def serve_baseline_bitswap(size: int, scratch: Path, *, task_status: Any) -> None:
    from libp2p.bitswap import BitswapClient, MemoryBlockStore, cid_to_text
    from libp2p.bitswap.dag import MerkleDag

    host = make_host()
    path = _payload_file(scratch, size)
    async with host.run(listen_addrs=LOOPBACK), trio.open_nursery() as nursery:
        service = BitswapClient(host, MemoryBlockStore())
        service.set_nursery(nursery)
        await service.start()
        root = await MerkleDag(service).add_file(str(path))
        task_status.started((str(host.get_addrs()[0]), cid_to_text(root)))
        await trio.sleep_forever()


async def serve_raw_stream(size: int, scratch: Path, *, task_status: Any) -> None:
    data = payload(size)

    async def handler(stream: INetStream) -> None:
        await stream.read(1)  # the request
        for start in range(0, size, STREAM_WRITE):
            await stream.write(data[start : start + STREAM_WRITE])
        await stream.close()

    host = make_host()
    async with host.run(listen_addrs=LOOPBACK):
        host.set_stream_handler(STREAM_PROTOCOL, handler)
        task_status.started((str(host.get_addrs()[0]), ""))
        await trio.sleep_forever()


async def serve_loopback(size: int, scratch: Path, *, task_status: Any) -> None:
    data = payload(size)

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(1)
        for start in range(0, size, STREAM_WRITE):
            await stream.send_all(data[start : start + STREAM_WRITE])
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        task_status.started((f"127.0.0.1:{port}", ""))


# The kinds that fetch from a peer, and the server each needs.
SERVERS: dict[str, Callable[..., Awaitable[None]]] = {
    "ours": serve_ours,
    "baseline_bitswap": serve_baseline_bitswap,
    "raw_stream": serve_raw_stream,
    "loopback": serve_loopback,
}
NO_PEER = ("-", "")  # the (address, cid) a kind without a server gets


# --------------------------------------------------------------------------------------
# Clients: each returns the MB/s of `repeat` transfers


async def fetch_ours(address: str, cid: str, size: int, repeat: int, scratch: Path) -> list[float]:
    expected = payload(size)
    peer = info_from_p2p_addr(multiaddr.Multiaddr(address))
    root = unixfs.cid_from_str(cid)
    rates = []
    for _ in range(repeat):
        # A fresh host, service and empty store each time: every run is a first fetch.
        host = make_our_host()
        service = Bitswap(host, BlockStore(tempfile.mkdtemp(prefix="client-", dir=scratch)))
        async with host.run(listen_addrs=LOOPBACK), trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await host.connect(peer)
            start = time.perf_counter()
            with trio.fail_after(TRANSFER_TIMEOUT):
                data = await service.fetch(
                    root, [peer.peer_id], max_size=size, timeout=TRANSFER_TIMEOUT
                )
            rates.append(mb_s(size, time.perf_counter() - start))
            nursery.cancel_scope.cancel()
        assert data == expected, "fetched bytes differ"
    return rates


async def fetch_baseline_bitswap(
    address: str, cid: str, size: int, repeat: int, scratch: Path
) -> list[float]:
    from libp2p.bitswap import BitswapClient, MemoryBlockStore
    from libp2p.bitswap.dag import MerkleDag

    expected = payload(size)
    peer = info_from_p2p_addr(multiaddr.Multiaddr(address))
    root = unixfs.cid_from_str(cid)
    rates = []
    for _ in range(repeat):
        host = make_host()
        async with host.run(listen_addrs=LOOPBACK), trio.open_nursery() as nursery:
            service = BitswapClient(host, MemoryBlockStore())
            service.set_nursery(nursery)
            await service.start()
            await host.connect(peer)
            start = time.perf_counter()
            with trio.fail_after(TRANSFER_TIMEOUT):
                data, _ = await MerkleDag(service).fetch_file(
                    root, peer_id=peer.peer_id, timeout=TRANSFER_TIMEOUT
                )
            rates.append(mb_s(size, time.perf_counter() - start))
            await service.stop()
            nursery.cancel_scope.cancel()
        assert data == expected, "fetched bytes differ"
    return rates


async def fetch_raw_stream(
    address: str, cid: str, size: int, repeat: int, scratch: Path
) -> list[float]:
    host = make_host()
    peer = info_from_p2p_addr(multiaddr.Multiaddr(address))
    rates = []
    async with host.run(listen_addrs=LOOPBACK):
        await host.connect(peer)
        for _ in range(repeat):
            stream = await host.new_stream(peer.peer_id, [STREAM_PROTOCOL])
            start = time.perf_counter()
            with trio.fail_after(TRANSFER_TIMEOUT):
                await stream.write(b"?")
                got = 0
                while got < size:
                    chunk = await stream.read(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
            rates.append(mb_s(size, time.perf_counter() - start))
            assert got == size, f"stream carried {got} of {size} bytes"
            await stream.close()
    return rates


async def fetch_loopback(
    address: str, cid: str, size: int, repeat: int, scratch: Path
) -> list[float]:
    host, port = address.rsplit(":", 1)
    rates = []
    for _ in range(repeat):
        stream = await trio.open_tcp_stream(host, int(port))
        start = time.perf_counter()
        with trio.fail_after(TRANSFER_TIMEOUT):
            await stream.send_all(b"?")
            got = 0
            while got < size:
                chunk = await stream.receive_some(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        rates.append(mb_s(size, time.perf_counter() - start))
        assert got == size, f"socket carried {got} of {size} bytes"
        await stream.aclose()
    return rates


async def fetch_store_write(
    address: str, cid: str, size: int, repeat: int, scratch: Path
) -> list[float]:
    blocks = [(block.cid, block.data) for block in unixfs.import_file(payload(size)).blocks]
    rates = []
    for _ in range(repeat):
        # A fresh store each time, as `ours` gives each fetch: every block a new file.
        store = BlockStore(tempfile.mkdtemp(prefix="store-", dir=scratch))
        start = time.perf_counter()
        with trio.fail_after(TRANSFER_TIMEOUT):
            await store.put_many_async(blocks, verified=True)
        rates.append(mb_s(size, time.perf_counter() - start))
        assert store.count == len({unixfs.normalize_cid(cid) for cid, _ in blocks})
    return rates


CLIENTS: dict[str, Callable[[str, str, int, int, Path], Awaitable[list[float]]]] = {
    "ours": fetch_ours,
    "baseline_bitswap": fetch_baseline_bitswap,
    "raw_stream": fetch_raw_stream,
    "loopback": fetch_loopback,
    "store_write": fetch_store_write,
}


# --------------------------------------------------------------------------------------
# Topologies


def measure_in_process(size: int, repeat: int) -> dict[str, list[float] | str]:
    """The four servers and the client as tasks of one trio loop, kinds alternating."""

    async def main() -> dict[str, list[float] | str]:
        results: dict[str, list[float] | str] = {kind: [] for kind in KINDS}
        with tempfile.TemporaryDirectory(prefix="gc-bench-") as scratch_dir:
            scratch = Path(scratch_dir)
            async with trio.open_nursery() as nursery:
                servers = {}
                for kind in KINDS:
                    servers[kind] = (await nursery.start(SERVERS[kind], size, scratch / kind)
                                     if kind in SERVERS else NO_PEER)
                for _ in range(repeat):
                    for kind in KINDS:
                        await _one(results, kind, servers[kind], size, scratch)
                nursery.cancel_scope.cancel()
        return results

    return trio.run(main)


async def _one(
    results: dict[str, list[float] | str],
    kind: str,
    server: tuple[str, str],
    size: int,
    scratch: Path,
) -> None:
    """One transfer of `kind`, its rate appended to results (or the error recorded)."""
    so_far = results[kind]
    if isinstance(so_far, str):
        return  # it failed before: do not let it fail again in every round
    try:
        so_far.extend(await CLIENTS[kind](server[0], server[1], size, 1, scratch))
    except Exception as exc:  # one broken measurement must not hide the others
        results[kind] = f"{type(exc).__name__}: {exc}"


def measure_two_process(size: int, repeat: int,
                        kinds: tuple[str, ...] = KINDS) -> dict[str, list[float] | str]:
    """Each server in a child process (this script with --serve), the client here."""
    results: dict[str, list[float] | str] = {kind: [] for kind in kinds}
    children: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="gc-bench-") as scratch_dir:
        try:
            servers: dict[str, tuple[str, str]] = {}
            for kind in kinds:
                if kind not in SERVERS:
                    servers[kind] = NO_PEER
                    continue
                command = [
                    sys.executable, "-m", "bench.image_fetch",
                    "--serve", kind, "--size", str(size),
                ]  # fmt: skip
                # From the checkout's root, where the dev-only `harness` package is.
                child = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    cwd=Path(__file__).resolve().parent.parent,
                )
                children.append(child)
                assert child.stdout is not None
                line = child.stdout.readline().split()
                if len(line) < 2 or line[0] != "READY":
                    results[kind] = f"the {kind} server did not start"
                    continue
                servers[kind] = (line[1], line[2] if len(line) > 2 else "")
            for _ in range(repeat):
                for kind, server in servers.items():
                    trio.run(_one, results, kind, server, size, Path(scratch_dir))
        finally:
            for child in children:
                if child.stdin is not None:
                    child.stdin.close()  # a server stops when its stdin closes
            for child in children:
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    return results


def serve_forever(kind: str, size: int) -> None:
    """Child side of measure_two_process: print READY, serve until stdin closes."""

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="gc-bench-server-") as scratch_dir:
            async with trio.open_nursery() as nursery:
                address, cid = await nursery.start(SERVERS[kind], size, Path(scratch_dir))
                print("READY", address, cid, flush=True)
                stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
                while await stdin.receive_some(4096):
                    pass
                nursery.cancel_scope.cancel()

    trio.run(main)


# --------------------------------------------------------------------------------------
# Report


def summarize(rates: dict[str, list[float] | str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        key = KEYS[kind]
        values = rates[kind]
        if isinstance(values, str):
            out[key] = None
            out[f"{key}_error"] = values
            continue
        out[key] = round(statistics.median(values), 1)
        out[f"{key}_min"] = round(min(values), 1)
        out[f"{key}_max"] = round(max(values), 1)
    ours, baseline = out.get("mb_s"), out.get("baseline_bitswap_mb_s")
    out["speedup_vs_baseline"] = round(ours / baseline, 2) if ours and baseline else None
    return out


def summarize_small(rates: dict[str, list[float] | str]) -> dict[str, Any]:
    """small_image: each kind's fetch times in ms (from its rates)."""
    out: dict[str, Any] = {"size_kb": SMALL_SIZE / 1e3}
    for kind in SMALL_KINDS:
        key = "ms" if kind == "ours" else f"{kind}_ms"
        values = rates[kind]
        if isinstance(values, str):
            out[key] = None
            out[f"{key}_error"] = values
            continue
        times = [SMALL_SIZE / (rate * 1e6) * 1e3 for rate in values]
        out[key] = round(statistics.median(times), 2)
        out[f"{key}_min"] = round(min(times), 2)
        out[f"{key}_max"] = round(max(times), 2)
    return out


def measure(size: int, repeat: int) -> dict[str, Any]:
    """All five figures in both topologies, the kinds alternating to spread the noise;
    then the small image's times (three times as many fetches: each is short)."""
    runs = {
        "two_process": measure_two_process(size, repeat),
        "in_process": measure_in_process(size, repeat),
    }
    small = measure_two_process(SMALL_SIZE, 3 * repeat, SMALL_KINDS)
    headline = summarize(runs["two_process"])
    in_process = summarize(runs["in_process"])
    result: dict[str, Any] = {
        "size_mb": size / 1e6,
        "repeat": repeat,
        "topology": "two processes on 127.0.0.1 (in_process: one trio loop)",
        **headline,
        "targets": {
            "mb_s_min": TARGET_MB_S,
            "speedup_min": TARGET_SPEEDUP,
            "met": bool(
                headline["mb_s"]
                and headline["mb_s"] >= TARGET_MB_S
                and headline["speedup_vs_baseline"]
                and headline["speedup_vs_baseline"] >= TARGET_SPEEDUP
            ),
        },
        "in_process": in_process,
        "small_image": summarize_small(small),
        "runs": {
            topology: {
                kind: [round(v, 1) for v in values] if isinstance(values, list) else values
                for kind, values in kinds.items()
            }
            for topology, kinds in runs.items()
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """For bench.run: 10 MB, 3 transfers per figure (quick) or 7."""
    return measure(10_000_000, 3 if quick else 7)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="bytes per transfer")
    parser.add_argument("--repeat", type=int, default=5, help="transfers per figure")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_forever(args.serve, args.size)
        return 0
    result = measure(args.size, args.repeat)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
