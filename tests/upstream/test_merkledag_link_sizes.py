"""py-libp2p 0.8.1's `MerkleDag.add_file` does not build the standard UnixFS DAG.

Two defects, each enough to give a multi-chunk file a root CID that Kubo and Helia
never produce for the same bytes (the leaves themselves are identical):

- Every link Tsize over a raw leaf is 0: `add_file` hands `balanced_layout` None for
  the leaf bytes (to save memory), and the layout computes the Tsize from them. The
  standard Tsize is the cumulative serialized size of the child's DAG.
- A lone leftover child is linked directly instead of under its own parent node:
  `balanced_layout` passes a batch of one up a level unchanged, while go-unixfs and
  ipfs-unixfs-importer wrap it (so a 175-chunk file's root links a node, not a leaf).

These tests assert the defects; they fail, and say so, once upstream is fixed.
gossipchat imports files with daemon/core/unixfs/importer.py instead, pinned by the golden
CIDs in tests/unit/test_unixfs_importer.py.
"""

from __future__ import annotations

from pathlib import Path

from libp2p import new_host
from libp2p.bitswap import BitswapClient, MemoryBlockStore
from libp2p.bitswap.cid import cid_to_text, parse_cid_codec
from libp2p.bitswap.dag import MerkleDag
from libp2p.bitswap.dag_pb import decode_dag_pb

CHUNK = 262144
# ipfs-unixfs-importer 17.1.1 with {cidVersion: 1, rawLeaves: true, fixedSize 262144,
# balanced 174} on bytes(range(251)) repeated to 262145 bytes (tests/unit/test_unixfs_importer.py).
STANDARD_ROOT_262145 = "bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi"


def pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


async def add_file(tmp_path: Path, data: bytes, chunk_size: int) -> tuple[bytes, MemoryBlockStore]:
    store = MemoryBlockStore()
    dag = MerkleDag(BitswapClient(new_host(), store))
    path = tmp_path / "file"
    path.write_bytes(data)
    return await dag.add_file(str(path), chunk_size=chunk_size), store


async def test_link_sizes_are_zero_and_the_root_cid_differs(tmp_path: Path) -> None:
    root, store = await add_file(tmp_path, pattern(CHUNK + 1), CHUNK)
    block = await store.get_block(root)
    assert block is not None
    links, _ = decode_dag_pb(block)
    assert [link.size for link in links] == [0, 0], (
        "MerkleDag.add_file now writes real link sizes: the upstream defect looks fixed"
    )
    # The standard Tsize of a raw leaf is its length: 262144 and 1.
    assert cid_to_text(root) != STANDARD_ROOT_262145


async def test_lone_leftover_child_is_not_wrapped(tmp_path: Path) -> None:
    # 175 chunks: one full level of 174 plus one left over (small chunks keep it cheap).
    chunk = 1024
    root, store = await add_file(tmp_path, pattern(174 * chunk + 1), chunk)
    block = await store.get_block(root)
    assert block is not None
    links, _ = decode_dag_pb(block)
    assert len(links) == 2
    # The standard balanced layout links a dag-pb node holding the last leaf; py-libp2p
    # links the raw leaf itself.
    assert parse_cid_codec(links[1].cid) == "raw", (
        "MerkleDag.add_file now wraps the lone child: the upstream defect looks fixed"
    )
