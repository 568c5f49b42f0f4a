"""Interop with a foreign bitswap implementation: Helia's @helia/bitswap on js-libp2p.

tests/interop/helia_peer.mjs is the standard peer (versions pinned in
tests/interop/package.json and package-lock.json). These tests check both directions
against our adapter, and that our importer gives the same CID as Helia's for the
same bytes. They run `npm ci` into tests/interop/node_modules when it is missing or
older than the lock file, and skip only if node or npm is not installed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import info_from_p2p_addr

from gossipchat.daemon.adapters.bitswap import Bitswap
from gossipchat.daemon.adapters.blockstore import BlockStore
from gossipchat.daemon.core import unixfs
from harness.libp2p_hosts import run_host, stock_host

INTEROP = Path(__file__).resolve().parent.parent / "interop"
SCRIPT = INTEROP / "helia_peer.mjs"
MB = 1_000_000

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the Helia interop peer",
)


def pattern(size: int, period: int = 251) -> bytes:
    return (bytes(range(period)) * (size // period + 1))[:size]


@pytest.fixture(scope="module")
def helia(interop: Path) -> Path:
    """The Helia peer script, with the interop tree installed (tests/conftest.py)."""
    return interop / SCRIPT.name


async def start_node(nursery: trio.Nursery, directory: Path) -> tuple[IHost, BlockStore, Bitswap]:
    host = stock_host()
    await nursery.start(run_host, host)
    store = BlockStore(directory)
    service = Bitswap(host, store)
    await nursery.start(service.run)
    return host, store, service


async def run_node_script(script: Path, *args: str) -> list[dict[str, Any]]:
    with trio.fail_after(120):
        done = await trio.run_process(
            ["node", str(script), *args], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


class HeliaServer:
    """`helia_peer.mjs serve FILE`: runs until its stdin closes."""

    def __init__(self, process: trio.Process, info: dict[str, Any]) -> None:
        self.process = process
        self.info = info

    async def stop(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.fail_after(30):
            await self.process.wait()


async def start_helia_server(
    nursery: trio.Nursery, script: Path, file: Path, *flags: str
) -> HeliaServer:
    command = ["node", str(script), "serve", str(file), *flags]
    process: trio.Process = await nursery.start(
        partial(trio.run_process, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(60):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(4096)
            assert chunk, "helia_peer.mjs serve exited before printing its address"
            line += chunk
    return HeliaServer(process, json.loads(line))


async def test_our_cid_equals_helias(helia: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    samples = {
        "empty": b"",
        "one": b"\x01",
        "chunk": pattern(unixfs.CHUNK_SIZE),
        "chunk+1": pattern(unixfs.CHUNK_SIZE + 1),
        "3MB-random": rng.randbytes(3 * MB),
        "10MB": pattern(10 * MB),
    }
    files = []
    for name, data in samples.items():
        path = tmp_path / name
        path.write_bytes(data)
        files.append(str(path))
    theirs = {
        Path(row["file"]).name: row["cid"] for row in await run_node_script(helia, "cid", *files)
    }
    ours = {
        name: unixfs.cid_to_str(unixfs.import_file(data).root) for name, data in samples.items()
    }
    assert ours == theirs


async def test_helia_fetches_from_us(helia: Path, nursery: trio.Nursery, tmp_path: Path) -> None:
    host, store, service = await start_node(nursery, tmp_path / "ours")
    data = pattern(5 * MB, period=241)
    root = store.import_file(data)
    address = str(host.get_addrs()[0])
    assert "/p2p/" in address
    [result] = await run_node_script(
        helia, "fetch", address, unixfs.cid_to_str(root), "--timeout", "60000"
    )
    assert result == {
        "cid": unixfs.cid_to_str(root),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert service.stats.blocks_sent == store.count  # every block, each once


@pytest.mark.parametrize(
    ("flags", "size"),
    [((), 5 * MB), (("--legacy",), 3 * MB)],
    ids=["standard", "legacy-cidv0-trickle"],
)
async def test_we_fetch_from_helia(
    helia: Path, nursery: trio.Nursery, tmp_path: Path, flags: tuple[str, ...], size: int
) -> None:
    host, store, service = await start_node(nursery, tmp_path / "ours")
    data = pattern(size, period=239)
    file = tmp_path / "file"
    file.write_bytes(data)
    server = await start_helia_server(nursery, helia, file, *flags)
    peer = info_from_p2p_addr(multiaddr.Multiaddr(server.info["multiaddr"]))
    with trio.fail_after(60):
        await host.connect(peer)
        root = unixfs.cid_from_str(server.info["cid"])
        got = await service.fetch(root, [peer.peer_id], max_size=size, timeout=45)
    assert got == data
    if not flags:
        assert root == unixfs.import_file(data).root
    else:
        assert server.info["cid"].startswith("Qm")  # CIDv0, dag-pb leaves
    assert service.stats.bad_blocks == 0
    assert store.read_file(root, max_size=size) == data
    await server.stop()
