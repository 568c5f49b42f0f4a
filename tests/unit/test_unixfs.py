"""Unit tests for the sans-IO UnixFS core: golden CIDs, round trips, the assembler, fuzz."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipchat.daemon.core import unixfs
from gossipchat.daemon.core.unixfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    BlockError,
    CidError,
    FileAssembler,
    FileTooLargeError,
    NotAFileError,
    SizeMismatchError,
    UnixfsError,
    cid_from_str,
    cid_to_str,
    import_file,
    verify_block,
)


def pattern(period: int, size: int) -> bytes:
    """bytes(range(period)) repeated and cut to `size`: cheap, deterministic, and the same
    bytes the golden generator fed to the reference importer."""
    return (bytes(range(period)) * (size // period + 1))[:size]


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

# DAGs written by other importer settings, to prove the assembler reads more than its
# own output. Same generator as above on bytes((i * 7) % 251 for i in range(400)):
#  - "v0-trickle": {cidVersion: 0, rawLeaves: false, leafType: 'raw',
#    reduceSingleLeafToSelf: false, chunker: fixedSize({chunkSize: 40}),
#    layout: trickle({maxChildrenPerNode: 3, layerRepeat: 2})}: CIDv0, dag-pb leaves
#    holding UnixFS Raw, a trickle DAG four levels deep (Kubo's --trickle style).
#  - "v0-balanced-file-leaves": {cidVersion: 0, rawLeaves: false, leafType: 'file',
#    chunker: fixedSize({chunkSize: 150}), layout: balanced({maxChildrenPerNode: 2})}:
#    CIDv0 dag-pb leaves holding UnixFS File data (old `ipfs add` defaults).
FOREIGN_DATA = bytes((i * 7) % 251 for i in range(400))
FOREIGN_DAGS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "v0-trickle": (
        "QmP5wrKnxUpcnW7U8zt6iTiF3VNpzZNfhF29DJceVD3b7D",
        [
            (
                "QmPng2xc6pZepWqcyXJxS932epiybnwoU3U7aubQuwWVQC",
                "Ci4IABIoAAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0tng5+71AQgPFhgo",
            ),
            (
                "QmdiDbvcG3iQLpkt35Q4VoJrKL3pBaJNU3Rn8Set9fZtx9",
                "Ci4IABIoHSQrMjlAR05VXGNqcXh/ho2Um6KpsLe+xczT2uHo7/YCCRAXHiUsMxgo",
            ),
            (
                "QmUmaRcaVnfYypSkHg6T1pWtRGD5iAskc9ZBp8FvhqxN5Z",
                "Ci4IABIoOkFIT1ZdZGtyeYCHjpWco6qxuL/GzdTb4unw9wMKERgfJi00O0JJUBgo",
            ),
            (
                "QmUS6sP45D4mVyMZ7hzAAtkx729KzLtSQDqXCcGgTotHPc",
                "Ci4IABIoV15lbHN6gYiPlp2kq7K5wMfO1dzj6vH4BAsSGSAnLjU8Q0pRWF9mbRgo",
            ),
            (
                "QmTV6DbKAz1n83zpiDG4XKbjp9EMTchUTBhH8g2CJP9arX",
                "Ci4IABIodHuCiZCXnqWss7rByM/W3eTr8vkFDBMaISgvNj1ES1JZYGdudXyDihgo",
            ),
            (
                "QmcwfQpw4wGYgkUSAgyiCcwmcqomDn23iMchTPDugyFv48",
                "Ci4IABIokZifpq20u8LJ0Nfe5ezz+gYNFBsiKTA3PkVMU1phaG92fYSLkpmgpxgo",
            ),
            (
                "QmNdeyZwoioDc29WhPtAaV43mFNuumMNsizNB1ycEGwjG7",
                "Ci4IABIorrW8w8rR2N/m7fQABw4VHCMqMTg/Rk1UW2JpcHd+hYyTmqGor7a9xBgo",
            ),
            (
                "QmP6PNXqQu49GjjCRN5xjBN9jyrYWjeXhstMFS7Ddq8b2p",
                "Ci4IABIoy9LZ4Ofu9QEIDxYdJCsyOUBHTlVcY2pxeH+GjZSboqmwt77FzNPa4Rgo",
            ),
            (
                "QmbHWKm8uL6eJoKgwQZ5uRXJLdqbZmhXe4np5wEU7w7Wtk",
                "Ci4IABIo6O/2AgkQFx4lLDM6QUhPVl1ka3J5gIeOlZyjqrG4v8bN1Nvi6fD3Axgo",
            ),
            (
                "QmacM5BrGCBX4JxgdkazjsYQhmSHfJRTokGBaWw92EtzVp",
                "Ci4IABIoChEYHyYtNDtCSVBXXmVsc3qBiI+WnaSrsrnAx87V3OPq8fgECxIZIBgo",
            ),
            (
                "QmPEvbmbaGAgWmVrWukUAH2HBnGmxpxxgVqGVDD77SoQnU",
                "EigKIhIgWouazajSXjz6uhKSRvzA0HNmH/1GIWqkROWYKjxZ4rcSABgwEigKIhIg"
                "THPsa5WXkiboQi5d9LFRe2JJZo/pmY05elL1gfLiSVwSABgwEigKIhIg2Pu9N6BO"
                "IvCwC7RmZO45AiXES3l4Qd5nsHlWi4PNYzkSABgwCgoIAhh4ICggKCAo",
            ),
            (
                "QmeUNTxqPE2fFDNnHsdtQme1HS9Ai9fJ2bgqx9fVi3RSfy",
                "EigKIhIgBFss2R772G273jZ3X08ejPCufYRQv2qs4xiAYEuQg5QSABgwEigKIhIg"
                "CzQ2pJAUsD2+BKWQuQmsyg80IMSfI3FF5CykTLuQqskSABgwEigKIhIgwFm01Q+Q"
                "2i80VeaIaaC3DVaPgYnRimjwkjsGZS9vrB0SABgwCgoIAhh4ICggKCAo",
            ),
            (
                "QmZLyyfXCGMb3kDcekurbdevJh1YcD1bew3C5uh3s7u89o",
                "EigKIhIgtlGYKNILyMV9iDWDFhqyK6hBCZ5AKF84WR6jXo/VmPMSABgwCgYIAhgoICg=",
            ),
            (
                "QmP5wrKnxUpcnW7U8zt6iTiF3VNpzZNfhF29DJceVD3b7D",
                "EigKIhIgFYZJRHVeJQAzQw+EYgw0NMQYlUhjJDy5KEK8HgEgRFkSABgwEigKIhIg"
                "5GWxj4Up+W6yxkEOv/xphdBQdxv7MJ98IJFFfsQI80oSABgwEigKIhIgX4jMJdwa"
                "gLUPwvrTNaBMJAEGqek4iwtwQg2NdvatOtQSABgwEikKIhIgDWQrd3uLdyFEvX9k"
                "kkXBIyhig7PkKgbx8qBt79cll4kSABiaAhIpCiISIO+1RTOAlRBoAZ7hBz8gTnK2"
                "khkm7Ym+Nwz4qbwGuUnYEgAYmgISKAoiEiCjhlfGE/pYse82Av58xHB6i9xMqAzp"
                "rOOvUfaFLHueOhIAGGIKEQgCGJADICggKCAoIHggeCAo",
            ),
        ],
    ),
    "v0-balanced-file-leaves": (
        "QmSfFZZMnDy7MHU65ae2SMufpcVvT5LSQvUEov8g8XcnfY",
        [
            (
                "QmZkpXxSw44cveGWi4xyDhm1vG2wqV1JvkPuyqbkrbNJP6",
                "Cp4BCAISlgEABw4VHCMqMTg/Rk1UW2JpcHd+hYyTmqGor7a9xMvS2eDn7vUBCA8W"
                "HSQrMjlAR05VXGNqcXh/ho2Um6KpsLe+xczT2uHo7/YCCRAXHiUsMzpBSE9WXWRr"
                "cnmAh46VnKOqsbi/xs3U2+Lp8PcDChEYHyYtNDtCSVBXXmVsc3qBiI+WnaSrsrnA"
                "x87V3OPq8fgECxIZICcYlgE=",
            ),
            (
                "QmaT6FQcgo2zzCi7GNaSQ8Hj8d2JqwqsXQWWaTfYBQDmyy",
                "Cp4BCAISlgEuNTxDSlFYX2ZtdHuCiZCXnqWss7rByM/W3eTr8vkFDBMaISgvNj1E"
                "S1JZYGdudXyDipGYn6attLvCydDX3uXs8/oGDRQbIikwNz5FTFNaYWhvdn2Ei5KZ"
                "oKeutbzDytHY3+bt9AAHDhUcIyoxOD9GTVRbYmlwd36FjJOaoaivtr3Ey9LZ4Ofu"
                "9QEIDxYdJCsyOUBHTlUYlgE=",
            ),
            (
                "QmYJq4UaUtwNcir3b4h6sNN8f4Kkr3e18ukH43XuCzhiZh",
                "CmoIAhJkXGNqcXh/ho2Um6KpsLe+xczT2uHo7/YCCRAXHiUsMzpBSE9WXWRrcnmA"
                "h46VnKOqsbi/xs3U2+Lp8PcDChEYHyYtNDtCSVBXXmVsc3qBiI+WnaSrsrnAx87V"
                "3OPq8fgECxIZIBhk",
            ),
            (
                "Qmc1eRGTt9xJ198XNq4mpEy64AeXoEP5B7QydEpC1Rk5N9",
                "EikKIhIgqaGa0nNqflRCu3yZ5HguOh3kHacTka8jLqhDJyTqay0SABihARIpCiIS"
                "ILPymxQxxSuSvkKyt/CxyBTJJDywDkyfcueYNA1ChH5oEgAYoQEKCwgCGKwCIJYB"
                "IJYB",
            ),
            (
                "QmYEhx55YDjPS1GGAqgXfnCMnfwhA7DzFAWs8taoLbMWJe",
                "EigKIhIglB1pasUFcMkWRbIwldSw2je9cjUYcIYcyBj5ZtG+ltwSABhsCgYIAhhkIGQ=",
            ),
            (
                "QmSfFZZMnDy7MHU65ae2SMufpcVvT5LSQvUEov8g8XcnfY",
                "EikKIhIgyyVA2XGFMqwTEqClb28yjJpj0bvhEJsb3HOG2gQC1tISABilAxIpCiIS"
                "IJMPDHtHhID+2zbSvb7mHusrsG7LRJ97KImA/IJDoWYzEgAYngEKCggCGJADIKwC"
                "IGQ=",
            ),
        ],
    ),
}


def blocks_of(result: unixfs.ImportResult) -> dict[bytes, bytes]:
    return {block.cid: block.data for block in result.blocks}


def fetch_all(
    assembler: FileAssembler, blocks: dict[bytes, bytes], rng: random.Random | None = None
) -> None:
    """Feed the assembler what it asks for, round by round, until it is done."""
    for _ in range(unixfs.MAX_DEPTH + 2):
        if assembler.done:
            return
        wants = assembler.wants()
        if rng is not None:
            rng.shuffle(wants)
        for cid in wants:
            assembler.add_block(cid, blocks[cid])
    raise AssertionError("assembler never finished")


def decode_node(block: bytes) -> tuple[list[tuple[bytes, int | None]], bytes | None]:
    links, data = unixfs._decode_dag_pb(block)
    return [(link.cid, link.tsize) for link in links], data


def dag_tsize(cid: bytes, blocks: dict[bytes, bytes]) -> int:
    """Cumulative serialized size of the DAG under `cid`, computed independently."""
    block = blocks[cid]
    if unixfs.parse_cid(cid).codec == unixfs.CODEC_RAW:
        return len(block)
    links, _ = decode_node(block)
    return len(block) + sum(dag_tsize(child, blocks) for child, _ in links)


def file_node(
    links: list[tuple[bytes, int]],
    blocksizes: list[int],
    *,
    filesize: int | None = None,
    type_: int = 2,
    inline: bytes = b"",
) -> tuple[bytes, bytes]:
    """A hand-made dag-pb UnixFS node (for DAGs no honest importer writes)."""
    data = unixfs.pb_varint_field(1, type_)
    if inline:
        data += unixfs.pb_len_field(2, inline)
    if filesize is not None:
        data += unixfs.pb_varint_field(3, filesize)
    data += b"".join(unixfs.pb_varint_field(4, size) for size in blocksizes)
    block = unixfs._encode_dag_pb(links, data)
    return unixfs.cid_v1(unixfs.CODEC_DAG_PB, block), block


def raw_leaf(data: bytes) -> tuple[bytes, bytes]:
    return unixfs.cid_v1(unixfs.CODEC_RAW, data), data


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
    meta = unixfs._decode_unixfs(data)
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
    first_link = unixfs.pb_len_field(1, links[0][0]) + b"\x12\x00\x18"
    assert first_link in root
    # The lone 175th chunk still gets its own parent node, as in the balanced layout.
    lone_links, _ = decode_node(blocks[links[1][0]])
    assert len(lone_links) == 1


# --------------------------------------------------------------------------------------
# Round trips through the assembler


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10_000_000, MAX_LINKS * CHUNK_SIZE + 1],
    ids=["0", "1", "256KiB", "256KiB+1", "10MB", "two-levels"],
)
def test_round_trip(size: int) -> None:
    data = pattern(251, size)
    result = import_file(data)
    assert all(verify_block(block.cid, block.data) for block in result.blocks)
    assembler = FileAssembler(result.root, max_size=size)
    fetch_all(assembler, blocks_of(result))
    assert assembler.done
    assert assembler.progress == (size, size)
    assert assembler.assemble() == data
    assert b"".join(assembler.leaves_in_order()) == data


@pytest.mark.parametrize("seed", range(5))
def test_assembler_accepts_blocks_in_random_order(seed: int) -> None:
    rng = random.Random(seed)
    data = pattern(251, 3 * CHUNK_SIZE + 12345)
    result = import_file(data)
    assembler = FileAssembler(result.root, max_size=len(data))
    pool = list(result.blocks)
    seen_progress = [assembler.progress]
    while not assembler.done:
        rng.shuffle(pool)
        for block in pool:
            wanted = block.cid in assembler.wants()
            assert assembler.add_block(block.cid, block.data) is wanted
            seen_progress.append(assembler.progress)
    assert assembler.assemble() == data
    haves = [have for have, _ in seen_progress]
    assert haves == sorted(haves)
    # A block arriving again after it was used is ignored.
    assert assembler.add_block(result.root, blocks_of(result)[result.root]) is False


def test_assembler_fetches_a_repeated_chunk_once_and_counts_it_per_position() -> None:
    data = pattern(256, 10_000_000)  # every full chunk identical
    result = import_file(data)
    assembler = FileAssembler(result.root, max_size=len(data))
    blocks = blocks_of(result)
    assembler.add_block(result.root, blocks[result.root])
    assert len(assembler.wants()) == 2  # the repeated chunk and the tail
    assert assembler.progress == (0, len(data))
    fetch_all(assembler, blocks)
    assert assembler.progress == (len(data), len(data))
    assert assembler.assemble() == data


@pytest.mark.parametrize("name", sorted(FOREIGN_DAGS))
def test_assembler_reads_dags_of_other_importer_settings(name: str) -> None:
    root_str, encoded = FOREIGN_DAGS[name]
    blocks = {cid_from_str(cid): base64.b64decode(data) for cid, data in encoded}
    root = cid_from_str(root_str)
    assert unixfs.parse_cid(root).version == 0
    assembler = FileAssembler(root, max_size=len(FOREIGN_DATA))
    fetch_all(assembler, blocks, random.Random(1))
    assert assembler.assemble() == FOREIGN_DATA
    assert assembler.progress == (len(FOREIGN_DATA), len(FOREIGN_DATA))


# --------------------------------------------------------------------------------------
# Bad blocks and bad DAGs


def test_corrupted_block_is_rejected_and_state_kept() -> None:
    data = pattern(251, 2 * CHUNK_SIZE)
    result = import_file(data)
    blocks = blocks_of(result)
    assembler = FileAssembler(result.root, max_size=len(data))
    tampered = bytearray(blocks[result.root])
    tampered[-1] ^= 1
    with pytest.raises(BlockError, match="does not match"):
        assembler.add_block(result.root, bytes(tampered))
    assert assembler.wants() == [result.root]
    assembler.add_block(result.root, blocks[result.root])
    leaf = assembler.wants()[0]
    tampered_leaf = bytearray(blocks[leaf])
    tampered_leaf[1000] ^= 0x80
    with pytest.raises(BlockError) as info:
        assembler.add_block(leaf, bytes(tampered_leaf))
    assert not isinstance(info.value, unixfs.InvalidDagError)
    fetch_all(assembler, blocks)  # the honest copy still completes the file
    assert assembler.assemble() == data


def test_verified_flag_skips_hashing_only() -> None:
    result = import_file(b"hello")
    assembler = FileAssembler(result.root, max_size=5)
    assert assembler.add_block(result.root, b"hello", verified=True)
    assert assembler.assemble() == b"hello"


def test_max_size_is_enforced_against_the_declared_size() -> None:
    data = pattern(251, CHUNK_SIZE + 1)
    result = import_file(data)
    blocks = blocks_of(result)
    assembler = FileAssembler(result.root, max_size=CHUNK_SIZE)
    with pytest.raises(FileTooLargeError, match=str(CHUNK_SIZE + 1)):
        assembler.add_block(result.root, blocks[result.root])
    assert isinstance(assembler.failed, FileTooLargeError)
    with pytest.raises(FileTooLargeError):  # stays failed
        assembler.add_block(result.root, blocks[result.root])
    raw = import_file(b"x" * 10)
    with pytest.raises(FileTooLargeError):
        FileAssembler(raw.root, max_size=9).add_block(raw.root, b"x" * 10)
    exact = FileAssembler(raw.root, max_size=10)
    exact.add_block(raw.root, b"x" * 10)
    assert exact.done


def test_expected_size_is_checked_at_the_root_before_any_leaf_is_wanted() -> None:
    data = pattern(251, 3 * CHUNK_SIZE)
    result = import_file(data)
    blocks = blocks_of(result)
    lied = FileAssembler(result.root, max_size=10 * CHUNK_SIZE, expected_size=1000)
    assert lied.wants() == [result.root]
    with pytest.raises(SizeMismatchError, match=f"{len(data)} bytes, expected 1000"):
        lied.add_block(result.root, blocks[result.root])
    assert isinstance(lied.failed, SizeMismatchError)
    assert lied.wants() == [result.root]  # no leaf was ever asked for
    honest = FileAssembler(result.root, max_size=len(data), expected_size=len(data))
    honest.add_block(result.root, blocks[result.root])
    assert len(honest.wants()) == 3
    # A one-chunk file is its raw leaf: the leaf itself is the root that is checked.
    raw = import_file(b"x" * 10)
    with pytest.raises(SizeMismatchError):
        FileAssembler(raw.root, max_size=100, expected_size=9).add_block(raw.root, b"x" * 10)


def test_one_cid_referenced_with_two_sizes_is_refused() -> None:
    leaf_cid, _ = raw_leaf(b"0123456789")
    root_cid, root = file_node([(leaf_cid, 10), (leaf_cid, 10)], [10, 5], filesize=15)
    assembler = FileAssembler(root_cid, max_size=15)
    with pytest.raises(unixfs.InvalidDagError, match="sizes 10 and 5"):
        assembler.add_block(root_cid, root)


def test_child_size_must_match_parent_blocksize() -> None:
    leaf_cid, leaf = raw_leaf(b"0123456789")
    root_cid, root = file_node([(leaf_cid, 10)], [4], filesize=4)
    assembler = FileAssembler(root_cid, max_size=100)
    assembler.add_block(root_cid, root)
    with pytest.raises(unixfs.InvalidDagError, match="declared 4"):
        assembler.add_block(leaf_cid, leaf)


@pytest.mark.parametrize(
    ("node_args", "message"),
    [
        (({"links": 1, "blocksizes": [10], "filesize": 99}), "filesize 99"),
        (({"links": 2, "blocksizes": [10], "filesize": 10}), "2 links but 1 blocksizes"),
        (({"links": 1, "blocksizes": [0], "filesize": 0}), "empty child"),
        (({"links": 1, "blocksizes": [10], "type_": 1}), "directory, not a file"),
        (({"links": 0, "blocksizes": [], "type_": 4}), "symlink"),
    ],
)
def test_inconsistent_root_is_refused(node_args: dict[str, object], message: str) -> None:
    leaf_cid, _ = raw_leaf(b"0123456789")
    count = node_args.pop("links")
    assert isinstance(count, int)
    root_cid, root = file_node([(leaf_cid, 10)] * count, **node_args)  # type: ignore[arg-type]
    with pytest.raises(unixfs.InvalidDagError, match=message):
        FileAssembler(root_cid, max_size=1000).add_block(root_cid, root)


def test_directory_is_not_a_file() -> None:
    root_cid, root = file_node([], [], type_=1)
    with pytest.raises(NotAFileError):
        FileAssembler(root_cid, max_size=1000).add_block(root_cid, root)


def test_depth_is_bounded() -> None:
    cid, block = raw_leaf(b"x")
    chain = {cid: block}
    for _ in range(5):
        cid, block = file_node([(cid, 1)], [1], filesize=1)
        chain[cid] = block
    with pytest.raises(unixfs.InvalidDagError, match="deeper than 3"):
        fetch_all(FileAssembler(cid, max_size=1, max_depth=3), chain)
    deep_enough = FileAssembler(cid, max_size=1, max_depth=5)
    fetch_all(deep_enough, chain)
    assert deep_enough.assemble() == b"x"


def test_inline_data_comes_before_children() -> None:
    leaf_cid, leaf = raw_leaf(b"world")
    root_cid, root = file_node([(leaf_cid, 5)], [5], filesize=11, inline=b"hello ")
    assembler = FileAssembler(root_cid, max_size=11)
    fetch_all(assembler, {root_cid: root, leaf_cid: leaf})
    assert assembler.assemble() == b"hello world"


def test_bad_child_cid_is_refused() -> None:
    sha512_cid = bytes((1, 0x55, 0x13, 0x40)) + bytes(64)
    root_cid, root = file_node([(sha512_cid, 10)], [10], filesize=10)
    with pytest.raises(unixfs.InvalidDagError, match="bad CID"):
        FileAssembler(root_cid, max_size=10).add_block(root_cid, root)


def test_incomplete_assembler_refuses_to_assemble() -> None:
    result = import_file(pattern(251, 2 * CHUNK_SIZE))
    with pytest.raises(RuntimeError):
        FileAssembler(result.root, max_size=10**9).assemble()


# --------------------------------------------------------------------------------------
# CIDs


def test_cid_string_round_trip() -> None:
    cid = import_file(b"hello").root
    text = cid_to_str(cid)
    assert text.startswith("bafkrei")
    assert text == text.lower()
    assert cid_from_str(text) == cid
    assert cid_from_str(text.upper()) == cid  # multibase 'B' is base32 upper


def test_cidv0_string_is_accepted_and_kept_as_v0() -> None:
    root = FOREIGN_DAGS["v0-trickle"][0]
    cid = cid_from_str(root)
    assert len(cid) == 34
    assert cid_to_str(cid) == root
    v1 = unixfs.normalize_cid(cid)
    assert unixfs.parse_cid(v1).version == 1
    assert unixfs.parse_cid(v1).digest == unixfs.parse_cid(cid).digest
    assert cid_to_str(v1).startswith("bafybei")


def test_base58btc_cidv1_is_accepted() -> None:
    cid = import_file(b"hello").root
    text = "z" + unixfs._b58encode(cid)
    assert cid_from_str(text) == cid


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hello",
        "b",
        "bafkrei",
        "b!!!!",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykU",  # mixed case
        "Qm" + "0" * 44,  # '0' is not base58
        "QmP5wrKnxUpcnW7U8zt6iTiF3VNpzZNfhF29DJceVD3b7",  # too short for CIDv0
        "mAXASIA",  # base64 multibase: not accepted
        "z1",
        "b" + "a" * 1000,
    ],
)
def test_cid_from_str_rejects_garbage(garbage: str) -> None:
    with pytest.raises(CidError):
        cid_from_str(garbage)
    assert issubclass(CidError, ValueError)


def test_verify_block() -> None:
    cid = import_file(b"hello").root
    assert verify_block(cid, b"hello")
    assert verify_block(cid, memoryview(b"hello"))
    assert not verify_block(cid, b"hellO")
    sha512 = bytes((1, 0x55, 0x13, 0x40)) + hashlib.sha512(b"hello").digest()
    with pytest.raises(CidError, match="multihash"):
        verify_block(sha512, b"hello")
    cbor = bytes((1, 0x71, 0x12, 0x20)) + hashlib.sha256(b"hello").digest()
    with pytest.raises(CidError, match="codec"):
        verify_block(cbor, b"hello")
    with pytest.raises(CidError):
        verify_block(b"\x01\x55\x12\x20short", b"hello")


def test_prefix_round_trip() -> None:
    two_chunks = import_file(pattern(251, CHUNK_SIZE + 1))
    v0_root, v0_blocks = FOREIGN_DAGS["v0-trickle"]
    samples = [
        (import_file(b"hello").root, b"hello"),
        (two_chunks.root, blocks_of(two_chunks)[two_chunks.root]),
        (cid_from_str(v0_root), base64.b64decode(dict(v0_blocks)[v0_root])),
    ]
    for cid, data in samples:
        assert unixfs.cid_from_prefix(unixfs.cid_prefix(cid), data) == cid
    with pytest.raises(CidError):
        unixfs.cid_from_prefix(b"\x01\x55\x13\x40", b"x")  # sha2-512
    with pytest.raises(CidError):
        unixfs.cid_from_prefix(b"\x01\x55\x12\x20\x00", b"x")  # trailing byte


# --------------------------------------------------------------------------------------
# Fuzz: hostile bytes raise only this module's exceptions


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_fuzz_random_dag_pb_root(block: bytes) -> None:
    cid = unixfs.cid_v1(unixfs.CODEC_DAG_PB, block)
    assembler = FileAssembler(cid, max_size=1 << 20)
    try:
        assembler.add_block(cid, block)
    except UnixfsError:
        return
    for want in assembler.wants():
        with pytest.raises(BlockError):
            assembler.add_block(want, b"")


_VALID_ROOT = import_file(pattern(251, 2 * CHUNK_SIZE + 7))
_VALID_ROOT_BLOCK = blocks_of(_VALID_ROOT)[_VALID_ROOT.root]


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_VALID_ROOT_BLOCK) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    st.binary(max_size=8),
)
def test_fuzz_mutated_root(edits: list[tuple[int, int]], tail: bytes) -> None:
    block = bytearray(_VALID_ROOT_BLOCK)
    for index, value in edits:
        block[index] = value
    mutated = bytes(block) + tail
    cid = unixfs.cid_v1(unixfs.CODEC_DAG_PB, mutated)
    assembler = FileAssembler(cid, max_size=10 * CHUNK_SIZE)
    try:
        assembler.add_block(cid, mutated)
        blocks = blocks_of(_VALID_ROOT)
        for want in assembler.wants():
            if want in blocks:
                assembler.add_block(want, blocks[want])
    except UnixfsError:
        return


@given(st.text(max_size=100))
def test_fuzz_cid_from_str(text: str) -> None:
    try:
        cid = cid_from_str(text)
    except CidError:
        return
    assert unixfs.parse_cid(cid).version in (0, 1)


@given(st.binary(max_size=80))
def test_fuzz_parse_cid_and_verify(raw: bytes) -> None:
    try:
        unixfs.parse_cid(raw)
        verify_block(raw, b"data")
    except CidError:
        return


@settings(max_examples=20, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 3 * CHUNK_SIZE))
def test_fuzz_round_trip(seed: bytes, size: int) -> None:
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    result = import_file(data)
    assembler = FileAssembler(result.root, max_size=size)
    fetch_all(assembler, blocks_of(result))
    assert assembler.assemble() == data
