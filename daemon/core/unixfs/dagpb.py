"""dag-pb nodes and UnixFS Data: the two protobuf messages of a UnixFS file's DAG.

- Nodes are written in canonical form (Links before Data, link names present and
  empty, Tsize = the cumulative serialized size of the child's DAG) and UnixFS Data
  fields in ascending field order with non-packed `blocksizes`, exactly as the reference
  encoders do. A different byte anywhere would give a different CID.
- Decoding is bounded (`MAX_NODE_LINKS`): it runs on the event loop, on untrusted
  blocks. It raises `InvalidDagError` for a node that breaks dag-pb or UnixFS, and lets
  `protobuf.ProtobufError` through for bytes that are no protobuf at all, so the caller
  can name the block that does not decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..protobuf import (
    WIRE_LEN,
    WIRE_VARINT,
    ProtobufError,
    iter_fields,
    len_field,
    read_varint,
    varint_field,
)
from .cid import CODEC_RAW, check_supported, cid_to_str, parse_cid
from .errors import InvalidDagError

__all__ = [
    "MAX_NODE_LINKS",
    "UNIXFS_FILE",
    "UNIXFS_RAW",
    "UNIXFS_TYPE_NAMES",
    "Link",
    "UnixfsData",
    "dag_links",
    "decode_dag_pb",
    "decode_unixfs",
    "encode_dag_pb",
    "encode_unixfs_file",
]

MAX_NODE_LINKS = 2048
"""Most links (and blocksizes) one dag-pb node may have. Standard importers write 174,
Kubo's widest profile 1024. Decoding runs on the event loop: unbounded, a 1 MiB block
of 262,144 empty links took 3.2 s and 14 MiB before it was refused."""

# UnixFS Data.Type values (unixfs.proto).
UNIXFS_RAW = 0
UNIXFS_FILE = 2
UNIXFS_TYPE_NAMES = {
    0: "raw",
    1: "directory",
    2: "file",
    3: "metadata",
    4: "symlink",
    5: "hamt-sharded directory",
}


@dataclass(frozen=True, slots=True)
class Link:
    """One PBLink: the child's CID and its Tsize (absent in some encoders)."""

    cid: bytes
    tsize: int | None


@dataclass(frozen=True, slots=True)
class UnixfsData:
    """The fields of a UnixFS Data message that decide a file's content."""

    type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def encode_dag_pb(links: Iterable[tuple[bytes, int]], data: bytes) -> bytes:
    """A canonical dag-pb node linking `links` ((CID, Tsize) pairs) over `data`."""
    # Canonical dag-pb: each PBLink is Hash(1), Name(2), Tsize(3); the PBNode writes its
    # Links (field 2) before its Data (field 1), as the dag-pb spec requires.
    parts = []
    for cid, tsize in links:
        link = len_field(1, cid) + len_field(2, b"") + varint_field(3, tsize)
        parts.append(len_field(2, link))
    parts.append(len_field(1, data))
    return b"".join(parts)


def encode_unixfs_file(filesize: int, blocksizes: Iterable[int]) -> bytes:
    """The UnixFS Data of a file node with these children's sizes."""
    # Type(1)=File, filesize(3), then one non-packed blocksizes(4) per child: the field
    # order and the non-packed repetition are what go-unixfs and ipfs-unixfs write.
    out = [varint_field(1, UNIXFS_FILE), varint_field(3, filesize)]
    out.extend(varint_field(4, size) for size in blocksizes)
    return b"".join(out)


def decode_dag_pb(block: bytes | memoryview) -> tuple[list[Link], bytes | None]:
    """A dag-pb node's links and its Data field (None if it has none)."""
    links: list[Link] = []
    data: bytes | None = None
    for field, wire, value in iter_fields(block):
        if field == 2 and wire == WIRE_LEN:
            assert isinstance(value, memoryview)
            if len(links) == MAX_NODE_LINKS:
                raise InvalidDagError(f"dag-pb node has more than {MAX_NODE_LINKS} links")
            links.append(_decode_link(value))
        elif field == 1 and wire == WIRE_LEN:
            # The spec wants Links first; ipfs-unixfs-importer has a `data-first`
            # option, so a reader that wants to accept other importers tolerates it.
            if data is not None:
                raise InvalidDagError("dag-pb node has two Data fields")
            assert isinstance(value, memoryview)
            data = bytes(value)
        else:
            raise InvalidDagError(f"dag-pb node has unexpected field {field} (wire type {wire})")
    return links, data


def _decode_link(buf: memoryview) -> Link:
    cid: bytes | None = None
    tsize: int | None = None
    for field, wire, value in iter_fields(buf):
        if field == 1 and wire == WIRE_LEN and cid is None:
            assert isinstance(value, memoryview)
            cid = bytes(value)
        elif field == 2 and wire == WIRE_LEN:
            pass  # link names do not matter inside a file
        elif field == 3 and wire == WIRE_VARINT:
            assert isinstance(value, int)
            tsize = value
        else:
            raise InvalidDagError(f"dag-pb link has unexpected field {field} (wire type {wire})")
    if cid is None:
        raise InvalidDagError("dag-pb link without a Hash")
    return Link(cid, tsize)


# Type, Data, filesize, hashType, fanout, mode, mtime: the fields besides blocksizes.
_UNIXFS_OTHER_FIELDS = 16


def decode_unixfs(buf: bytes) -> UnixfsData:
    """The UnixFS Data message of a dag-pb node."""
    type_: int | None = None
    data = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for count, (field, wire, value) in enumerate(iter_fields(buf)):
        # Unknown fields are skipped, but each costs a turn of this loop: bound them too.
        if count == MAX_NODE_LINKS + _UNIXFS_OTHER_FIELDS:
            raise InvalidDagError(f"UnixFS Data with more than {count} fields")
        if field == 1 and wire == WIRE_VARINT:
            assert isinstance(value, int)
            type_ = value
        elif field == 2 and wire == WIRE_LEN:
            assert isinstance(value, memoryview)
            data = bytes(value)
        elif field == 3 and wire == WIRE_VARINT:
            assert isinstance(value, int)
            filesize = value
        elif field == 4 and wire == WIRE_VARINT:
            assert isinstance(value, int)
            blocksizes.append(value)
        elif field == 4 and wire == WIRE_LEN:
            # proto3-style packed encoding of the same repeated field
            assert isinstance(value, memoryview)
            pos = 0
            while pos < len(value) and len(blocksizes) <= MAX_NODE_LINKS:
                size, pos = read_varint(value, pos)
                blocksizes.append(size)
        # hashType, fanout, mode, mtime and unknown fields do not affect file content
    if len(blocksizes) > MAX_NODE_LINKS:
        raise InvalidDagError(f"UnixFS Data with more than {MAX_NODE_LINKS} blocksizes")
    if type_ is None:
        raise InvalidDagError("UnixFS Data without a Type")
    return UnixfsData(type_, data, filesize, tuple(blocksizes))


def dag_links(cid: bytes, data: bytes | memoryview) -> list[bytes]:
    """The CIDs a block links to: none for raw, the Links of a dag-pb node.

    For walking a DAG already stored (pinning); raises `InvalidDagError` on a dag-pb
    block that does not decode and `CidError` on an unsupported codec.
    """
    info = parse_cid(cid)
    check_supported(info)
    if info.codec == CODEC_RAW:
        return []
    try:
        links, _ = decode_dag_pb(data)
    except ProtobufError as exc:
        raise InvalidDagError(f"block {cid_to_str(cid)} does not decode: {exc}") from None
    return [link.cid for link in links]
