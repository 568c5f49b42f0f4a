"""The fetch assembler: blocks of a UnixFS file, arriving in any order, in; the file out.

Everything that arrives from the network is untrusted: `FileAssembler` verifies every
block against its CID, checks every declared size against the parent's and against
`max_size`, bounds the depth, and raises only the UnixFS errors (`errors.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..protobuf import ProtobufError
from .cid import CODEC_RAW, check_supported, cid_to_str, parse_cid, verify_block
from .dagpb import UNIXFS_FILE, UNIXFS_RAW, UNIXFS_TYPE_NAMES, decode_dag_pb, decode_unixfs
from .errors import (
    BlockError,
    CidError,
    FileTooLargeError,
    InvalidDagError,
    NotAFileError,
    SizeMismatchError,
)

__all__ = ["MAX_DEPTH", "FileAssembler"]

MAX_DEPTH = 64
"""Deepest DAG the assembler follows. The balanced layout needs 4 levels for 7 GB;
trickle DAGs from other importers are deeper, so leave room but stay bounded."""


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
        check_supported(info)
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
            links, pb_data = decode_dag_pb(data)
            if pb_data is None:
                raise InvalidDagError(f"dag-pb block {cid_to_str(cid)} has no UnixFS Data")
            unixfs = decode_unixfs(pb_data)
        except ProtobufError as exc:
            raise InvalidDagError(f"block {cid_to_str(cid)} does not decode: {exc}") from None
        if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
            name = UNIXFS_TYPE_NAMES.get(unixfs.type, f"type {unixfs.type}")
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
                check_supported(parse_cid(link.cid))
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
