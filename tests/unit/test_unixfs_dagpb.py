"""dag-pb nodes and UnixFS Data (core/unixfs/dagpb.py): what the encoders write decodes
back, links are listed for pinning, and a block that is no protobuf is an invalid DAG."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core.unixfs import CODEC_DAG_PB, CODEC_RAW, InvalidDagError, cid_v1
from gossipchat.daemon.core.unixfs.dagpb import (
    MAX_NODE_LINKS,
    UNIXFS_FILE,
    dag_links,
    decode_dag_pb,
    decode_unixfs,
    encode_dag_pb,
    encode_unixfs_file,
)

LEAVES = [cid_v1(CODEC_RAW, bytes([i])) for i in range(3)]


def test_a_file_node_round_trips() -> None:
    data = encode_unixfs_file(6, [1, 2, 3])
    node = encode_dag_pb([(cid, size) for cid, size in zip(LEAVES, [1, 2, 3], strict=True)],
                         data)
    links, decoded = decode_dag_pb(node)
    assert [(link.cid, link.tsize) for link in links] == list(zip(LEAVES, [1, 2, 3],
                                                                  strict=True))
    assert decoded == data
    meta = decode_unixfs(data)
    assert (meta.type, meta.filesize, meta.blocksizes, meta.data) == (UNIXFS_FILE, 6,
                                                                     (1, 2, 3), b"")


def test_dag_links_lists_the_children_of_a_node_and_none_of_a_leaf() -> None:
    node = encode_dag_pb([(LEAVES[0], 1)], encode_unixfs_file(1, [1]))
    assert dag_links(cid_v1(CODEC_DAG_PB, node), node) == [LEAVES[0]]
    assert dag_links(LEAVES[1], b"\x01") == []


@pytest.mark.parametrize("block", [b"\x12\x05abc", b"\x12", b"\x0b"])
def test_a_block_that_is_no_protobuf_is_an_invalid_dag(block: bytes) -> None:
    with pytest.raises(InvalidDagError, match="does not decode"):
        dag_links(cid_v1(CODEC_DAG_PB, block), block)


def test_a_node_with_too_many_links_is_refused() -> None:
    node = encode_dag_pb([(LEAVES[0], 1)] * (MAX_NODE_LINKS + 1), b"")
    with pytest.raises(InvalidDagError, match=f"more than {MAX_NODE_LINKS} links"):
        decode_dag_pb(node)
