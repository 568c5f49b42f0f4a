"""Content-addressed block store on disk, with pins and an LRU quota.

Rules of this module:

- One file per block under the store directory (the daemon passes `<home>/blocks`),
  named by its base32 CIDv1 and fanned out two levels deep by two characters of the
  digest: `<dir>/<c1>/<c2>/<cid>`, 32 x 32 directories, so no directory grows past a
  few hundred entries for a store of a hundred thousand blocks. A CIDv0 and the CIDv1
  dag-pb CID with the same multihash name the same block and share the same file.
- Writes are atomic: the bytes go to a temporary file in `<dir>/tmp/` and are renamed
  into place, so a reader never sees half a block. There is no fsync per block: a block
  is content-addressed and `get` re-hashes it, so one torn by a power cut is detected,
  dropped and fetched again, while an fsync per 256 KiB block would cost milliseconds
  each. Leftover temporary files are removed when the store opens.
- `put` refuses bytes that do not match their CID; `get` verifies what it read and
  drops a block that rotted on disk rather than serve it to a peer.
- Pins are roots of DAGs to keep (the daemon pins the images of the rooms the user is
  in). A pinned root protects every block reachable from it that is in the store, also
  blocks that arrive after the pin. `pin` is idempotent: a set, not a counter, so the
  daemon can re-pin what it needs at every start. Pins persist in `<dir>/pins.json`
  and its journal `<dir>/pins.log` (adapters/pinfile.py), fsynced at each change,
  because losing one silently could evict an image.
- With a quota, `put` first evicts the least recently used unpinned blocks; if pinned
  blocks alone fill the quota, `put` raises `QuotaExceededError` and stores nothing.
  Recency survives restarts through file mtimes (`get` touches the file).
- The blocks stored or read last, up to `hot_bytes` (HOT_BYTES), are also kept in
  memory, verified. A block that just arrived is the one peers ask for next (an image
  spreading through a room), and serving it from memory costs no read, no second hash
  and no worker-thread hop. A block served from memory does not touch its file, so
  after a restart its recency is that of its last read from disk.
- The index (what is stored, recency, pins, quota) and the blocks kept in memory are
  touched only by the trio thread: the store belongs to the daemon's event loop. `get`
  and `put` are short blocking calls on one block (`get` none for a block in memory);
  `get_many_async` and `put_many_async` do the same for a batch with the hashing and
  file I/O in a worker thread, which is what the bitswap adapter and the image service
  use so that disk work overlaps network work on another core.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import trio

from ..core import unixfs
from .pinfile import PinFile, PinFileError

__all__ = [
    "BlockNotFoundError",
    "BlockStore",
    "BlockStoreError",
    "QuotaExceededError",
]

# Blocks kept in memory after they were stored or read (see the rules above): a few
# images in flight. Measured (with 32 MiB; the 5 and 10 MB files fit in either): in the
# fanout bench (20 members, 5 MB), where each member serves what it has just received,
# settled rounds took 3.4 core-s instead of 3.8 and 1.77 s instead of 1.99; a 10 MB
# fetch costs its server 16-18 ms of CPU instead of 27-30.
HOT_BYTES = 16 * 1024 * 1024
_TMP_DIR = "tmp"
_TMP_NAMES = itertools.count()


class BlockStoreError(Exception):
    """The block store failed (disk error, full quota, missing block)."""


class BlockNotFoundError(BlockStoreError):
    """The store does not hold the block asked for."""


class QuotaExceededError(BlockStoreError):
    """The quota is full of pinned blocks: unpin something or raise the quota."""


class BlockStore:
    """Blocks on disk keyed by CID, with pinned DAGs and least-recently-used eviction."""

    def __init__(
        self, directory: str | os.PathLike[str], *, quota_bytes: int | None = None,
        hot_bytes: int = HOT_BYTES,
    ) -> None:
        if quota_bytes is not None and quota_bytes < 0:
            raise ValueError("quota_bytes must be non-negative")
        if hot_bytes < 0:
            raise ValueError("hot_bytes must be non-negative")
        self._dir = Path(directory)
        self._tmp = self._dir / _TMP_DIR
        self._quota = quota_bytes
        # CIDv1 -> size, least recently used first.
        self._lru: OrderedDict[bytes, int] = OrderedDict()
        self._total = 0
        self._reserved = 0  # bytes of writes in flight (see _reserve)
        self._pin_roots: set[bytes] = set()
        self._pin_file = PinFile(self._dir, self._tmp)
        self._pinned: set[bytes] = set()  # every stored-or-expected CID under a pin
        # The stored blocks no pin protects, least recently used first (the order of
        # `_lru`): what `_make_room` may evict. Walking `_lru` instead passed every
        # pinned block on each put near the quota: 4.4 ms a block with 10,000 pinned
        # images.
        self._evictable: OrderedDict[bytes, None] = OrderedDict()
        # The links of stored dag-pb blocks read so far (at most one entry per stored
        # block, dropped with it): walking what stays pinned after an unpin reads no
        # file again. With 10,000 images pinned, an unpin took 299 ms reading them.
        self._children: dict[bytes, tuple[bytes, ...]] = {}
        # Verified bytes of the blocks stored or read last, least recently used first:
        # only blocks of the index (`_hot_put` checks, `_forget` drops from both).
        self._hot: OrderedDict[bytes, bytes] = OrderedDict()
        self._hot_size = 0
        self._hot_max = hot_bytes
        self.hot_hits = 0  # blocks served from memory
        try:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._tmp.mkdir(exist_ok=True, mode=0o700)
            self._clean_tmp()
            self._scan()
            self._pin_roots = self._pin_file.load()
        except OSError as exc:
            raise BlockStoreError(f"cannot open block store {self._dir}: {exc}") from exc
        except PinFileError as exc:
            raise BlockStoreError(str(exc)) from exc
        self._recompute_pinned()

    # ----------------------------------------------------------------------------------
    # Counters

    @property
    def directory(self) -> Path:
        """Where the blocks live."""
        return self._dir

    @property
    def total_bytes(self) -> int:
        """Bytes of block data stored (not counting file-system overhead)."""
        return self._total

    @property
    def count(self) -> int:
        """Number of blocks stored."""
        return len(self._lru)

    @property
    def quota_bytes(self) -> int | None:
        """The quota, or None for unlimited."""
        return self._quota

    # ----------------------------------------------------------------------------------
    # Blocks

    def has(self, cid: bytes) -> bool:
        """True if the block is stored."""
        return _key(cid) in self._lru

    def get(self, cid: bytes) -> bytes:
        """The block's bytes, verified; `BlockNotFoundError` if absent or corrupt on disk."""
        key = self._lookup(cid)
        hot = self._hot_get(key)
        if hot is not None:
            return hot
        return self._after_read(key, _read_file(self._path(key), key))

    def size_of(self, cid: bytes) -> int | None:
        """The stored block's size from the index (no disk access), or None if absent."""
        return self._lru.get(_key(cid))

    async def get_many_async(self, cids: Sequence[bytes]) -> list[bytes | None]:
        """Several blocks, read and verified in one worker-thread hop.

        None stands for a block that is absent, vanished or was corrupt (and is dropped).
        """
        keys = [_key(cid) for cid in cids]
        found: dict[bytes, bytes | None] = {}
        for key in keys:
            if (hot := self._hot_get(key)) is not None:
                found[key] = hot
        present = [(key, self._path(key)) for key in keys
                   if key in self._lru and key not in found]
        results = await trio.to_thread.run_sync(_read_many, present) if present else []
        for (key, _), result in zip(present, results, strict=True):
            try:
                found[key] = self._after_read(key, result)
            except BlockStoreError:
                found[key] = None
        return [found.get(key) for key in keys]

    def put(self, cid: bytes, data: bytes | memoryview, *, verified: bool = False) -> None:
        """Store a block (a no-op if it is already there).

        Checks `data` against `cid` unless `verified` (the caller just did). Raises
        `unixfs.BlockError` for a mismatch, `unixfs.CidError` for an unsupported CID,
        `QuotaExceededError` when pinned blocks leave no room.
        """
        key = _key(cid)
        if self._already(key):
            return
        size = len(data)
        self._reserve(size)
        try:
            _write_file(self._tmp, self._path(key), key, data, verified)
        finally:
            self._reserved -= size
        self._index(key, size)
        self._hot_put(key, data)  # verified: _write_file checks what it was not told

    async def put_many_async(
        self, blocks: Sequence[tuple[bytes, bytes | memoryview]], *, verified: bool = False
    ) -> None:
        """`put` for a batch, with the hashing and the file writes in one worker-thread
        hop (off the event loop).

        Safe to run several at once, also for the same CID: the index is only touched
        in the calling (trio) thread and the renames are atomic. Blocks written before
        a failure stay stored; the error is raised after them.
        """
        todo: dict[bytes, bytes | memoryview] = {}
        for cid, data in blocks:
            key = _key(cid)
            if not self._already(key):
                todo.setdefault(key, data)
        if not todo:
            return
        size = sum(len(data) for data in todo.values())
        self._reserve(size)
        written: list[bytes] = []
        try:
            await trio.to_thread.run_sync(self._write_many, todo, verified, written)
        finally:
            self._reserved -= size
            for key in written:
                self._index(key, len(todo[key]))
                self._hot_put(key, todo[key])

    def _write_many(
        self, todo: dict[bytes, bytes | memoryview], verified: bool, written: list[bytes]
    ) -> None:
        # Runs in a worker thread: file I/O only, progress reported through `written`.
        for key, data in todo.items():
            _write_file(self._tmp, self._path(key), key, data, verified)
            written.append(key)

    def _lookup(self, cid: bytes) -> bytes:
        key = _key(cid)
        if key not in self._lru:
            raise BlockNotFoundError(f"block {unixfs.cid_to_str(key)} not in the store")
        return key

    def _after_read(self, key: bytes, result: bytes | str) -> bytes:
        # `_read_file` reports trouble as a string so that it can run in a thread and
        # leave every index change to this (the owning) thread.
        if isinstance(result, bytes):
            if key in self._lru:
                self._touch(key)
                self._hot_put(key, result)
            return result
        name = unixfs.cid_to_str(key)
        if result == "vanished":
            self._forget(key)
            raise BlockNotFoundError(f"block {name} vanished from disk")
        if result == "corrupt":
            self._drop(key)
            raise BlockNotFoundError(f"block {name} was corrupt on disk; dropped")
        raise BlockStoreError(f"cannot read block {name}: {result}")

    def _hot_get(self, key: bytes) -> bytes | None:
        data = self._hot.get(key)
        if data is not None:
            self._hot.move_to_end(key)
            self._touch(key)
            self.hot_hits += 1
        return data

    def _hot_put(self, key: bytes, data: bytes | memoryview) -> None:
        if len(data) > self._hot_max or key not in self._lru:
            return
        if key in self._hot:
            self._hot.move_to_end(key)
            return
        # A view (a block bitswap received, inside its message) may hold a larger
        # buffer alive: memory keeps a copy of the block alone.
        self._hot[key] = data if isinstance(data, bytes) else bytes(data)
        self._hot_size += len(data)
        while self._hot_size > self._hot_max:
            _, old = self._hot.popitem(last=False)
            self._hot_size -= len(old)

    def _already(self, key: bytes) -> bool:
        if key in self._lru:
            self._touch(key)
            return True
        return False

    def _touch(self, key: bytes) -> None:
        """A stored block was used: it is now the most recently used."""
        self._lru.move_to_end(key)
        if key in self._evictable:
            self._evictable.move_to_end(key)

    def _reserve(self, size: int) -> None:
        # Room is made before the write and held in `_reserved` while it runs, so
        # concurrent writes cannot overshoot the quota together.
        self._make_room(size)
        self._reserved += size

    def _index(self, key: bytes, size: int) -> None:
        if key in self._lru:
            return  # a concurrent put of the same block finished first
        self._lru[key] = size
        self._total += size
        if key in self._pinned:
            self._pin_walk([key])
        else:
            self._evictable[key] = None

    def evict(self, root: bytes) -> int:
        """Delete the stored blocks of the DAG under `root` that no pin protects.

        For content found to be other than what it was fetched for: it should not
        linger as cache. Returns how many blocks went.
        """
        doomed: list[bytes] = []
        seen: set[bytes] = set()
        stack = [_key(root)]
        while stack:  # collect first: a deleted block's links cannot be read any more
            key = stack.pop()
            if key in seen or key not in self._lru:
                continue
            seen.add(key)
            if key not in self._pinned:
                doomed.append(key)
            stack.extend(self._links(key))
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def cids(self) -> list[bytes]:
        """All stored CIDs (CIDv1 form), least recently used first."""
        return list(self._lru)

    # ----------------------------------------------------------------------------------
    # Files

    def import_file(self, data: bytes | memoryview, *, pin: bool = False) -> bytes:
        """Chunk `data` into the standard UnixFS DAG, store every block, return the root.

        With `pin`, the root is pinned first so eviction cannot take the new blocks.
        """
        result = unixfs.import_file(data)
        if pin:
            self.pin(result.root)
        for block in result.blocks:
            self.put(block.cid, block.data, verified=True)
        return result.root

    def read_file(self, root: bytes, *, max_size: int) -> bytes:
        """The file under `root` from stored blocks only.

        Raises `BlockNotFoundError` if a block is missing and `unixfs.InvalidDagError`
        (or `FileTooLargeError`, `NotAFileError`) if the DAG is unusable.
        """
        assembler = unixfs.FileAssembler(root, max_size=max_size)
        while not assembler.done:
            for cid in assembler.wants():
                assembler.add_block(cid, self.get(cid), verified=True)
        return assembler.assemble()

    def missing(self, root: bytes) -> list[bytes]:
        """CIDs reachable from `root` that are not stored (just the root if it is absent)."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        stack = [_key(root)]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            if key not in self._lru:
                out.append(key)
                continue
            stack.extend(self._links(key))
        return out

    # ----------------------------------------------------------------------------------
    # Pins

    def pin(self, root: bytes) -> None:
        """Keep the DAG under `root`, now and for blocks that arrive later."""
        key = _key(root)
        if key in self._pin_roots:
            return
        self._pin_roots.add(key)
        try:
            self._pin_file.record(self._pin_roots, added=[key])
        except PinFileError as exc:
            self._pin_roots.discard(key)
            raise BlockStoreError(str(exc)) from exc
        self._protect(key)
        self._pin_walk([key])

    def unpin(self, root: bytes) -> None:
        """Stop keeping the DAG under `root` (blocks shared with other pins stay kept)."""
        self.unpin_many([root])

    def unpin_many(self, roots: Iterable[bytes]) -> int:
        """Unpin every root of `roots` (any CID form) as one change: one journal write
        and one walk of what stays pinned, whatever their number. How many were pinned.
        """
        keys = {_key(root) for root in roots} & self._pin_roots
        if not keys:
            return 0
        self._pin_roots -= keys
        try:
            self._pin_file.record(self._pin_roots, removed=sorted(keys))
        except PinFileError as exc:
            self._pin_roots |= keys
            raise BlockStoreError(str(exc)) from exc
        self._recompute_pinned()
        return len(keys)

    def pinned_roots(self) -> frozenset[bytes]:
        """The pinned roots, CIDv1 form (a copy: `is_pinned` and `pinned_count` ask
        without one, for `send_image` and `status`)."""
        return frozenset(self._pin_roots)

    def is_pinned(self, root: bytes) -> bool:
        """Whether `root` (in any CID form) is a pinned root."""
        return _key(root) in self._pin_roots

    @property
    def pinned_count(self) -> int:
        """How many roots are pinned."""
        return len(self._pin_roots)

    # ----------------------------------------------------------------------------------
    # Internals

    def _path(self, key: bytes) -> Path:
        name = unixfs.cid_to_str(key)
        # The last base32 characters come from the sha-256 digest, so they spread evenly;
        # the very last one carries only 3 bits, hence -3 and -2.
        return self._dir / name[-3] / name[-2] / name

    def _make_room(self, size: int) -> None:
        used = self._total + self._reserved
        if self._quota is None or used + size <= self._quota:
            return
        if size > self._quota:
            raise QuotaExceededError(f"a {size}-byte block exceeds the {self._quota}-byte quota")
        victims: list[bytes] = []
        freed = 0
        for key in self._evictable:
            if used - freed + size <= self._quota:
                break
            victims.append(key)
            freed += self._lru[key]
        if used - freed + size > self._quota:
            busy = " and writes in progress" if self._reserved else ""
            raise QuotaExceededError(
                f"block store quota of {self._quota} bytes is full of pinned blocks{busy}"
            )
        for key in victims:
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise BlockStoreError(f"cannot delete block {unixfs.cid_to_str(key)}: {exc}") from exc
        self._forget(key)

    def _forget(self, key: bytes) -> None:
        size = self._lru.pop(key, None)
        if size is not None:
            self._total -= size
        self._evictable.pop(key, None)
        hot = self._hot.pop(key, None)
        if hot is not None:
            self._hot_size -= len(hot)
        self._children.pop(key, None)

    def _links(self, key: bytes) -> tuple[bytes, ...]:
        # Reading a stored block to follow its links (normalized); a block that no
        # longer decodes simply has no children here (it is still what its CID says).
        children = self._children.get(key)
        if children is not None:
            return children
        if unixfs.parse_cid(key).codec == unixfs.CODEC_RAW:
            return ()
        data = self._hot.get(key)
        try:
            if data is None:
                data = self._path(key).read_bytes()
            children = tuple(_key(child) for child in unixfs.dag_links(key, data))
        except (OSError, unixfs.UnixfsError):
            return ()
        if key in self._lru:
            self._children[key] = children
        return children

    def _pin_walk(self, start: Iterable[bytes]) -> None:
        stack = list(start)
        while stack:
            key = stack.pop()
            if key not in self._lru:
                continue  # its children get pinned when it arrives (see put)
            for child in self._links(key):
                if child not in self._pinned:
                    self._protect(child)
                    stack.append(child)

    def _protect(self, key: bytes) -> None:
        self._pinned.add(key)
        self._evictable.pop(key, None)

    def _recompute_pinned(self) -> None:
        self._pinned = set(self._pin_roots)
        self._pin_walk(self._pin_roots)
        self._evictable = OrderedDict.fromkeys(k for k in self._lru if k not in self._pinned)

    def _clean_tmp(self) -> None:
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def _scan(self) -> None:
        found: list[tuple[float, bytes, int]] = []
        for first in self._dir.iterdir():
            if not first.is_dir() or first.name == _TMP_DIR:
                continue
            for second in first.iterdir():
                if not second.is_dir():
                    continue
                for entry in os.scandir(second):
                    try:
                        key = _key(unixfs.cid_from_str(entry.name))
                    except unixfs.CidError:
                        continue  # not ours; leave it alone
                    stat = entry.stat()
                    found.append((stat.st_mtime, key, stat.st_size))
        found.sort()
        for _, key, size in found:
            self._lru[key] = size
            self._total += size


# File I/O without the index: safe to run in a worker thread.


def _read_file(path: Path, key: bytes) -> bytes | str:
    try:
        data = path.read_bytes()
        os.utime(path)  # recency for LRU eviction after a restart
    except FileNotFoundError:
        return "vanished"
    except OSError as exc:
        return str(exc)
    if not unixfs.verify_block(key, data):
        return "corrupt"
    return data


def _read_many(items: list[tuple[bytes, Path]]) -> list[bytes | str]:
    return [_read_file(path, key) for key, path in items]


def _write_file(
    tmp_dir: Path, path: Path, key: bytes, data: bytes | memoryview, verified: bool
) -> None:
    if not verified and not unixfs.verify_block(key, data):
        raise unixfs.BlockError(f"data does not match CID {unixfs.cid_to_str(key)}")
    # Unique within the process (next() on a count is atomic); one daemon per store.
    tmp = tmp_dir / f"{os.getpid()}-{next(_TMP_NAMES)}.tmp"
    try:
        with open(tmp, "wb") as file:
            file.write(data)
        try:
            os.replace(tmp, path)
        except FileNotFoundError:  # the first block of its fan-out directory
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise BlockStoreError(f"cannot write block {unixfs.cid_to_str(key)}: {exc}") from exc


def _discard(path: Path) -> None:
    # Cleanup after a failed write must not hide the original error.
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _key(cid: bytes) -> bytes:
    return unixfs.normalize_cid(cid)
