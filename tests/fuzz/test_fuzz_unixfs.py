"""UnixFS: protobuf fields, CIDs, dag-pb nodes and the fetch assembler on hostile input.

Everything raises a `unixfs.UnixfsError` subclass (CidError, BlockError,
InvalidDagError and below) and nothing else, and holds at most `max_size` file bytes.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gossipchat.daemon.core import protobuf, unixfs
from gossipchat.daemon.core.protobuf import ProtobufError
from gossipchat.daemon.core.protobuf import len_field as pb_len_field
from gossipchat.daemon.core.protobuf import varint_field as pb_varint_field
from gossipchat.daemon.core.unixfs import (
    CODEC_DAG_PB,
    CODEC_RAW,
    FileAssembler,
    InvalidDagError,
    UnixfsError,
    cid_v1,
)
from gossipchat.daemon.core.unixfs.cid import _b58encode
from gossipchat.daemon.core.varint import encode as varint_encode
from tests.fuzz.helpers import corpus, fuzz_settings, hostile, mutated, peak_bytes

NODES = corpus("dagpb")
FILE = random.Random(3).randbytes(2 * unixfs.CHUNK_SIZE + 1000)
IMPORTED = unixfs.import_file(FILE)
BLOCKS = {block.cid: block.data for block in IMPORTED.blocks}
CIDS = tuple(BLOCKS) + tuple(cid_v1(CODEC_DAG_PB, node) for node in NODES)
MAX_SIZE = 4 * 1024 * 1024


@fuzz_settings()
@given(hostile(NODES))
def test_protobuf_fields_raise_only_protobuf_error(data: bytes) -> None:
    try:
        for field, wire, value in protobuf.iter_fields(data):
            assert field > 0
            assert isinstance(value, int) == (wire != 2)
    except ProtobufError:
        pass


@fuzz_settings()
@given(hostile(NODES), st.sampled_from([CODEC_DAG_PB, CODEC_RAW]))
def test_dag_links_raise_only_unixfs_errors(data: bytes, codec: int) -> None:
    try:
        links = unixfs.dag_links(cid_v1(codec, data), data)
    except InvalidDagError:
        assert codec == CODEC_DAG_PB
        return
    assert all(isinstance(link, bytes) for link in links)


@fuzz_settings()
@given(hostile(CIDS, max_size=80))
def test_binary_cids_raise_only_cid_error(cid: bytes) -> None:
    try:
        info = unixfs.parse_cid(cid)
    except unixfs.CidError:
        return
    text = unixfs.cid_to_str(cid)
    assert unixfs.normalize_cid(cid) == unixfs.normalize_cid(unixfs.cid_from_str(text)) \
        if info.version == 1 else unixfs.cid_from_str(text) == cid
    try:
        unixfs.verify_block(cid, b"")
        prefix = unixfs.cid_prefix(cid)
        unixfs.cid_from_prefix(prefix, b"")
    except unixfs.CidError:
        pass


_CID_TEXTS = (
    *(unixfs.cid_to_str(c) for c in CIDS),
    unixfs.cid_to_str(CIDS[0]).upper(),
    "z" + _b58encode(CIDS[0]),
    _b58encode(CIDS[-1][2:]),  # the CIDv0 "Qm..." of a dag-pb node
)


@fuzz_settings()
@given(st.text(max_size=120) | st.sampled_from(_CID_TEXTS)
       | mutated([t.encode() for t in _CID_TEXTS]).map(lambda b: b.decode("latin-1")))
def test_cid_strings_raise_only_cid_error(text: str) -> None:
    try:
        cid = unixfs.cid_from_str(text)
    except unixfs.CidError:
        return
    assert unixfs.parse_cid(cid).version in (0, 1)


@fuzz_settings()
@given(hostile([unixfs.cid_prefix(c) for c in CIDS], max_size=24), st.binary(max_size=8))
def test_block_prefixes_raise_only_cid_error(prefix: bytes, data: bytes) -> None:
    try:
        cid = unixfs.cid_from_prefix(prefix, data)
    except unixfs.CidError:
        return
    assert unixfs.verify_block(cid, data)


def _feed(assembler: FileAssembler, blocks: dict[bytes, bytes], order: random.Random) -> None:
    """Hand the assembler what it wants, in shuffled order, until done or refused."""
    for _ in range(64):
        wants = [cid for cid in assembler.wants() if cid in blocks]
        if not wants:
            return
        order.shuffle(wants)
        for cid in wants:
            assembler.add_block(cid, blocks[cid])


def _assemble(root: bytes, blocks: dict[bytes, bytes], seed: int) -> bytes | UnixfsError | None:
    """The file, the error that stopped it, or None if some block never came."""
    try:
        assembler = FileAssembler(root, max_size=MAX_SIZE)
        _feed(assembler, blocks, random.Random(seed))
    except UnixfsError as exc:
        return exc
    if not assembler.done:
        return None
    data = assembler.assemble()
    assert len(data) == assembler.progress[1] <= MAX_SIZE
    return data


def test_the_imported_file_assembles() -> None:
    assert _assemble(IMPORTED.root, BLOCKS, 0) == FILE


@fuzz_settings()
@given(hostile(NODES), st.integers(0, 2**32))
@example(b"\x12\x02\x0a\x00" * 65536, 0)
def test_a_hostile_root_raises_only_unixfs_errors(node: bytes, seed: int) -> None:
    result = _assemble(cid_v1(CODEC_DAG_PB, node), {cid_v1(CODEC_DAG_PB, node): node, **BLOCKS},
                       seed)
    # Every block offered is genuine: only the DAG can be at fault.
    assert not isinstance(result, unixfs.BlockError) or isinstance(result, InvalidDagError)


@st.composite
def _dags(draw: st.DrawFn) -> tuple[bytes, dict[bytes, bytes], bool]:
    """Small DAGs built bottom-up, with sizes, types and links right or subtly wrong."""
    blocks: dict[bytes, bytes] = {}
    made: list[tuple[bytes, int]] = []  # (cid, file bytes below it)
    for data in draw(st.lists(st.binary(max_size=6), min_size=1, max_size=4)):
        cid = cid_v1(CODEC_RAW, data)
        blocks[cid] = data
        made.append((cid, len(data)))
    for _ in range(draw(st.integers(1, 5))):
        children = draw(st.lists(st.sampled_from(made), max_size=6))
        sizes = [size + draw(st.sampled_from([0, 0, 0, 1, -1])) for _, size in children]
        inline = draw(st.binary(max_size=4))
        fields = [pb_varint_field(1, draw(st.sampled_from([2, 2, 2, 0, 1, 5, 99])))]
        if inline:
            fields.append(pb_len_field(2, inline))
        total = len(inline) + sum(sizes)
        if draw(st.booleans()):
            fields.append(pb_varint_field(3, max(0, total + draw(st.sampled_from([0, 0, 7])))))
        if draw(st.booleans()):
            fields.extend(pb_varint_field(4, max(0, size)) for size in sizes)
        else:
            fields.append(pb_len_field(4, b"".join(varint_encode(max(0, s)) for s in sizes)))
        links = b"".join(
            pb_len_field(2, pb_len_field(1, cid) + pb_len_field(2, b"") + pb_varint_field(3, 0))
            for cid, _ in children)
        node = links + pb_len_field(1, b"".join(fields))
        if draw(st.integers(0, 9)) == 0:
            node = draw(mutated([node], max_ops=1))
        cid = cid_v1(CODEC_DAG_PB, node)
        blocks[cid] = node
        made.append((cid, total))
    root = made[-1][0]
    corrupt = draw(st.integers(0, 9)) == 0
    if corrupt:  # a peer serving bytes that do not match the CID
        victim = draw(st.sampled_from(sorted(blocks)))
        blocks[victim] = blocks[victim] + b"\x00"
    return root, blocks, corrupt


@fuzz_settings()
@given(_dags(), st.integers(0, 2**32))
def test_generated_dags_raise_only_unixfs_errors(
    dag: tuple[bytes, dict[bytes, bytes], bool], seed: int
) -> None:
    root, blocks, corrupt = dag
    result = _assemble(root, blocks, seed)
    if isinstance(result, unixfs.BlockError) and not isinstance(result, InvalidDagError):
        assert corrupt  # the sender's fault, and only when a block was corrupted


def _node(links: list[tuple[bytes, int]], unixfs_fields: bytes) -> bytes:
    body = b"".join(
        pb_len_field(2, pb_len_field(1, cid) + pb_len_field(2, b"") + pb_varint_field(3, size))
        for cid, size in links)
    return body + pb_len_field(1, unixfs_fields)


LEAF = b"x"
LEAF_CID = cid_v1(CODEC_RAW, LEAF)
CLAIMS = {
    "a field of 2**63 bytes": b"\x0a" + varint_encode(2**63 - 1) + b"\x00",
    "Data of 4 GiB": pb_len_field(1, b"")[:1] + varint_encode(2**32) + b"\x08\x02",
    "filesize of 2**63 - 1": _node([], pb_varint_field(1, 2) + pb_varint_field(3, 2**63 - 1)),
    "blocksizes adding up to 2**64": _node(
        [(LEAF_CID, 1), (LEAF_CID, 1)],
        pb_varint_field(1, 2) + pb_varint_field(4, 2**63) + pb_varint_field(4, 2**63)),
    "packed blocksizes claiming 2**40": _node(
        [(LEAF_CID, 1)], pb_varint_field(1, 2) + pb_len_field(4, varint_encode(2**40))),
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_claimed_sizes_are_not_allocated(name: str) -> None:
    node = CLAIMS[name]
    cid = cid_v1(CODEC_DAG_PB, node)

    def run() -> bool:
        return FileAssembler(cid, max_size=MAX_SIZE).add_block(cid, node)

    result, peak = peak_bytes(run)
    assert isinstance(result, InvalidDagError), result
    assert peak < 256 * 1024, f"{name}: peak {peak} bytes"


# Regression inputs (issue 9): the assembler decodes blocks on the event loop. A 1 MiB
# dag-pb block of 262,144 empty links took 3.2 s and 14 MiB before it was refused; 1 MiB
# of packed blocksizes 0.9 s and 17 MiB. Nodes now hold at most MAX_NODE_LINKS links.
_MIB = 1024 * 1024
WIDE = {
    "262,144 empty links": b"\x12\x02\x0a\x00" * (_MIB // 4),
    "a million packed blocksizes": pb_len_field(
        1, pb_varint_field(1, 2) + pb_len_field(4, b"\x01" * (_MIB - 32))),
    "half a million unknown UnixFS fields": pb_len_field(
        1, pb_varint_field(1, 2) + b"\x48\x00" * (_MIB // 2 - 8)),
    "2049 real links": _node([(LEAF_CID, 1)] * (unixfs.MAX_NODE_LINKS + 1),
                             pb_varint_field(1, 2)
                             + b"".join(pb_varint_field(4, 1)
                                        for _ in range(unixfs.MAX_NODE_LINKS + 1))),
}


@pytest.mark.parametrize("name", sorted(WIDE))
def test_wide_nodes_are_refused_early(name: str) -> None:
    node = WIDE[name]
    cid = cid_v1(CODEC_DAG_PB, node)
    assembler = FileAssembler(cid, max_size=MAX_SIZE)
    result, peak = peak_bytes(lambda: assembler.add_block(cid, node))
    assert isinstance(result, InvalidDagError), result
    assert peak < len(node) + 512 * 1024, f"{name}: peak {peak} bytes"


def test_a_node_of_max_node_links_assembles() -> None:
    count = unixfs.MAX_NODE_LINKS
    root = _node([(LEAF_CID, 1)] * count,
                 pb_varint_field(1, 2) + b"".join(pb_varint_field(4, 1) for _ in range(count)))
    root_cid = cid_v1(CODEC_DAG_PB, root)
    assert _assemble(root_cid, {root_cid: root, LEAF_CID: LEAF}, 0) == LEAF * count


def test_a_subtree_reused_many_times_stays_within_max_size() -> None:
    """174 links to a node of 174 links to a 1-byte leaf: 30,276 positions, 30 KB."""
    inner = _node([(LEAF_CID, 1)] * 174,
                  pb_varint_field(1, 2) + b"".join(pb_varint_field(4, 1) for _ in range(174)))
    inner_cid = cid_v1(CODEC_DAG_PB, inner)
    root = _node([(inner_cid, 174)] * 174,
                 pb_varint_field(1, 2) + b"".join(pb_varint_field(4, 174) for _ in range(174)))
    root_cid = cid_v1(CODEC_DAG_PB, root)
    blocks = {root_cid: root, inner_cid: inner, LEAF_CID: LEAF}
    small = FileAssembler(root_cid, max_size=174 * 174 - 1)
    with pytest.raises(unixfs.FileTooLargeError):
        small.add_block(root_cid, root)
    assert _assemble(root_cid, blocks, 0) == LEAF * 174 * 174
