"""UnixFS files as content-addressed blocks: CIDs, the importer and the fetch assembler.

Rules of this module:

- It is pure and sans-IO: bytes in, bytes or plain data out. It imports no libp2p, opens
  no file or socket, and keeps no clock. The block store and the bitswap adapter do the
  I/O around it.
- The importer is byte-for-byte the standard one that INTERFACE.md promises ("Images are
  UnixFS files"): CIDv1, raw leaves, fixed 256 KiB chunks, a balanced layout with at
  most 174 links per node, and a single-chunk file reduced to its raw leaf. That is what
  `ipfs add --cid-version=1 --raw-leaves --chunker=size-262144` (Kubo) and Helia's
  `ipfs-unixfs-importer` produce, so a Kubo or Helia peer computes the same root CID for
  the same bytes. The golden CIDs in tests/unit/test_unixfs.py pin this.
- dag-pb nodes are written in canonical form (Links before Data, link names present and
  empty, Tsize = the cumulative serialized size of the child's DAG) and UnixFS Data
  fields in ascending field order with non-packed `blocksizes`, exactly as the reference
  encoders do. A different byte anywhere would give a different CID.
- Everything that arrives from the network is untrusted: `FileAssembler` verifies every
  block against its CID, checks every declared size against the parent's and against
  `max_size`, bounds the depth, and raises only this module's exceptions.
- Only sha2-256 multihashes and the raw and dag-pb codecs are supported; anything else
  is refused with `CidError`, never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "CHUNK_SIZE",
    "CODEC_DAG_PB",
    "CODEC_RAW",
    "MAX_DEPTH",
    "MAX_LINKS",
    "MAX_NODE_LINKS",
    "SHA2_256",
    "Block",
    "BlockError",
    "CidError",
    "CidInfo",
    "FileAssembler",
    "FileTooLargeError",
    "ImportResult",
    "InvalidDagError",
    "NotAFileError",
    "ProtobufError",
    "SizeMismatchError",
    "UnixfsError",
    "cid_from_prefix",
    "cid_from_str",
    "cid_prefix",
    "cid_to_str",
    "cid_v1",
    "dag_links",
    "import_file",
    "normalize_cid",
    "parse_cid",
    "verify_block",
]

CHUNK_SIZE = 256 * 1024
"""Fixed chunk size of the importer: Kubo's `size-262144`."""

MAX_LINKS = 174
"""Most children per dag-pb node in the balanced layout (Kubo's and Helia's default)."""

MAX_NODE_LINKS = 2048
"""Most links (and blocksizes) one dag-pb node may have. Standard importers write 174,
Kubo's widest profile 1024. Decoding runs on the event loop: unbounded, a 1 MiB block
of 262,144 empty links took 3.2 s and 14 MiB before it was refused."""

MAX_DEPTH = 64
"""Deepest DAG the assembler follows. The balanced layout needs 4 levels for 7 GB;
trickle DAGs from other importers are deeper, so leave room but stay bounded."""

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
SHA2_256 = 0x12
_SHA2_256_LEN = 32
_CIDV0_LEN = 34  # 0x12 0x20 + 32-byte digest

# UnixFS Data.Type values (unixfs.proto).
_UNIXFS_RAW = 0
_UNIXFS_FILE = 2
_UNIXFS_TYPE_NAMES = {
    0: "raw",
    1: "directory",
    2: "file",
    3: "metadata",
    4: "symlink",
    5: "hamt-sharded directory",
}

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_MAX_CID_STR = 512  # a real CID string is ~60 characters; refuse megabyte garbage early


class UnixfsError(Exception):
    """Base of every error this module raises."""


class CidError(UnixfsError, ValueError):
    """A CID (string or bytes) is malformed or uses an unsupported codec or hash."""


class BlockError(UnixfsError):
    """A block does not match the CID it was offered under.

    The peer that sent it is at fault: drop it and ask another.
    """


class InvalidDagError(BlockError):
    """A block matches its CID but the DAG it belongs to is broken or unacceptable.

    Every peer would serve the same bytes for that CID, so the content named by the
    root is at fault, not the peer: the fetch fails.
    """


class FileTooLargeError(InvalidDagError):
    """The DAG declares more bytes than the caller allowed (`max_size`)."""


class SizeMismatchError(InvalidDagError):
    """The DAG's root declares another file size than the caller was told to expect."""


class NotAFileError(InvalidDagError):
    """The DAG is valid UnixFS but not a file (a directory, symlink, ...)."""


class ProtobufError(InvalidDagError):
    """Bytes that are not a well-formed protobuf message."""


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
class CidInfo:
    """The parts of a parsed binary CID."""

    version: int
    codec: int
    hash_code: int
    digest: bytes


# --------------------------------------------------------------------------------------
# Protobuf wire helpers. Public because the bitswap codec shares them; they follow the
# protobuf encoding spec and know nothing about UnixFS.


def varint_encode(value: int) -> bytes:
    """Unsigned LEB128, as protobuf and multiformats use it."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_decode(buf: bytes | memoryview, pos: int, *, minimal: bool = False) -> tuple[int, int]:
    """Decode an unsigned varint at `pos`; return (value, next position).

    At most 10 bytes (64 bits). With `minimal`, a padded encoding is refused: multiformats
    require the shortest form, protobuf does not.
    """
    result = 0
    shift = 0
    start = pos
    end = len(buf)
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 64:
            raise ProtobufError("varint longer than 64 bits")
    if result >= 1 << 64:
        raise ProtobufError("varint longer than 64 bits")
    if minimal and pos - start > 1 and byte == 0:
        raise ProtobufError("varint not minimally encoded")
    return result, pos


_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for each field of a protobuf message.

    Varints come as ints; length-delimited fields as memoryview slices of `buf` (no copy);
    fixed32/fixed64 as ints. Groups (wire types 3 and 4) are refused.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = varint_decode(view, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtobufError("field number 0")
        if wire == _WIRE_VARINT:
            value, pos = varint_decode(view, pos)
            yield field, wire, value
        elif wire == _WIRE_LEN:
            length, pos = varint_decode(view, pos)
            if length > end - pos:
                raise ProtobufError("length-delimited field runs past the end")
            yield field, wire, view[pos : pos + length]
            pos += length
        elif wire == _WIRE_I64:
            if end - pos < 8:
                raise ProtobufError("truncated fixed64")
            yield field, wire, int.from_bytes(view[pos : pos + 8], "little")
            pos += 8
        elif wire == _WIRE_I32:
            if end - pos < 4:
                raise ProtobufError("truncated fixed32")
            yield field, wire, int.from_bytes(view[pos : pos + 4], "little")
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def pb_len_field(field: int, payload: bytes | memoryview) -> bytes:
    """Encode one length-delimited protobuf field."""
    return varint_encode(field << 3 | _WIRE_LEN) + varint_encode(len(payload)) + payload


def pb_varint_field(field: int, value: int) -> bytes:
    """Encode one varint protobuf field."""
    return varint_encode(field << 3 | _WIRE_VARINT) + varint_encode(value)


# --------------------------------------------------------------------------------------
# CIDs


def parse_cid(cid: bytes | memoryview) -> CidInfo:
    """Split a binary CID (v0 or v1) into its parts; `CidError` if it is malformed.

    Any codec and hash code parse; `verify_block` is where unsupported ones are refused.
    """
    raw = bytes(cid)
    if len(raw) == _CIDV0_LEN and raw[0] == SHA2_256 and raw[1] == _SHA2_256_LEN:
        return CidInfo(0, CODEC_DAG_PB, SHA2_256, raw[2:])
    try:
        version, pos = varint_decode(raw, 0, minimal=True)
        if version != 1:
            raise CidError(f"unsupported CID version {version}")
        codec, pos = varint_decode(raw, pos, minimal=True)
        hash_code, pos = varint_decode(raw, pos, minimal=True)
        length, pos = varint_decode(raw, pos, minimal=True)
    except ProtobufError as exc:
        raise CidError(f"malformed CID: {exc}") from None
    digest = raw[pos:]
    if len(digest) != length:
        raise CidError(f"malformed CID: multihash says {length} digest bytes, has {len(digest)}")
    return CidInfo(1, codec, hash_code, digest)


def cid_v1(codec: int, data: bytes | memoryview) -> bytes:
    """The CIDv1 (sha2-256) of `data` under `codec`."""
    digest = hashlib.sha256(data).digest()
    return bytes((1,)) + varint_encode(codec) + bytes((SHA2_256, _SHA2_256_LEN)) + digest


def normalize_cid(cid: bytes) -> bytes:
    """The CIDv1 form of a CID: a v0 CID becomes v1 dag-pb with the same multihash.

    Both name the same block; stores key by this form so either finds it.
    """
    info = parse_cid(cid)
    if info.version == 1:
        return bytes(cid)
    return bytes((1, CODEC_DAG_PB)) + bytes(cid)


def cid_prefix(cid: bytes) -> bytes:
    """The bitswap 1.1 block prefix: version, codec, hash code, digest length (varints)."""
    info = parse_cid(cid)
    return (
        varint_encode(info.version)
        + varint_encode(info.codec)
        + varint_encode(info.hash_code)
        + varint_encode(len(info.digest))
    )


def cid_from_prefix(prefix: bytes | memoryview, data: bytes | memoryview) -> bytes:
    """Rebuild the CID of a bitswap 1.1 payload block from its prefix and bytes.

    Hashing here is what proves the block: the CID is computed, not claimed.
    """
    try:
        version, pos = varint_decode(prefix, 0, minimal=True)
        codec, pos = varint_decode(prefix, pos, minimal=True)
        hash_code, pos = varint_decode(prefix, pos, minimal=True)
        length, pos = varint_decode(prefix, pos, minimal=True)
    except ProtobufError as exc:
        raise CidError(f"malformed CID prefix: {exc}") from None
    if pos != len(prefix):
        raise CidError("malformed CID prefix: trailing bytes")
    if hash_code != SHA2_256 or length != _SHA2_256_LEN:
        raise CidError(f"unsupported multihash 0x{hash_code:x}/{length} in CID prefix")
    if codec not in (CODEC_RAW, CODEC_DAG_PB):
        raise CidError(f"unsupported codec 0x{codec:x} in CID prefix")
    digest = hashlib.sha256(data).digest()
    if version == 0:
        if codec != CODEC_DAG_PB:
            raise CidError("CIDv0 prefix with a codec other than dag-pb")
        return bytes((SHA2_256, _SHA2_256_LEN)) + digest
    if version != 1:
        raise CidError(f"unsupported CID version {version} in prefix")
    return bytes((1,)) + varint_encode(codec) + bytes((SHA2_256, _SHA2_256_LEN)) + digest


def _b58encode(raw: bytes) -> str:
    num = int.from_bytes(raw, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58_ALPHABET[rem])
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    num = 0
    for char in text:
        index = _B58_INDEX.get(char)
        if index is None:
            raise CidError(f"invalid base58btc character {char!r}")
        num = num * 58 + index
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def cid_to_str(cid: bytes) -> str:
    """The canonical text form of a binary CID.

    CIDv1 is multibase base32 lowercase ("b..."). CIDv0 has no multibase prefix by
    definition, so it stays base58btc ("Qm...").
    """
    info = parse_cid(cid)
    if info.version == 0:
        return _b58encode(bytes(cid))
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def cid_from_str(text: str) -> bytes:
    """Parse a CID string: CIDv1 in base32 ("b...") or base58btc ("z..."), or CIDv0 ("Qm...").

    Returns the binary CID. Raises `CidError` saying what is wrong.
    """
    if not isinstance(text, str) or not text:
        raise CidError("empty CID")
    if len(text) > _MAX_CID_STR:
        raise CidError("CID string too long")
    if len(text) == 46 and text.startswith("Qm"):
        raw = _b58decode(text)
        if len(raw) != _CIDV0_LEN or raw[:2] != b"\x12\x20":
            raise CidError("invalid CIDv0: not a sha2-256 multihash")
        return raw
    prefix, body = text[0], text[1:]
    if prefix in "bB":
        if body != body.lower() and body != body.upper():
            raise CidError("invalid base32 CID: mixed case")
        padded = body.upper() + "=" * (-len(body) % 8)
        try:
            raw = base64.b32decode(padded)
        except (binascii.Error, ValueError):
            raise CidError(f"invalid base32 CID {text!r}") from None
    elif prefix == "z":
        raw = _b58decode(body)
    else:
        raise CidError(
            f"unsupported CID encoding {text[:8]!r}: expected base32 'b...' or CIDv0 'Qm...'"
        )
    info = parse_cid(raw)
    if info.version != 1:
        raise CidError("a multibase CID must be CIDv1")
    if prefix in "bB" and cid_to_str(raw) != "b" + body.lower():
        raise CidError(f"non-canonical base32 CID {text!r}")
    return raw


def _check_supported(info: CidInfo) -> None:
    if info.hash_code != SHA2_256 or len(info.digest) != _SHA2_256_LEN:
        raise CidError(f"unsupported multihash 0x{info.hash_code:x} (only sha2-256)")
    if info.codec not in (CODEC_RAW, CODEC_DAG_PB):
        raise CidError(f"unsupported codec 0x{info.codec:x} (only raw and dag-pb)")


def verify_block(cid: bytes, data: bytes | memoryview) -> bool:
    """True if `data` hashes to `cid`; False on a mismatch.

    Raises `CidError` when the CID is malformed or uses a codec or hash we do not
    support: that is not the block's fault, and the caller should not count it as one.
    """
    info = parse_cid(cid)
    _check_supported(info)
    return hashlib.sha256(data).digest() == info.digest


# --------------------------------------------------------------------------------------
# dag-pb and UnixFS codecs


@dataclass(frozen=True, slots=True)
class _Link:
    cid: bytes
    tsize: int | None


@dataclass(frozen=True, slots=True)
class _UnixfsData:
    type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def _encode_dag_pb(links: Iterable[tuple[bytes, int]], data: bytes) -> bytes:
    # Canonical dag-pb: each PBLink is Hash(1), Name(2), Tsize(3); the PBNode writes its
    # Links (field 2) before its Data (field 1), as the dag-pb spec requires.
    parts = []
    for cid, tsize in links:
        link = pb_len_field(1, cid) + pb_len_field(2, b"") + pb_varint_field(3, tsize)
        parts.append(pb_len_field(2, link))
    parts.append(pb_len_field(1, data))
    return b"".join(parts)


def _encode_unixfs_file(filesize: int, blocksizes: Iterable[int]) -> bytes:
    # Type(1)=File, filesize(3), then one non-packed blocksizes(4) per child: the field
    # order and the non-packed repetition are what go-unixfs and ipfs-unixfs write.
    out = [pb_varint_field(1, _UNIXFS_FILE), pb_varint_field(3, filesize)]
    out.extend(pb_varint_field(4, size) for size in blocksizes)
    return b"".join(out)


def _decode_dag_pb(block: bytes | memoryview) -> tuple[list[_Link], bytes | None]:
    links: list[_Link] = []
    data: bytes | None = None
    for field, wire, value in iter_fields(block):
        if field == 2 and wire == _WIRE_LEN:
            assert isinstance(value, memoryview)
            if len(links) == MAX_NODE_LINKS:
                raise InvalidDagError(f"dag-pb node has more than {MAX_NODE_LINKS} links")
            links.append(_decode_link(value))
        elif field == 1 and wire == _WIRE_LEN:
            # The spec wants Links first; ipfs-unixfs-importer has a `data-first`
            # option, so a reader that wants to accept other importers tolerates it.
            if data is not None:
                raise InvalidDagError("dag-pb node has two Data fields")
            assert isinstance(value, memoryview)
            data = bytes(value)
        else:
            raise InvalidDagError(f"dag-pb node has unexpected field {field} (wire type {wire})")
    return links, data


def _decode_link(buf: memoryview) -> _Link:
    cid: bytes | None = None
    tsize: int | None = None
    for field, wire, value in iter_fields(buf):
        if field == 1 and wire == _WIRE_LEN and cid is None:
            assert isinstance(value, memoryview)
            cid = bytes(value)
        elif field == 2 and wire == _WIRE_LEN:
            pass  # link names do not matter inside a file
        elif field == 3 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            tsize = value
        else:
            raise InvalidDagError(f"dag-pb link has unexpected field {field} (wire type {wire})")
    if cid is None:
        raise InvalidDagError("dag-pb link without a Hash")
    return _Link(cid, tsize)


# Type, Data, filesize, hashType, fanout, mode, mtime: the fields besides blocksizes.
_UNIXFS_OTHER_FIELDS = 16


def _decode_unixfs(buf: bytes) -> _UnixfsData:
    type_: int | None = None
    data = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for count, (field, wire, value) in enumerate(iter_fields(buf)):
        # Unknown fields are skipped, but each costs a turn of this loop: bound them too.
        if count == MAX_NODE_LINKS + _UNIXFS_OTHER_FIELDS:
            raise InvalidDagError(f"UnixFS Data with more than {count} fields")
        if field == 1 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            type_ = value
        elif field == 2 and wire == _WIRE_LEN:
            assert isinstance(value, memoryview)
            data = bytes(value)
        elif field == 3 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            filesize = value
        elif field == 4 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            blocksizes.append(value)
        elif field == 4 and wire == _WIRE_LEN:
            # proto3-style packed encoding of the same repeated field
            assert isinstance(value, memoryview)
            pos = 0
            while pos < len(value) and len(blocksizes) <= MAX_NODE_LINKS:
                size, pos = varint_decode(value, pos)
                blocksizes.append(size)
        # hashType, fanout, mode, mtime and unknown fields do not affect file content
    if len(blocksizes) > MAX_NODE_LINKS:
        raise InvalidDagError(f"UnixFS Data with more than {MAX_NODE_LINKS} blocksizes")
    if type_ is None:
        raise InvalidDagError("UnixFS Data without a Type")
    return _UnixfsData(type_, data, filesize, tuple(blocksizes))


def dag_links(cid: bytes, data: bytes | memoryview) -> list[bytes]:
    """The CIDs a block links to: none for raw, the Links of a dag-pb node.

    For walking a DAG already stored (pinning); raises `InvalidDagError` on a dag-pb
    block that does not decode and `CidError` on an unsupported codec.
    """
    info = parse_cid(cid)
    _check_supported(info)
    if info.codec == CODEC_RAW:
        return []
    links, _ = _decode_dag_pb(data)
    return [link.cid for link in links]


# --------------------------------------------------------------------------------------
# The importer


@dataclass(frozen=True, slots=True)
class _Built:
    cid: bytes
    filesize: int  # file bytes below this node (the parent's blocksizes entry)
    tsize: int  # serialized bytes of the whole sub-DAG (the parent's link Tsize)


def import_file(data: bytes | memoryview) -> ImportResult:
    """Chunk `data` into the standard UnixFS DAG (see the module rules) and return it.

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
            unixfs = _encode_unixfs_file(filesize, (child.filesize for child in children))
            node = _encode_dag_pb(((child.cid, child.tsize) for child in children), unixfs)
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


# --------------------------------------------------------------------------------------
# The fetch assembler


@dataclass(slots=True)
class _Pending:
    size: int | None  # expected file bytes below this CID; None only for the root
    count: int  # how many positions in the file reference this CID
    depth: int


@dataclass(frozen=True, slots=True)
class _Resolved:
    size: int
    inline: bytes  # file bytes held by the node itself, before its children
    children: tuple[bytes, ...]
    child_sizes: tuple[int, ...]


class FileAssembler:
    """Sans-IO state machine that turns blocks arriving in any order into one file.

    Ask `wants()` which CIDs are needed now, feed each block that arrives to
    `add_block`, and read the file with `leaves_in_order()` or `assemble()` once `done`.
    Every block is checked against its CID and every declared size against its parent's
    and against `max_size` (and the root's against `expected_size` when given); a CID
    referenced several times is fetched once. File bytes are kept in memory (at most
    `max_size` of them), so the caller never re-reads blocks.
    """

    def __init__(self, root: bytes, *, max_size: int, max_depth: int = MAX_DEPTH,
                 expected_size: int | None = None) -> None:
        info = parse_cid(root)
        _check_supported(info)
        if max_size < 0:
            raise ValueError("max_size must be non-negative")
        self._root = bytes(root)
        self._max_size = max_size
        self._expected_size = expected_size
        self._max_depth = max_depth
        self._pending: dict[bytes, _Pending] = {self._root: _Pending(None, 1, 0)}
        self._resolved: dict[bytes, _Resolved] = {}
        self._total: int | None = None
        self._pending_bytes = 0  # sum(size * count) over pending entries with a size
        self._failure: InvalidDagError | None = None

    @property
    def root(self) -> bytes:
        """The root CID being assembled."""
        return self._root

    @property
    def done(self) -> bool:
        """True once every block of the file has arrived."""
        return not self._pending

    @property
    def progress(self) -> tuple[int, int]:
        """(file bytes received, file bytes declared); the total is 0 until the root arrives."""
        if self._total is None:
            return (0, 0)
        return (self._total - self._pending_bytes, self._total)

    def wants(self) -> list[bytes]:
        """CIDs still needed, in the order they were discovered (file order per level)."""
        return list(self._pending)

    def add_block(self, cid: bytes, data: bytes | memoryview, *, verified: bool = False) -> bool:
        """Take one block; return False if it was not wanted (ignored, not even hashed).

        `verified=True` skips re-hashing when the caller has just checked the block.
        Raises `BlockError` if the block does not match `cid`: that is the sender's
        fault and leaves the assembler unchanged, so the block can be asked of another
        peer. Raises `InvalidDagError` (or `FileTooLargeError`, `SizeMismatchError`,
        `NotAFileError`) if the block is genuine but the DAG is broken or unacceptable:
        the assembler then stays failed and raises the same error again, since no peer
        can serve other bytes.
        """
        if self._failure is not None:
            raise self._failure
        cid = bytes(cid)
        pending = self._pending.get(cid)
        if pending is None:
            return False
        if not verified and not verify_block(cid, data):
            raise BlockError(f"block {cid_to_str(cid)} does not match its CID")
        try:
            self._accept(cid, data, pending)
        except InvalidDagError as exc:
            self._failure = exc
            raise
        return True

    @property
    def failed(self) -> InvalidDagError | None:
        """The DAG error that stopped this assembler, if any."""
        return self._failure

    def _accept(self, cid: bytes, data: bytes | memoryview, pending: _Pending) -> None:
        node = self._decode_node(cid, data)
        if pending.size is None:
            # The root alone declares the file's size, so a lie about it (or a file
            # over the limit) is refused before a single leaf is asked for.
            if self._expected_size is not None and node.size != self._expected_size:
                raise SizeMismatchError(
                    f"file declares {node.size} bytes, expected {self._expected_size}"
                )
            if node.size > self._max_size:
                raise FileTooLargeError(
                    f"file declares {node.size} bytes, more than the {self._max_size} allowed"
                )
            self._total = node.size
        elif node.size != pending.size:
            raise InvalidDagError(
                f"block {cid_to_str(cid)} holds {node.size} file bytes, "
                f"its parent declared {pending.size}"
            )
        else:
            self._pending_bytes -= pending.size * pending.count
        del self._pending[cid]
        self._resolved[cid] = node
        for child, size in zip(node.children, node.child_sizes, strict=True):
            self._add_ref(child, size, pending.depth + 1, pending.count)

    def _add_ref(self, cid: bytes, size: int, depth: int, count: int) -> None:
        # Walk with an explicit stack: a DAG that reuses a resolved subtree adds one
        # reference per position under it, and recursion depth must not be the peer's.
        stack = [(cid, size, depth, count)]
        while stack:
            cid, size, depth, count = stack.pop()
            if depth > self._max_depth:
                raise InvalidDagError(f"DAG deeper than {self._max_depth} levels")
            resolved = self._resolved.get(cid)
            if resolved is not None:
                if resolved.size != size:
                    raise InvalidDagError(
                        f"block {cid_to_str(cid)} is referenced with sizes "
                        f"{resolved.size} and {size}"
                    )
                stack.extend(
                    (child, child_size, depth + 1, count)
                    for child, child_size in zip(
                        resolved.children, resolved.child_sizes, strict=True
                    )
                )
                continue
            pending = self._pending.get(cid)
            if pending is None:
                self._pending[cid] = _Pending(size, count, depth)
            elif pending.size != size:
                raise InvalidDagError(
                    f"block {cid_to_str(cid)} is referenced with sizes {pending.size} and {size}"
                )
            else:
                pending.count += count
                pending.depth = max(pending.depth, depth)
            self._pending_bytes += size * count

    def _decode_node(self, cid: bytes, data: bytes | memoryview) -> _Resolved:
        info = parse_cid(cid)
        if info.codec == CODEC_RAW:
            return _Resolved(len(data), bytes(data), (), ())
        try:
            links, pb_data = _decode_dag_pb(data)
            if pb_data is None:
                raise InvalidDagError(f"dag-pb block {cid_to_str(cid)} has no UnixFS Data")
            unixfs = _decode_unixfs(pb_data)
        except ProtobufError as exc:
            raise InvalidDagError(f"block {cid_to_str(cid)} does not decode: {exc}") from None
        if unixfs.type not in (_UNIXFS_FILE, _UNIXFS_RAW):
            name = _UNIXFS_TYPE_NAMES.get(unixfs.type, f"type {unixfs.type}")
            raise NotAFileError(f"{cid_to_str(cid)} is a UnixFS {name}, not a file")
        if len(unixfs.blocksizes) != len(links):
            raise InvalidDagError(
                f"block {cid_to_str(cid)} has {len(links)} links but "
                f"{len(unixfs.blocksizes)} blocksizes"
            )
        if any(size == 0 for size in unixfs.blocksizes):
            # Standard importers never link empty children; allowing them would let a
            # tiny DAG expand into an unbounded number of positions.
            raise InvalidDagError(f"block {cid_to_str(cid)} links an empty child")
        size = len(unixfs.data) + sum(unixfs.blocksizes)
        if unixfs.filesize is not None and unixfs.filesize != size:
            raise InvalidDagError(
                f"block {cid_to_str(cid)} declares filesize {unixfs.filesize}, "
                f"its parts add up to {size}"
            )
        children = []
        for link in links:
            try:
                _check_supported(parse_cid(link.cid))
            except CidError as exc:
                raise InvalidDagError(f"block {cid_to_str(cid)} links a bad CID: {exc}") from None
            children.append(link.cid)
        return _Resolved(size, unixfs.data, tuple(children), unixfs.blocksizes)

    def leaves_in_order(self) -> Iterator[bytes]:
        """The file's bytes as a sequence of pieces, in file order. Requires `done`."""
        if not self.done:
            raise RuntimeError("FileAssembler.leaves_in_order() before the file is complete")
        stack = [self._root]
        while stack:
            node = self._resolved[stack.pop()]
            if node.inline:
                yield node.inline
            stack.extend(reversed(node.children))

    def assemble(self) -> bytes:
        """The whole file as one bytes object. Requires `done`."""
        return b"".join(self.leaves_in_order())
