"""The UnixFS importer: a file's bytes in, the standard DAG of blocks out.

It is byte-for-byte the standard one that INTERFACE.md promises ("Images are UnixFS
files"): CIDv1, raw leaves, fixed 256 KiB chunks, a balanced layout with at most 174
links per node, and a single-chunk file reduced to its raw leaf. That is what
`ipfs add --cid-version=1 --raw-leaves --chunker=size-262144` (Kubo) and Helia's
`ipfs-unixfs-importer` produce, so a Kubo or Helia peer computes the same root CID for
the same bytes. The golden CIDs in tests/unit/test_unixfs_importer.py pin this.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cid import CODEC_DAG_PB, CODEC_RAW, cid_v1
from .dagpb import encode_dag_pb, encode_unixfs_file

__all__ = ["CHUNK_SIZE", "MAX_LINKS", "Block", "ImportResult", "import_file"]

CHUNK_SIZE = 256 * 1024
"""Fixed chunk size of the importer: Kubo's `size-262144`."""

MAX_LINKS = 174
"""Most children per dag-pb node in the balanced layout (Kubo's and Helia's default)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One content-addressed block: its binary CID and its bytes."""

    cid: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What `import_file` produced: the root CID and every distinct block of the DAG.

    Blocks are listed leaves first, root last, each CID once (identical chunks share one
    block, as in any content-addressed store).
    """

    root: bytes
    blocks: list[Block]
    size: int


@dataclass(frozen=True, slots=True)
class _Built:
    cid: bytes
    filesize: int  # file bytes below this node (the parent's blocksizes entry)
    tsize: int  # serialized bytes of the whole sub-DAG (the parent's link Tsize)


def import_file(data: bytes | memoryview) -> ImportResult:
    """Chunk `data` into the standard UnixFS DAG (see the module docstring) and return it.

    Matches Kubo and Helia byte for byte, including the corner cases: an empty file is
    one empty raw leaf, a file of one chunk is its raw leaf, and a level that has a
    single leftover child still gets its own parent node.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    blocks: dict[bytes, bytes] = {}
    level: list[_Built] = []
    for offset in range(0, max(total, 1), CHUNK_SIZE):
        chunk = bytes(view[offset : offset + CHUNK_SIZE])
        cid = cid_v1(CODEC_RAW, chunk)
        blocks.setdefault(cid, chunk)
        level.append(_Built(cid, len(chunk), len(chunk)))
    while len(level) > 1:
        parents = []
        for start in range(0, len(level), MAX_LINKS):
            children = level[start : start + MAX_LINKS]
            filesize = sum(child.filesize for child in children)
            unixfs = encode_unixfs_file(filesize, (child.filesize for child in children))
            node = encode_dag_pb(((child.cid, child.tsize) for child in children), unixfs)
            cid = cid_v1(CODEC_DAG_PB, node)
            blocks.setdefault(cid, node)
            tsize = len(node) + sum(child.tsize for child in children)
            parents.append(_Built(cid, filesize, tsize))
        level = parents
    root = level[0].cid
    return ImportResult(
        root=root,
        blocks=[Block(cid, block) for cid, block in blocks.items()],
        size=total,
    )
