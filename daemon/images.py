"""Images: posting, fetching, spreading them across the room, and keeping them.

Rules:
- An image is checked with Pillow (PNG, JPEG, GIF, WebP; byte and pixel limits),
  stripped of location and identity metadata without re-encoding (unless the sender
  keeps it), thumbnailed, and stored as a UnixFS DAG whose root CID the message
  carries. Pillow work runs in a worker thread, one call at a time.
- Every member that holds an image serves it over bitswap. Members fetch the images
  of their rooms by themselves up to `auto_fetch_max` bytes, so a room keeps its
  images after the sender leaves.
- A message's claims are checked before its bytes are kept: the DAG's size is read
  from its root before any leaf is fetched, and the assembled bytes must have the
  size, format and pixel size the message says. Bytes that differ are never pinned,
  are evicted after an auto-fetch, and the message is marked "image unavailable"
  (a verdict kept per message in the store, counted per author).
- Images of joined rooms are pinned once their bytes matched a message; the rest of
  the block store is evicted least recently used within `block_quota`. An explicit
  `fetch` may fetch any UnixFS file, but pins it only for a message it matches.
- `fetch` keeps asking until its timeout: "no peer has it" usually means "not yet".
- `fetch` writes only where it is told: an explicit path, or the sanitised original
  name inside a given directory, never outside it, and never over an existing file
  unless forced.
- The service task owns the auto-fetch queue; `fetch` calls run in RPC tasks.
- `send_image` checks every parameter before it stores or pins anything, and a
  failure after that releases the pin it took.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import random
import stat
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .adapters.blockstore import BlockStore, BlockStoreError
from .adapters.exchange import BlockExchange
from .config import Config
from .core import imaging, unixfs
from .core.envelope import MAX_FILENAME_BYTES, MAX_TEXT_BYTES, Envelope
from .core.filenames import sanitize_filename
from .core.rooms import topic_for
from .errors import (
    FetchTimeout,
    GossipchatError,
    ImageMismatch,
    ImageTooLarge,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    PathError,
)

if TYPE_CHECKING:
    from .adapters.p2p import P2PNetwork
    from .adapters.store import Store
    from .history import History

log = logging.getLogger(__name__)

AUTO_FETCH_WORKERS = 2
AUTO_FETCH_QUEUE = 256
AUTO_FETCH_TIMEOUT_S = 120.0
AUTO_FETCH_SPREAD_S = 0.1
AUTO_FETCH_RETRIES = 4
PROGRESS_EVERY_S = 0.1
FETCH_RETRY_FIRST_S = 0.1  # a fetch nobody could serve yet is asked again after this,
FETCH_RETRY_MAX_S = 1.0  # doubling up to this
# How long a fetch waits for a peer that lacks the image to get it (peers keep our
# want-have and say HAVE then) before it looks again at who is connected.
FETCH_PATIENCE_S = 5.0
# Verdicts of claim checks kept (see `_mismatch`): a CID names its bytes, so a check of
# the same claim against the same CID always ends the same way.
CLAIM_VERDICTS_KEPT = 256

Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to post: the bytes to share and what the message says of them."""

    data: bytes
    info: imaging.ImageInfo
    thumbnail: bytes


def prepare(data: bytes, limits: imaging.ImageLimits, keep_metadata: bool) -> PreparedImage:
    """Check, strip and thumbnail (CPU-bound: run it in a worker thread).

    The pixels are decoded once: the thumbnail decodes the first frame of the bytes
    that will be posted (stripped of metadata), and that is the check that they
    decode, with `inspect`'s guard. (`inspect` and then the thumbnail decoded it
    twice: a 5 MB PNG took 45 ms to prepare, a 12-megapixel JPEG 170 ms.)"""
    info = imaging.read_header(data, limits)
    shared = data if keep_metadata else imaging.strip_metadata(data, info)
    thumbnail, _mime = imaging.make_thumbnail(shared, limits=limits)
    return PreparedImage(shared, info, thumbnail)


def _claim_of(env: Envelope) -> imaging.ImageClaim:
    # The envelope codec has checked the types of these fields already.
    body = env.body
    return imaging.ImageClaim(mime=body["mime"], size=body["size"], width=body["width"],
                              height=body["height"])


def _check_text(name: str, value: str, max_bytes: int) -> None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{name} is not valid Unicode (lone surrogate)") from None
    if size > max_bytes:
        raise MessageTooLarge(f"{name} too large: {size} bytes, limit {max_bytes}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FetchSlotStats:
    """How often fetches had to wait for one of the max_concurrent_fetches slots."""

    waited: int = 0  # fetches that found every slot busy and waited
    timed_out: int = 0  # `fetch` calls whose timeout ran out before a slot came free


@dataclass
class _RunningFetch:
    """A fetch under way: who else hears its progress, when it ends, and what it got."""

    done: trio.Event = field(default_factory=trio.Event)
    watchers: list[Callable[[int, int], None]] = field(default_factory=list)
    data: bytes | None = None  # the file, once it is fetched


class ImageService:
    """The node's images: post, fetch, auto-fetch, pin."""

    def __init__(self, history: History, store: Store, network: P2PNetwork, config: Config,
                 blocks: BlockStore, exchange: BlockExchange) -> None:
        self.history = history
        self.store = store
        self.network = network
        self.config = config
        self.blocks = blocks
        self.exchange = exchange
        self.limits = imaging.ImageLimits(max_bytes=config.image_max_bytes,
                                          max_pixels=config.image_max_pixels)
        self._pillow = trio.CapacityLimiter(1)
        # Fetches at once, `fetch` calls and auto-fetches alike (max_concurrent_fetches):
        # each holds wants, ledgers and up to a whole image in memory while it runs.
        self._fetch_limiter = trio.CapacityLimiter(config.max_concurrent_fetches)
        self.fetch_slots = FetchSlotStats()
        self._queue_send, self._queue = trio.open_memory_channel[Envelope](AUTO_FETCH_QUEUE)
        self._queued: set[bytes] = set()  # message ids
        self.auto_fetched = 0
        self.auto_fetch_failed = 0
        self._rng = random.Random()
        self._attempts: dict[bytes, int] = {}
        self._nursery: trio.Nursery | None = None
        # Fetches under way by root; a second fetch of the same image joins the first.
        self._running: dict[bytes, _RunningFetch] = {}
        self.fetches_joined = 0
        # Claim checks by (root, claim): their verdicts (None: the bytes match), and
        # the checks under way, which a second check of the same waits for.
        self._verdicts: OrderedDict[tuple[bytes, imaging.ImageClaim], str | None] = \
            OrderedDict()
        self._checking: dict[tuple[bytes, imaging.ImageClaim], trio.Event] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve bitswap and work the auto-fetch queue until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.exchange.run)
            for _ in range(AUTO_FETCH_WORKERS):
                nursery.start_soon(self._auto_fetch_worker)
            task_status.started()

    # posting

    async def send_image(self, room: str, *, path: str | None, data: str | None,
                         caption: str | None, filename: str | None,
                         keep_metadata: bool) -> Envelope:
        """Check, store and post an image; returns the committed envelope."""
        if (path is None) == (data is None):
            raise InvalidArgument("give exactly one of path or data")
        # Every parameter is checked before anything is stored or pinned.
        if caption is not None:
            _check_text("caption", caption, MAX_TEXT_BYTES)
        if filename is not None:
            _check_text("filename", filename, 4 * MAX_FILENAME_BYTES)
        if path is not None:
            raw = self._read_image_file(path)
            name = filename or Path(path).name
        else:
            assert data is not None
            if len(data) > (self.limits.max_bytes * 4) // 3 + 4:
                raise ImageTooLarge(
                    f"image too large: over {self.limits.max_bytes} bytes, "
                    f"limit {self.limits.max_bytes}")
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument("data is not valid base64") from None
            name = filename or "image"
        # A refused image raises NotAnImage or ImageTooLarge, the RPC errors as they are.
        prepared = await trio.to_thread.run_sync(
            prepare, raw, self.limits, keep_metadata, limiter=self._pillow)
        safe_name = sanitize_filename(name)
        result = await trio.to_thread.run_sync(unixfs.import_file, prepared.data)
        body: dict[str, Any] = {
            "cid": unixfs.cid_to_str(result.root), "filename": safe_name,
            "mime": prepared.info.mime, "size": len(prepared.data),
            "width": prepared.info.width, "height": prepared.info.height,
            "thumbnail": prepared.thumbnail,
        }
        if caption:
            body["caption"] = caption
        already_pinned = self.blocks.is_pinned(result.root)
        try:
            self.blocks.pin(result.root)
            await self.blocks.put_many_async(
                [(b.cid, b.data) for b in result.blocks], verified=True)
            env = self.history.post(room, "image", body)
        except BaseException as exc:
            # Nothing was posted: the blocks may stay as cache, the pin must not.
            if not already_pinned:
                self._unpin_quietly(result.root)
            if isinstance(exc, BlockStoreError):
                raise PathError(f"cannot store the image: {exc}") from None
            raise
        await self.exchange.announce(b.cid for b in result.blocks)
        return env

    def _unpin_quietly(self, root: bytes) -> None:
        try:
            self.blocks.unpin(root)
        except BlockStoreError as exc:
            log.warning("cannot release the pin of %s: %s", unixfs.cid_to_str(root), exc)

    def _read_image_file(self, path: str) -> bytes:
        p = Path(path)
        if not p.is_absolute():
            raise InvalidArgument(f"path must be absolute: {path!r}")
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise PathError(f"cannot read {path}: no such file") from None
        except OSError as exc:
            raise PathError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:  # a NUL byte, or a name the file system cannot encode
            raise PathError(f"cannot read {path!r}: {exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise PathError(f"cannot read {path}: not a regular file")
        with os.fdopen(fd, "rb") as fh:
            if st.st_size > self.limits.max_bytes:
                raise ImageTooLarge(
                    f"image too large: {st.st_size} bytes, limit {self.limits.max_bytes}")
            try:
                data = fh.read(self.limits.max_bytes + 1)
            except OSError as exc:
                # Regular to fstat yet unreadable: /proc/self/mem, a failing disk.
                raise PathError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > self.limits.max_bytes:
            raise ImageTooLarge(f"image too large: over {self.limits.max_bytes} bytes")
        return data

    # fetching

    def _target(self, cid: str, path: str | None, directory: str | None,
                force: bool) -> Path | None:
        try:
            return self._check_target(cid, path, directory, force)
        except (OSError, ValueError) as exc:
            # A path the file system refuses to even look at (no permission, a NUL
            # byte, an unencodable name): the user's to fix, so say which one.
            where = path if path is not None else directory
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise PathError(f"cannot use {where!r}: {detail}") from None

    def _check_target(self, cid: str, path: str | None, directory: str | None,
                      force: bool) -> Path | None:
        if path is not None and directory is not None:
            raise InvalidArgument("give path or dir, not both")
        if path is not None:
            target = Path(path)
            if not target.is_absolute():
                raise InvalidArgument(f"path must be absolute: {path!r}")
        elif directory is not None:
            base = Path(directory)
            if not base.is_absolute() or not base.is_dir():
                raise PathError(f"dir must be an existing absolute directory: {directory!r}")
            found = self.store.image_by_cid(cid)
            name = sanitize_filename(found[1] if found else cid)
            target = base / name
            # sanitize_filename gives a bare name; resolving proves it stays inside.
            if target.resolve().parent != base.resolve():
                raise PathError(f"refusing to write outside {directory}")
        else:
            return None
        if target.is_symlink() or (target.exists() and not force):
            raise PathError(f"{target} exists; pass force to overwrite it")
        if not target.parent.is_dir():
            raise PathError(f"no such directory: {target.parent}")
        return target

    def _peers_for(self, cid: str) -> tuple[list[str], list[str]]:
        """Connected peers to fetch an image from: the members most likely to hold it
        first, then everyone else; and apart, the connected authors of the messages
        that carry it, who serve only what no member has yet (fallback)."""
        connected = self.network.connected_peers()
        likely: list[str] = []
        for room in self.store.rooms_with_image(cid):
            for peer in self.network.topic_peers(topic_for(room)):
                if peer in connected and peer not in likely:
                    likely.append(peer)
        peers = likely + [p for p in connected if p not in likely]
        authors = {m.author_text for m in self.store.image_messages(cid)}
        return [p for p in peers if p not in authors], [p for p in peers if p in authors]

    async def fetch(self, cid: str, *, path: str | None, directory: str | None, force: bool,
                    timeout_s: float | None, progress: Progress | None) -> dict[str, Any]:
        """Fetch an image by CID (and write it out if asked)."""
        try:
            root = unixfs.cid_from_str(cid)
        except unixfs.CidError as exc:
            raise InvalidArgument(f"not a CID: {cid!r}: {exc}") from None
        text = unixfs.cid_to_str(root)
        target = self._target(text, path, directory, force)
        timeout = self.config.fetch_timeout_s if timeout_s is None else timeout_s
        if not 0 < timeout <= 3600:
            raise InvalidArgument("timeout must be between 0 and 3600 seconds")
        deadline = trio.current_time() + timeout
        async with self._fetch_slot(deadline):
            data = await self._fetch_until(root, deadline, progress)
        await self._judge_messages_of(text, root, data)
        written = None
        if target is not None:
            written = await trio.to_thread.run_sync(_write_out, target, data, force)
        return {"cid": text, "path": written, "size": len(data)}

    @asynccontextmanager
    async def _fetch_slot(self, deadline: float | None) -> AsyncIterator[None]:
        """Hold one of the max_concurrent_fetches slots; wait for one if all are busy,
        until `deadline` (FetchTimeout past it) or for as long as it takes (None)."""
        limiter = self._fetch_limiter
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            self.fetch_slots.waited += 1
            acquired = False
            with trio.move_on_at(float("inf") if deadline is None else deadline):
                await limiter.acquire()
                acquired = True
            if not acquired:
                self.fetch_slots.timed_out += 1
                raise FetchTimeout(
                    f"all {int(limiter.total_tokens)} fetch slots stayed busy for the whole "
                    "timeout (max_concurrent_fetches); try again later or with a longer "
                    "timeout") from None
        try:
            yield
        finally:
            limiter.release()

    async def _fetch_until(self, root: bytes, deadline: float,
                           progress: Progress | None) -> bytes:
        # "Nobody has it" is often "nobody has it yet": an image spreads hop by hop
        # and a neighbour may be fetching it right now. Ask again until the deadline,
        # at least once a second: an ask is one small message per peer, and a longer
        # pause would be added to every hop the image still has to travel.
        delay = FETCH_RETRY_FIRST_S
        while True:
            remaining = deadline - trio.current_time()
            try:
                return await self._fetch_with_progress(root, max(remaining, 0.01), progress)
            except NotFound:
                if deadline - trio.current_time() <= delay:
                    raise
            await trio.sleep(delay)
            delay = min(delay * 2, FETCH_RETRY_MAX_S)

    async def _fetch_with_progress(self, root: bytes, timeout_s: float,
                                   progress: Progress | None) -> bytes:
        peers, fallback = self._peers_for(unixfs.cid_to_str(root))
        # Peers that lack the image keep our want and say when they have it: wait for
        # that a while, then look again at who is connected (`_fetch_until`).
        patience = min(timeout_s, FETCH_PATIENCE_S)
        if progress is None:
            return await self._exchange_fetch(root, peers, max_size=self.limits.max_bytes,
                                              timeout_s=timeout_s, fallback=fallback,
                                              patience_s=patience)
        latest: list[tuple[int, int]] = []
        changed = trio.Event()

        def on_progress(have: int, total: int) -> None:
            latest.append((have, total))
            changed.set()

        async def report() -> None:
            nonlocal changed
            while True:
                await changed.wait()
                changed = trio.Event()
                have, total = latest[-1]
                latest.clear()
                await progress(have, total)
                await trio.sleep(PROGRESS_EVERY_S)

        failure: GossipchatError | None = None
        data = b""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            try:
                data = await self._exchange_fetch(
                    root, peers, max_size=self.limits.max_bytes, timeout_s=timeout_s,
                    on_progress=on_progress, fallback=fallback, patience_s=patience)
            except GossipchatError as exc:
                # Raised outside the nursery, so callers see it and not an ExceptionGroup.
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        await progress(len(data), len(data))
        return data

    async def _exchange_fetch(
        self, root: bytes, peers: list[str], *, max_size: int, timeout_s: float,
        fallback: list[str], patience_s: float, expected_size: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> bytes:
        """`exchange.fetch`, but a fetch of an image that is being fetched already (an
        auto-fetch, another client's `fetch`) waits for that one, hearing its progress,
        instead of asking every peer for every block a second time. Then it takes the
        bytes the other got, if they fit its own limits, or runs itself: from the
        peers if the other failed.

        Measured in the fanout bench (20 members, each auto-fetching while its client
        fetched too), two sessions per member cost about a fifth of the round's CPU;
        reading the blocks back from the store and assembling the file again after
        the first one, about a sixth (settled rounds: 4.5 core-s before, 3.6 after).
        """
        deadline = trio.current_time() + timeout_s
        running = self._running.get(root)
        if running is not None:
            self.fetches_joined += 1
        while running is not None:
            if on_progress is not None:
                running.watchers.append(on_progress)
            try:
                with trio.move_on_at(deadline):
                    await running.done.wait()
            finally:
                if on_progress is not None:
                    running.watchers.remove(on_progress)
            if running.data is not None and _fits(running.data, max_size, expected_size):
                return running.data
            if trio.current_time() >= deadline:
                break  # our own fetch below times out at once, with the usual error
            running = self._running.get(root)  # a third fetch may have begun meanwhile
        mine = _RunningFetch()
        if on_progress is not None:
            mine.watchers.append(on_progress)
        self._running.setdefault(root, mine)

        def progress(have: int, total: int) -> None:
            for watcher in list(mine.watchers):
                watcher(have, total)

        try:
            mine.data = await self.exchange.fetch(
                root, peers, max_size=max_size, timeout_s=max(deadline - trio.current_time(),
                                                                0.01),
                fallback=fallback, patience_s=patience_s, expected_size=expected_size,
                on_progress=progress)
            return mine.data
        finally:
            if self._running.get(root) is mine:
                del self._running[root]
            mine.done.set()

    # checking what messages say

    async def _mismatch(self, root: bytes, data: bytes,
                        claim: imaging.ImageClaim) -> str | None:
        """Why `data`, the file under `root`, is not the image `claim` describes, or
        None if it is.

        Each (root, claim) is checked once: a `fetch` that joined an auto-fetch of the
        same message waits for the auto-fetch's check instead of queueing a second one
        behind it (a worker-thread hop each, the last steps before a member of a busy
        room holds the image).
        """
        key = (root, claim)
        while (running := self._checking.get(key)) is not None:
            await running.wait()
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key]
        done = self._checking[key] = trio.Event()
        try:
            try:
                await trio.to_thread.run_sync(imaging.check_claim, data, claim, self.limits,
                                              limiter=self._pillow)
            except imaging.ImageError as exc:
                reason: str | None = str(exc)
            else:
                reason = None
            self._verdicts[key] = reason
            while len(self._verdicts) > CLAIM_VERDICTS_KEPT:
                self._verdicts.popitem(last=False)
        finally:
            del self._checking[key]
            done.set()
        return reason

    async def _judge_messages_of(self, cid: str, root: bytes, data: bytes) -> None:
        """After an explicit fetch: check the joined rooms' messages naming this CID.

        The root is pinned only if the bytes are what one of them says. A message that
        lied is marked, but nothing is evicted: the user asked for these bytes.
        """
        joined = set(self.history.joined_rooms())
        messages = [m for m in self.store.image_messages(cid) if m.room in joined]
        verdicts = self.store.image_verdicts(m.id for m in messages)
        matched = False
        for env in messages:
            if env.id in verdicts:
                matched = matched or verdicts[env.id] is None
                continue
            reason = await self._mismatch(root, data, _claim_of(env))  # reposts: once
            if reason is None:
                self._record(env, None)
                matched = True
            else:
                self._refuse(env, root, reason, evict=False)
        if matched:
            await self._keep(root, data)

    def _record(self, env: Envelope, unavailable: str | None) -> None:
        self.store.record_image_verdict(env.id, env.author_text, unavailable, _now_ms())

    def _refuse(self, env: Envelope, root: bytes, reason: str, *, evict: bool) -> None:
        """The bytes behind a message's CID are not what it says: mark, count, evict."""
        self._record(env, reason)
        evicted = self.blocks.evict(root) if evict else 0
        log.warning("image message %s by %s refused (%d blocks evicted): %s",
                    env.id.hex(), env.author_text, evicted, reason)

    async def _keep(self, root: bytes, data: bytes) -> None:
        """Pin a checked image, and store again any block evicted while it was fetched."""
        self.blocks.pin(root)
        if not self.blocks.missing(root):
            return
        # Its blocks were unpinned until the check passed, so a full store may have
        # evicted some meanwhile. The bytes are at hand: re-import them.
        result = await trio.to_thread.run_sync(unixfs.import_file, data)
        if result.root != unixfs.normalize_cid(root):
            # Not our importer's layout: the missing blocks come back on the next fetch.
            log.info("image %s lost blocks to eviction while it was fetched",
                     unixfs.cid_to_str(root))
            return
        await self.blocks.put_many_async(
            [(b.cid, b.data) for b in result.blocks], verified=True)

    # spreading

    def _auto_fetch_limit(self) -> int:
        return min(self.config.auto_fetch_max, self.limits.max_bytes)

    def on_image(self, env: Envelope) -> None:
        """A new image message in a joined room: fetch and check it in the background."""
        size = env.body.get("size", 0)
        if self.config.auto_fetch_max <= 0 or size > self._auto_fetch_limit():
            return
        if env.id in self._queued:
            return
        try:
            unixfs.cid_from_str(env.body.get("cid", ""))
        except unixfs.CidError:
            return
        # Queued even when every block is here already: the bytes are checked against
        # this message before they are pinned for it.
        try:
            self._queue_send.send_nowait(env)
            self._queued.add(env.id)
        except trio.WouldBlock:
            log.warning("auto-fetch queue full; %s will be fetched on demand",
                        env.body.get("cid"))

    async def _auto_fetch_worker(self) -> None:
        async for env in self._queue:
            try:
                await self._auto_fetch(env)
            except (GossipchatError, unixfs.CidError, BlockStoreError) as exc:
                self._retry_later(env, exc)
                continue
            self._attempts.pop(env.id, None)
            self._queued.discard(env.id)

    async def _auto_fetch(self, env: Envelope) -> None:
        cid = env.body["cid"]
        root = unixfs.cid_from_str(cid)
        claim = _claim_of(env)
        peers: list[str] = []
        fallback: list[str] = []
        if self.blocks.missing(root):
            # Members hear of an image at the same moment and start together: bitswap
            # sessions let them serve each other from the first block, and those that
            # fetch at once split what only the sender has, which keeps the sender's
            # upload flat as rooms grow. A small jitter only spreads the want-haves.
            await trio.sleep(self._rng.uniform(0, AUTO_FETCH_SPREAD_S))
            peers, fallback = self._peers_for(cid)
        # Fetched unpinned, with the limit of auto-fetches and the size the message
        # claims: a root that declares another size is refused before any leaf.
        try:
            async with self._fetch_slot(None):
                data = await self._exchange_fetch(
                    root, peers, max_size=self._auto_fetch_limit(),
                    timeout_s=AUTO_FETCH_TIMEOUT_S, fallback=fallback,
                    expected_size=claim.size, patience_s=FETCH_PATIENCE_S)
        except ImageMismatch as exc:
            # No peer can serve other bytes for this CID: nothing to retry. Nothing was
            # stored for this message either (the root was refused), and blocks of the
            # DAG fetched for someone else are not this message's to evict.
            self._refuse(env, root, exc.message, evict=False)
            return
        reason = await self._mismatch(root, data, claim)
        if reason is not None:
            self._refuse(env, root, reason, evict=True)
            return
        self._record(env, None)
        if env.room in self.history.joined_rooms():
            await self._keep(root, data)
        self.auto_fetched += 1

    def _retry_later(self, env: Envelope, exc: Exception) -> None:
        # Neighbours may not hold the image yet (it spreads hop by hop): try again a
        # few times with growing pauses before leaving it to an explicit fetch.
        attempt = self._attempts.get(env.id, 0) + 1
        if attempt > AUTO_FETCH_RETRIES or self._nursery is None:
            self.auto_fetch_failed += 1
            self._attempts.pop(env.id, None)
            self._queued.discard(env.id)
            log.info("auto-fetch of %s failed: %s", env.body.get("cid"), exc)
            return
        self._attempts[env.id] = attempt
        self._nursery.start_soon(self._requeue, env, 2.0 ** attempt)

    async def _requeue(self, env: Envelope, delay_s: float) -> None:
        await trio.sleep(delay_s * self._rng.uniform(0.8, 1.2))
        try:
            self._queue_send.send_nowait(env)
        except trio.WouldBlock:
            self._queued.discard(env.id)

    def unpin_room(self, room: str) -> None:
        """Leaving a room: its images become evictable unless another room has them.
        One change of the pins for the whole room (BlockStore.unpin_many)."""
        keep = set(self.history.joined_rooms()) - {room}
        roots = []
        for cid in self.store.image_cids(room):
            if self.store.rooms_with_image(cid) & keep:
                continue
            try:
                roots.append(unixfs.cid_from_str(cid))
            except unixfs.CidError as exc:
                log.warning("unpin %s: %s", cid, exc)
        try:
            self.blocks.unpin_many(roots)
        except BlockStoreError as exc:
            log.warning("leaving %s: its %d images stay pinned: %s", room, len(roots), exc)

    async def read_local(self, cid: str) -> bytes:
        """The bytes of an image held in the local block store (no network).

        Raises InvalidArgument for a malformed CID and NotFound when a block is missing:
        the web UI fetches an image first (the `fetch` method), then reads it here.
        """
        try:
            root = unixfs.cid_from_str(cid)
            assembler = unixfs.FileAssembler(root, max_size=self.limits.max_bytes)
        except unixfs.UnixfsError as exc:
            raise InvalidArgument(f"not a CID: {cid[:80]!r}: {exc}") from None
        while not assembler.done:
            wanted = assembler.wants()
            found = await self.blocks.get_many_async(wanted)
            for block_cid, data in zip(wanted, found, strict=True):
                if data is None:
                    raise NotFound(f"image {cid} is not held here; fetch it first")
                try:
                    assembler.add_block(block_cid, data, verified=True)
                except unixfs.UnixfsError as exc:
                    raise NotFound(f"image {cid} is not a readable file here: {exc}") from None
        return assembler.assemble()

    def view(self) -> dict[str, Any]:
        """Counters for `status`."""
        refused = self.store.unavailable_images_by_author()
        return {
            "blocks": self.blocks.count, "bytes": self.blocks.total_bytes,
            "quota": self.blocks.quota_bytes, "pinned_images": self.blocks.pinned_count,
            # Block reads served from the blocks kept in memory (adapters/blockstore.py).
            "blocks_from_memory": self.blocks.hot_hits,
            "auto_fetched": self.auto_fetched, "auto_fetch_failed": self.auto_fetch_failed,
            # Fetches that found the same image being fetched and waited for that one.
            "fetches_joined": self.fetches_joined,
            # Image messages whose bytes were not what they said, also per author (kept
            # in the store, so they survive restarts) for peer scoring to use.
            "refused": sum(refused.values()),
            "refused_by_author": refused,
            "exchange": self.exchange.view(),
            "fetch_slots": {
                "max": int(self._fetch_limiter.total_tokens),
                "busy": self._fetch_limiter.borrowed_tokens,
                "waiting": self._fetch_limiter.statistics().tasks_waiting,
                "waited": self.fetch_slots.waited,
                "timed_out": self.fetch_slots.timed_out,
            },
        }


def _fits(data: bytes, max_size: int, expected_size: int | None) -> bool:
    """Whether bytes another fetch got answer this one: within its size limit, and of
    the size it expects (a fetch that would refuse them runs itself and says why)."""
    return len(data) <= max_size and expected_size in (None, len(data))


def _write_out(target: Path, data: bytes, force: bool) -> str:
    """Write atomically next to the target; refuse to replace unless forced."""
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except (OSError, ValueError) as exc:
        # /proc/self/x, a read-only directory, a NUL byte: nothing to clean up.
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise PathError(f"cannot write {str(target)!r}: {detail}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if force:
            os.replace(tmp, target)
        else:
            # link() fails if the target appeared meanwhile: never clobber it.
            os.link(tmp, target)
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise PathError(f"{target} exists; pass force to overwrite it") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PathError(f"cannot write {target}: {exc.strerror}") from None
    return str(target)
