"""Shared samples and helpers of the UnixFS unit tests: reference DAGs from other
importers, and hand-made nodes for DAGs no honest importer writes."""

from __future__ import annotations

import random

from gossipchat.daemon.core import unixfs
from gossipchat.daemon.core.protobuf import len_field, varint_field
from gossipchat.daemon.core.unixfs import FileAssembler
from gossipchat.daemon.core.unixfs.dagpb import decode_dag_pb, encode_dag_pb


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
    """The blocks of an import, by CID."""
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
    """A dag-pb node's (CID, Tsize) links and its Data."""
    links, data = decode_dag_pb(block)
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
    data = varint_field(1, type_)
    if inline:
        data += len_field(2, inline)
    if filesize is not None:
        data += varint_field(3, filesize)
    data += b"".join(varint_field(4, size) for size in blocksizes)
    block = encode_dag_pb(links, data)
    return unixfs.cid_v1(unixfs.CODEC_DAG_PB, block), block


def raw_leaf(data: bytes) -> tuple[bytes, bytes]:
    """A raw leaf block and its CID."""
    return unixfs.cid_v1(unixfs.CODEC_RAW, data), data
