"""The UnixFS importer (core/unixfs/importer.py): golden CIDs of the reference
importer, the single-chunk and empty corner cases, and the balanced layout."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core import unixfs
from gossipchat.daemon.core.protobuf import len_field
from gossipchat.daemon.core.unixfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    FileAssembler,
    cid_to_str,
    import_file,
)
from gossipchat.daemon.core.unixfs.dagpb import decode_unixfs
from tests.unit.unixfs_samples import blocks_of, dag_tsize, decode_node, fetch_all, pattern

# Golden CIDs from the reference importer. Generated outside the repository with
# node v20.20.2 and npm packages ipfs-unixfs-importer@17.1.1 (which pulls ipfs-unixfs
# 13.1.1 and @ipld/dag-pb 4.2.0) and blockstore-core@7.0.1:
#
#   importer([{ content: pattern(period, n) }], new MemoryBlockstore(), {
#     cidVersion: 1, rawLeaves: true,
#     chunker: fixedSize({ chunkSize: 262144 }),
#     layout: balanced({ maxChildrenPerNode: 174 }) })
#
# (the defaults reduceSingleLeafToSelf: true, fieldOrder: 'links-first' apply). These
# are the settings of `ipfs add --cid-version=1 --raw-leaves --chunker=size-262144`.
# Columns: pattern period, size, root CID, distinct blocks the importer wrote. Period
# 256 makes every full chunk identical (deduplicated leaves); period 251 makes every
# chunk of these files distinct. 45_613_056 = 174 chunks, the most one level holds.
GOLDEN = [
    (256, 0, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", 1),
    (256, 1, "bafkreidogqfzz75tpkmjzjke425xqcrmpcib2p5tg44hnbirumdbpl5adu", 1),
    (256, 1000, "bafkreifiv4ezx4xipbqjkwg362oy7chuumiebkgpqs2utigpvejpcl74h4", 1),
    (256, 262143, "bafkreibc7q5r37m3unuq5urr2wrquow77mloszqwjclfgqax5f3indtzai", 1),
    (256, 262144, "bafkreibdci4uxwmvixm54ey4etx3paphmwwbv3beh4xnsndvs6tzhjav5e", 1),
    (256, 262145, "bafybeibp4affrl5svfd2wwp3l2srpu76awzmvyc37zmrtap5iqydfxffuy", 3),
    (256, 524288, "bafybeidskqir6ikiqxozidrejcofr3zho3eenlrvzlx56zysq2nqepsqhe", 2),
    (256, 1_000_000, "bafybeia3gjdptbaeh5veyius2mvpegzwuhfi7rxd2capbhfiqavxvg22ia", 3),
    (256, 10_000_000, "bafybeidd3ryuuxcg5wk5ajputkmx7ba73hqsq3uphfu67w475dwyzlxf5y", 3),
    (256, 45_613_056, "bafybeic6aphmw3ff6rusfv3xkhvt5hr5qukkef4uybaq2kr4gfurjdadwi", 2),
    (256, 45_613_057, "bafybeifesat4tfkoyjquv3u4ptxx43lfa3xewmq4wlbn6gmosvp7ov6nfy", 5),
    (256, 50_000_000, "bafybeigwxmpxartteglgzwigheep5ipf7kpvykb7yiryrrpfvgtdomtwte", 5),
    (251, 1000, "bafkreicojquuwmy7piqjti3zx3buxh47ya64i2vumxmzr5gwqpnfgsd6nu", 1),
    (251, 262143, "bafkreiagptg6ztonoojy4wflk3wwusl5xt4vcy6uult4wa7oemsjtxhjsu", 1),
    (251, 262144, "bafkreibruh455iawsviqslif5c7uurdcfdemh22mtnytyzvnzn75kpejxy", 1),
    (251, 262145, "bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi", 3),
    (251, 524288, "bafybeihjlsmgtdumwxouubhh32wpo5k73zuptoz5bcxxcx3tflxmhyct2a", 3),
    (251, 1_000_000, "bafybeibx62obrkybp46hx3ivh53q4rnptgkunpgtwiib5lfelfgt2ekihm", 5),
    (251, 10_000_000, "bafybeia35ktcxku7e5ls6xykm6asaysznxczvuyu35tejzsxdr575rqat4", 40),
    (251, 45_613_056, "bafybeihpe5snhzneq7xs53nivmsopto5lrogo3wjynauqylqeym5a3irbm", 175),
    (251, 45_613_057, "bafybeib4y7ghw2rq7bracc4xwtxrbzo7cfvagdpte2tmrkgwl6dyard3cm", 178),
    (251, 50_000_000, "bafybeibj2bygcvu5axz7czp7mjl6ibmtt5d6y7ucxteyzhflcz4svt3yyq", 194),
]

# --------------------------------------------------------------------------------------
# The importer matches the reference importer


@pytest.mark.parametrize(
    ("period", "size", "expected", "block_count"),
    GOLDEN,
    ids=[f"p{period}-{size}" for period, size, _, _ in GOLDEN],
)
def test_golden_cid_matches_reference_importer(
    period: int, size: int, expected: str, block_count: int
) -> None:
    result = import_file(pattern(period, size))
    assert cid_to_str(result.root) == expected
    assert len(result.blocks) == block_count
    assert result.blocks[-1].cid == result.root
    assert result.size == size


def test_single_chunk_file_is_its_raw_leaf() -> None:
    data = pattern(251, CHUNK_SIZE)
    result = import_file(data)
    assert result.blocks == [unixfs.Block(result.root, data)]
    assert unixfs.parse_cid(result.root).codec == unixfs.CODEC_RAW


def test_empty_file_is_one_empty_raw_leaf() -> None:
    result = import_file(b"")
    assert result.blocks == [unixfs.Block(result.root, b"")]
    assembler = FileAssembler(result.root, max_size=0)
    fetch_all(assembler, blocks_of(result))
    assert assembler.assemble() == b""
    assert assembler.progress == (0, 0)


def test_two_level_dag_layout_and_link_sizes() -> None:
    size = MAX_LINKS * CHUNK_SIZE + 1
    result = import_file(pattern(251, size))
    blocks = blocks_of(result)
    root = blocks[result.root]
    # Canonical dag-pb: the first field is a Link (field 2), Data comes last.
    assert root[0] == 0x12
    links, data = decode_node(root)
    assert data is not None
    meta = decode_unixfs(data)
    assert meta.type == 2
    assert meta.filesize == size
    assert meta.blocksizes == (MAX_LINKS * CHUNK_SIZE, 1)
    assert len(links) == 2
    # Link Tsize is the cumulative serialized size of the child DAG, never 0.
    for child, tsize in [*links, *decode_node(blocks[links[0][0]])[0]]:
        assert tsize == dag_tsize(child, blocks)
        assert tsize is not None
        assert tsize > 0
    # Every link carries an empty Name (field 2, length 0) between Hash and Tsize.
    first_link = len_field(1, links[0][0]) + b"\x12\x00\x18"
    assert first_link in root
    # The lone 175th chunk still gets its own parent node, as in the balanced layout.
    lone_links, _ = decode_node(blocks[links[1][0]])
    assert len(lone_links) == 1
