"""UnixFS files as content-addressed blocks: CIDs, the importer and the fetch assembler.

One concern per module; this package re-exports the API the daemon uses:

- `errors.py`: the error family, and whose fault each error is.
- `cid.py`: CIDs (parse, compute, verify, text forms, bitswap prefixes).
- `dagpb.py`: the dag-pb node and UnixFS Data codecs.
- `importer.py`: bytes in, the standard DAG out (`import_file`).
- `assembler.py`: blocks in, in any order, the file out (`FileAssembler`).

The varint and protobuf field codecs they share with bitswap are `core/varint.py` and
`core/protobuf.py`.

Rules of this package:

- It is pure and sans-IO: bytes in, bytes or plain data out. It imports no libp2p, opens
  no file or socket, and keeps no clock. The block store and the bitswap adapter do the
  I/O around it.
- Everything that arrives from the network is untrusted and raises only this package's
  exceptions (`UnixfsError` subclasses).
- Only sha2-256 multihashes and the raw and dag-pb codecs are supported; anything else
  is refused with `CidError`, never guessed at.
"""

from __future__ import annotations

from .assembler import MAX_DEPTH, FileAssembler
from .cid import (
    CODEC_DAG_PB,
    CODEC_RAW,
    SHA2_256,
    CidInfo,
    cid_from_prefix,
    cid_from_str,
    cid_prefix,
    cid_to_str,
    cid_v1,
    normalize_cid,
    parse_cid,
    verify_block,
)
from .dagpb import MAX_NODE_LINKS, dag_links
from .errors import (
    BlockError,
    CidError,
    FileTooLargeError,
    InvalidDagError,
    NotAFileError,
    SizeMismatchError,
    UnixfsError,
)
from .importer import CHUNK_SIZE, MAX_LINKS, Block, ImportResult, import_file

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
