"""Range-based set reconciliation of one room's history (the Negentropy v1 idea), sans-IO.

Two peers each hold a set of items `(timestamp_ms, id)` for a room, id being the 32-byte
sha256 message id. The Initiator and the Responder trade messages until the Initiator
knows which ids it holds that the peer lacks (`have`) and which ids the peer holds that
it lacks (`need`). The bytes exchanged grow with the size of that difference and only
logarithmically with the history.

Rules:
- Items are ordered by (timestamp, id). Timestamps are integers in [0, MAX_TIMESTAMP].
- Both sides walk the same key space left to right. A message is a list of ranges; each
  range runs from the previous range's upper bound (the first from the lowest key) up to
  but excluding its own upper bound. Keys beyond the last range are skipped.
- A range says one of three things about the sender's items in it:
  Skip (nothing to do), Fingerprint (a digest of them) or IdList (all of their ids).
- Receiving Fingerprint: if ours matches, skip; otherwise split our items in the range
  into `branching` sub-ranges of equal count, each sent as a Fingerprint, or, when the
  range holds fewer than `branching` items, send our IdList for the whole range.
  Branching is each side's own choice; peers need not agree on it.
- Receiving IdList: the Initiator settles the range (adds to `have` and `need`) and says
  nothing more about it; the Responder answers with its own IdList for the range.
- The Initiator starts with one Fingerprint over everything and is done when it has
  nothing left to say; only the Initiator learns `have` and `need`.
- Every message fits in `frame_size_limit` bytes. When the next range would overflow it,
  the sender stops and closes the message with one Fingerprint from where it stopped to
  infinity, so the next round carries on there. An IdList may be cut short the same way:
  its bound then moves down to just above the last id it carries.
- The Responder answers every message, if only with the version byte, and keeps no
  state between messages but a round count. The Initiator's `receive` returns None
  when it is done.
- The frame size limit also caps what a side accepts, so both peers must use the same
  one; the stream protocol fixes it (DEFAULT_FRAME_SIZE_LIMIT).
- Either side gives up with ReconcileError after `max_rounds` round trips, so a hostile
  peer cannot keep it busy forever.
- Pure: no I/O, no clock. Untrusted input raises ReconcileError and nothing else.

Encoding (version 1; the structure follows Negentropy v1, the bytes are ours):

    message     = version:u8 range*                    version = 0x01
    range       = bound mode:u8 payload
    bound       = 0x00                                 infinity; must be the last range
                | ts:varint plen:varint prefix:plen     timestamp = previous bound's + ts - 1
    payload     = (mode 0, Skip)        nothing
                | (mode 1, Fingerprint) 16 bytes
                | (mode 2, IdList)      count:varint id:32 bytes * count, no duplicates
    varint      = unsigned LEB128, minimal length, value < 2**64

- A bound's timestamp is delta-encoded against the previous bound of the same message
  (0 before the first). Its key is (timestamp, prefix padded with zero bytes to 32),
  compared with items as (timestamp, id). Senders use the shortest prefix that separates
  the neighbouring items, so most bounds cost a few bytes.
- Bounds strictly increase within a message.
- fingerprint(items) = sha256(le256(sum of ids as little-endian integers mod 2**256)
  || varint(count))[:16]. Sums make a range's fingerprint O(1) from prefix sums.
"""

from __future__ import annotations

import bisect
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeAlias

from . import varint

__all__ = [
    "DEFAULT_BRANCHING",
    "DEFAULT_FRAME_SIZE_LIMIT",
    "DEFAULT_MAX_ROUNDS",
    "FINGERPRINT_SIZE",
    "ID_SIZE",
    "MAX_TIMESTAMP",
    "MIN_FRAME_SIZE_LIMIT",
    "PROTOCOL_VERSION",
    "Initiator",
    "Item",
    "ItemLog",
    "ItemSet",
    "Mode",
    "ReconcileError",
    "Responder",
    "WireBytes",
]

PROTOCOL_VERSION: Final = 0x01
ID_SIZE: Final = 32
FINGERPRINT_SIZE: Final = 16
# Fits SQLite's signed 64-bit INTEGER, and leaves room above for the infinity key.
MAX_TIMESTAMP: Final = 2**63 - 1
DEFAULT_FRAME_SIZE_LIMIT: Final = 60_000
# Below this a split or a closing Fingerprint might not fit, and a round could stall.
MIN_FRAME_SIZE_LIMIT: Final = 4096
# Measured with scattered differences: 8 sends 5.7 KB where Negentropy's 16 sends 8.6 KB
# (10k items, 10 differences) and 63 KB against 72 KB (100k, 100), at the price of a
# fourth round trip at 100k. Each side picks its own; the wire does not carry it.
DEFAULT_BRANCHING: Final = 8
DEFAULT_MAX_ROUNDS: Final = 64

Item: TypeAlias = tuple[int, bytes]
# A bound: (timestamp, 32-byte id prefix padded with zeros), or _INFINITY. Keys compare
# with items as plain tuples, so bisect works on the sorted item list directly.
_Key: TypeAlias = tuple[int, bytes]
# What a transport may hand over; decoding copies it to bytes once.
WireBytes: TypeAlias = bytes | bytearray | memoryview

_INFINITY: Final[_Key] = (2**64, b"")
_BEFORE_ALL: Final[_Key] = (-1, b"")
_ZERO_ID: Final = bytes(ID_SIZE)
_MOD: Final = 1 << 256
# Largest encoded bound: timestamp varint, prefix length byte, a whole id.
_MAX_BOUND_SIZE: Final = varint.MAX_LEN + 1 + ID_SIZE
# Kept free in every frame so that a pending Skip and the closing Fingerprint always fit.
_CLOSING_RESERVE: Final = (_MAX_BOUND_SIZE + 1) + (1 + 1 + FINGERPRINT_SIZE)


class ReconcileError(ValueError):
    """The peer sent a message that breaks the protocol, or failed to converge."""


class Mode(IntEnum):
    """What a range says about the sender's items in it."""

    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2


def _fingerprint(id_sum: int, count: int) -> bytes:
    digest = hashlib.sha256((id_sum % _MOD).to_bytes(32, "little") + varint.encode(count))
    return digest.digest()[:FINGERPRINT_SIZE]


def _separating_key(prev: Item, curr: Item) -> _Key:
    """The shortest bound above `prev` and at most `curr` (prev < curr)."""
    if prev[0] != curr[0]:
        return (curr[0], _ZERO_ID)
    diff = int.from_bytes(prev[1], "big") ^ int.from_bytes(curr[1], "big")
    shared = (256 - diff.bit_length()) // 8
    return (curr[0], curr[1][: shared + 1].ljust(ID_SIZE, b"\x00"))


def _encode_bound(key: _Key, last_ts: int) -> tuple[bytes, int]:
    """Encode `key` after a bound with timestamp `last_ts`; return bytes and new last_ts."""
    if key == _INFINITY:
        return b"\x00", last_ts
    ts, padded = key
    prefix = padded.rstrip(b"\x00")
    return varint.encode(ts - last_ts + 1) + varint.encode(len(prefix)) + prefix, ts


class ItemSet:
    """An immutable, sorted snapshot of one side's items with O(1) range fingerprints.

    Build it with `ItemSet.from_items`; the constructor takes already checked data.
    """

    __slots__ = ("_items", "_sums")

    def __init__(self, sorted_items: list[Item], prefix_sums: list[int]) -> None:
        self._items = sorted_items
        # _sums[i] is the plain sum of the first i ids; reduced mod 2**256 only on use.
        self._sums = prefix_sums

    @classmethod
    def from_items(cls, items: Iterable[Item]) -> ItemSet:
        """Check, deduplicate and sort `items`.

        Raises ValueError for a timestamp outside [0, MAX_TIMESTAMP], an id that is not
        32 bytes, or one id under two timestamps (an id hashes its message, timestamp
        included, so that means the store is corrupt).
        """
        ordered: list[Item] = []
        sums = [0]
        total = 0
        previous: Item | None = None
        # One pass: validate, drop exact repeats (adjacent once sorted), sum the ids.
        # Sorting is cheap when the store hands the items over already in order.
        for item in sorted(items):
            if item == previous:
                continue
            ts, item_id = item
            if type(ts) is not int:  # bool is an int subclass and no timestamp
                raise ValueError(f"timestamp must be an int, not {type(ts).__name__}")
            if not 0 <= ts <= MAX_TIMESTAMP:
                raise ValueError(f"timestamp {ts} outside [0, {MAX_TIMESTAMP}]")
            if type(item_id) is not bytes or len(item_id) != ID_SIZE:
                raise ValueError(f"id must be {ID_SIZE} bytes, got {item_id!r:.80}")
            total += int.from_bytes(item_id, "little")
            sums.append(total)
            ordered.append(item)
            previous = item
        if len({item_id for _, item_id in ordered}) != len(ordered):
            seen: dict[bytes, int] = {}
            for ts, item_id in ordered:
                if seen.setdefault(item_id, ts) != ts:
                    raise ValueError(
                        f"id {item_id.hex()} appears at timestamps {seen[item_id]} and {ts}"
                    )
        return cls(ordered, sums)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def _lower_bound(self, key: _Key, lo: int) -> int:
        """Index of the first item at or above `key`, searching from `lo`."""
        if key == _INFINITY:
            return len(self._items)
        return bisect.bisect_left(self._items, key, lo)

    def _range_fingerprint(self, lo: int, hi: int) -> bytes:
        return _fingerprint(self._sums[hi] - self._sums[lo], hi - lo)

    def _separator(self, index: int) -> _Key:
        """The shortest bound between item index-1 and item index."""
        return _separating_key(self._items[index - 1], self._items[index])

    def _ids(self, lo: int, hi: int) -> list[bytes]:
        return [item_id for _, item_id in self._items[lo:hi]]


class ItemLog:
    """One room's newest items, kept sorted with their prefix sums as messages arrive.

    A sync session's ItemSet is then two bisections and a slice, where building it from
    the store walks and sums the whole window (23 ms for 10,000 items on each side of
    every session, at idle too).

    Rules:
    - It holds every item with timestamp >= `floor`, and nothing else is promised:
      0 means the room's whole history. Items older than the floor are ignored.
    - It holds at least `depth` items when the room has them, and trims its oldest
      down to `depth` once it holds a quarter more, raising the floor to the oldest
      timestamp kept (items sharing it stay).
    - Answers it cannot give from what it holds are None: the caller asks the store.
    """

    __slots__ = ("_depth", "_items", "_sums", "floor")

    def __init__(self, newest: Iterable[Item], *, complete: bool, depth: int) -> None:
        """`newest`: the room's newest items (any order); `complete`: all of them."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        items = ItemSet.from_items(newest)
        self._depth = depth
        self._items = items._items
        self._sums = items._sums
        self.floor = 0
        if not complete and self._items:
            # Older items may share the oldest timestamp held: that one is not covered.
            self._raise_floor(self._items[0][0] + 1)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Item) -> None:
        """Take one new item (the store inserted it, so its id is not held yet)."""
        ts, item_id = item
        if not 0 <= ts <= MAX_TIMESTAMP or len(item_id) != ID_SIZE:
            raise ValueError(f"not an item: {item!r:.80}")
        if ts < self.floor:
            return
        items, sums = self._items, self._sums
        if not items or item > items[-1]:  # the usual case: the newest message so far
            items.append(item)
            sums.append(sums[-1] + int.from_bytes(item_id, "little"))
        else:
            at = bisect.bisect_left(items, item)
            if at < len(items) and items[at] == item:
                return
            items.insert(at, item)
            total = sums[at]
            del sums[at + 1 :]
            for _, later_id in items[at:]:
                total += int.from_bytes(later_id, "little")
                sums.append(total)
        if len(items) > self._depth + self._depth // 4:
            self._trim()

    def _trim(self) -> None:
        # Keep the newest `depth`, and the older ones sharing the oldest kept timestamp.
        self._raise_floor(self._items[len(self._items) - self._depth][0])

    def _raise_floor(self, floor: int) -> None:
        self.floor = floor
        cut = bisect.bisect_left(self._items, (floor, b""))
        del self._items[:cut]
        del self._sums[:cut]

    def window_start(self) -> int | None:
        """The timestamp of the `depth`-th newest item, 0 if the room has fewer."""
        if len(self._items) >= self._depth:
            return self._items[-self._depth][0]
        return 0 if self.floor == 0 else None

    def window(self, since: int, until: int = 0) -> ItemSet | None:
        """The items with since <= timestamp (< until, unless until is 0)."""
        if since < self.floor:
            return None
        items = self._items
        lo = bisect.bisect_left(items, (since, b""))
        hi = len(items) if until == 0 else bisect.bisect_left(items, (until, b""), lo)
        return ItemSet(items[lo:hi], self._sums[lo : hi + 1])


@dataclass(frozen=True, slots=True)
class _Range:
    bound: _Key
    mode: Mode
    fingerprint: bytes = b""
    ids: tuple[bytes, ...] = ()


class _Reader:
    """A cursor over an untrusted message; every shortfall becomes ReconcileError."""

    def __init__(self, data: bytes, pos: int) -> None:
        self._data = data
        self.pos = pos

    def at_end(self) -> bool:
        return self.pos >= len(self._data)

    def remaining(self) -> int:
        return len(self._data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining():
            raise ReconcileError(f"truncated {what} at offset {self.pos}: need {size} bytes")
        chunk = self._data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def varint(self, what: str) -> int:
        # One value, one encoding (minimal): a redundant zero group would let peers
        # smuggle different bytes for the same message.
        start = self.pos
        try:
            value, self.pos = varint.decode(self._data, start, minimal=True)
        except varint.VarintError as exc:
            raise ReconcileError(f"{exc} for {what} at offset {start}") from None
        return value


def _decode_message(data: WireBytes, size_limit: int) -> list[_Range]:
    """Parse and check a whole message before any of it is acted on."""
    if len(data) > size_limit:
        raise ReconcileError(
            f"message of {len(data)} bytes exceeds the frame size limit of {size_limit}"
        )
    data = bytes(data)
    if not data:
        raise ReconcileError("empty message")
    if data[0] != PROTOCOL_VERSION:
        raise ReconcileError(
            f"unsupported protocol version {data[0]:#04x}, this side speaks "
            f"{PROTOCOL_VERSION:#04x}"
        )
    reader = _Reader(data, 1)
    ranges: list[_Range] = []
    prev_key = _BEFORE_ALL
    prev_ts = 0
    while not reader.at_end():
        offset = reader.pos
        if prev_key == _INFINITY:
            raise ReconcileError(f"range after the infinity bound at offset {offset}")
        encoded_ts = reader.varint("bound timestamp")
        if encoded_ts == 0:
            key = _INFINITY
        else:
            ts = prev_ts + encoded_ts - 1
            if ts > MAX_TIMESTAMP:
                raise ReconcileError(f"bound timestamp {ts} at offset {offset} is too large")
            prefix_len = reader.varint("bound prefix length")
            if prefix_len > ID_SIZE:
                raise ReconcileError(
                    f"bound prefix of {prefix_len} bytes at offset {offset}, at most {ID_SIZE}"
                )
            prefix = reader.take(prefix_len, "bound prefix")
            key = (ts, prefix.ljust(ID_SIZE, b"\x00"))
            prev_ts = ts
        if key <= prev_key:
            raise ReconcileError(f"bounds out of order at offset {offset}")
        mode_byte = reader.take(1, "range mode")[0]
        if mode_byte == Mode.SKIP:
            ranges.append(_Range(key, Mode.SKIP))
        elif mode_byte == Mode.FINGERPRINT:
            ranges.append(
                _Range(key, Mode.FINGERPRINT, reader.take(FINGERPRINT_SIZE, "fingerprint"))
            )
        elif mode_byte == Mode.ID_LIST:
            count = reader.varint("id count")
            # Check before slicing so a forged count cannot make us allocate.
            if count * ID_SIZE > reader.remaining():
                raise ReconcileError(
                    f"id list at offset {offset} claims {count} ids but "
                    f"{reader.remaining()} bytes remain"
                )
            ids = tuple(reader.take(ID_SIZE, "id") for _ in range(count))
            if len(set(ids)) != count:
                raise ReconcileError(f"duplicate id in the id list at offset {offset}")
            ranges.append(_Range(key, Mode.ID_LIST, ids=ids))
        else:
            raise ReconcileError(f"unknown range mode {mode_byte} at offset {offset}")
        prev_key = key
    return ranges


class _Frame:
    """Builds one outgoing message within the frame size limit."""

    def __init__(self, items: ItemSet, size_limit: int) -> None:
        self._items = items
        self._out = bytearray((PROTOCOL_VERSION,))
        self._room = size_limit - _CLOSING_RESERVE
        self._last_ts = 0
        # Consecutive skipped ranges merge into one, written only if something follows.
        self._pending_skip: _Key | None = None
        self.has_ranges = False

    def skip(self, bound: _Key) -> None:
        self._pending_skip = bound

    def _header(self, bound: _Key, mode: Mode) -> tuple[bytearray, int]:
        chunk = bytearray()
        ts = self._last_ts
        if self._pending_skip is not None:
            encoded, ts = _encode_bound(self._pending_skip, ts)
            chunk += encoded
            chunk.append(Mode.SKIP)
        encoded, ts = _encode_bound(bound, ts)
        chunk += encoded
        chunk.append(mode)
        return chunk, ts

    def _commit(self, chunk: bytearray, ts: int) -> None:
        self._out += chunk
        self._last_ts = ts
        self._pending_skip = None
        self.has_ranges = True

    def fingerprint(self, bound: _Key, fingerprint: bytes) -> bool:
        """Append a Fingerprint range if it fits; report whether it did."""
        chunk, ts = self._header(bound, Mode.FINGERPRINT)
        chunk += fingerprint
        if len(self._out) + len(chunk) > self._room:
            return False
        self._commit(chunk, ts)
        return True

    def id_list(self, lo: int, hi: int, bound: _Key) -> int | None:
        """Append an IdList of items[lo:hi], cut short if need be.

        Returns the index after the last id written (`hi` when all fit), or None when
        nothing was written. An empty list that does not fit is None, not `hi`.
        """
        count = hi - lo
        chunk, ts = self._header(bound, Mode.ID_LIST)
        count_bytes = varint.encode(count)
        space = self._room - len(self._out) - len(chunk) - len(count_bytes)
        if count * ID_SIZE > space:
            # Reserve for the worst-case bound, which replaces the one in `chunk`.
            count = min(count - 1, (space - _MAX_BOUND_SIZE) // ID_SIZE)
            if count <= 0:
                return None
            chunk, ts = self._header(self._items._separator(lo + count), Mode.ID_LIST)
            count_bytes = varint.encode(count)
        chunk += count_bytes
        for item_id in self._items._ids(lo, lo + count):
            chunk += item_id
        self._commit(chunk, ts)
        return lo + count

    def close(self, index: int) -> None:
        """End the message with one Fingerprint over items[index:] up to infinity."""
        chunk, ts = self._header(_INFINITY, Mode.FINGERPRINT)
        chunk += self._items._range_fingerprint(index, len(self._items))
        self._commit(chunk, ts)  # _CLOSING_RESERVE keeps room for this

    def to_bytes(self) -> bytes:
        # A trailing pending skip is dropped: unmentioned keys are skipped anyway.
        return bytes(self._out)


class _Session(ABC):
    """What both roles share: walking a peer's ranges and answering them."""

    def __init__(
        self, items: ItemSet, *, frame_size_limit: int, branching: int, max_rounds: int
    ) -> None:
        if frame_size_limit < MIN_FRAME_SIZE_LIMIT:
            raise ValueError(
                f"frame_size_limit {frame_size_limit} is below the minimum {MIN_FRAME_SIZE_LIMIT}"
            )
        if branching < 2:
            raise ValueError(f"branching must be at least 2, not {branching}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, not {max_rounds}")
        self._items = items
        self._frame_size_limit = frame_size_limit
        self._branching = branching
        self._max_rounds = max_rounds
        self.rounds = 0
        """Messages received so far."""

    def _answer(self, message: WireBytes) -> _Frame:
        ranges = _decode_message(message, self._frame_size_limit)
        items = self._items
        frame = _Frame(items, self._frame_size_limit)
        lower = 0
        for peer_range in ranges:
            upper = items._lower_bound(peer_range.bound, lower)
            if peer_range.mode is Mode.SKIP:
                frame.skip(peer_range.bound)
            elif peer_range.mode is Mode.FINGERPRINT:
                if items._range_fingerprint(lower, upper) == peer_range.fingerprint:
                    frame.skip(peer_range.bound)
                elif not self._split(frame, lower, upper, peer_range.bound):
                    break
            elif not self._on_id_list(frame, lower, upper, peer_range):
                break
            lower = upper
        return frame

    def _split(self, frame: _Frame, lo: int, hi: int, bound: _Key) -> bool:
        """Describe items[lo:hi] more finely; False if the frame filled up and was closed."""
        count = hi - lo
        # Negentropy lists ids below 2 * branching. We list below `branching`: a listed id
        # travels twice (once each way) at 32 bytes, a sub-range costs about 21, so
        # splitting pays off earlier. Never lower: fewer items than buckets would leave
        # an empty bucket and repeat a bound.
        if count < self._branching:
            return self._send_ids(frame, lo, hi, bound)
        per_bucket, extra = divmod(count, self._branching)
        start = lo
        for bucket in range(self._branching):
            end = start + per_bucket + (1 if bucket < extra else 0)
            sub_bound = bound if end == hi else self._items._separator(end)
            if not frame.fingerprint(sub_bound, self._items._range_fingerprint(start, end)):
                frame.close(start)
                return False
            start = end
        return True

    def _send_ids(self, frame: _Frame, lo: int, hi: int, bound: _Key) -> bool:
        reached = frame.id_list(lo, hi, bound)
        if reached == hi:
            return True
        frame.close(lo if reached is None else reached)
        return False

    @abstractmethod
    def _on_id_list(self, frame: _Frame, lo: int, hi: int, peer_range: _Range) -> bool:
        """Handle the peer's IdList for items[lo:hi]; False if the frame was closed."""


class Initiator(_Session):
    """The side that opens a reconciliation and ends up knowing `have` and `need`.

    Send `initial_message()`, then feed each reply to `receive` and send what it returns
    until it returns None. `have` and `need` only grow, range by range, so what they hold
    after a ReconcileError (say, max_rounds hit during a long first sync) is still worth
    acting on. They are the peer's claims: verify whatever it then sends for `need`.
    """

    def __init__(
        self,
        items: ItemSet,
        *,
        frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
        branching: int = DEFAULT_BRANCHING,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
    ) -> None:
        super().__init__(
            items, frame_size_limit=frame_size_limit, branching=branching, max_rounds=max_rounds
        )
        self.have: set[bytes] = set()
        """Ids we hold that the peer lacks."""
        self.need: set[bytes] = set()
        """Ids the peer holds that we lack."""
        self._started = False
        self._finished = False
        self.complete = False
        """True once the peer's last reply left nothing to reconcile."""

    def initial_message(self) -> bytes:
        """The opening message: one Fingerprint over the whole set."""
        if self._started:
            raise RuntimeError("initial_message() was already called")
        self._started = True
        frame = _Frame(self._items, self._frame_size_limit)
        frame.fingerprint(_INFINITY, self._items._range_fingerprint(0, len(self._items)))
        return frame.to_bytes()

    def receive(self, message: WireBytes) -> bytes | None:
        """Take the peer's reply; return the next message, or None when reconciled.

        Raises ReconcileError if the reply is malformed or the peer has not let us
        finish within `max_rounds` replies; the session is over either way.
        """
        if not self._started:
            raise RuntimeError("call initial_message() before receive()")
        if self._finished:
            raise RuntimeError("this reconciliation is already over")
        self.rounds += 1
        try:
            frame = self._answer(message)
        except ReconcileError:
            self._finished = True
            raise
        if not frame.has_ranges:
            self._finished = True
            self.complete = True
            return None
        if self.rounds >= self._max_rounds:
            self._finished = True
            raise ReconcileError(f"peer did not converge within {self._max_rounds} rounds")
        return frame.to_bytes()

    def _on_id_list(self, frame: _Frame, lo: int, hi: int, peer_range: _Range) -> bool:
        theirs = set(peer_range.ids)
        for item_id in self._items._ids(lo, hi):
            if item_id in theirs:
                theirs.discard(item_id)
            else:
                self.have.add(item_id)
        self.need.update(theirs)
        frame.skip(peer_range.bound)
        return True


class Responder(_Session):
    """The side that answers; it keeps no state between messages except a round count."""

    def __init__(
        self,
        items: ItemSet,
        *,
        frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
        branching: int = DEFAULT_BRANCHING,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
    ) -> None:
        super().__init__(
            items, frame_size_limit=frame_size_limit, branching=branching, max_rounds=max_rounds
        )

    def receive(self, message: WireBytes) -> bytes:
        """Answer one message from the Initiator; always returns a reply to send.

        Raises ReconcileError if the message is malformed or the Initiator sends more
        than `max_rounds` messages.
        """
        self.rounds += 1
        if self.rounds > self._max_rounds:
            raise ReconcileError(f"initiator sent more than {self._max_rounds} messages")
        return self._answer(message).to_bytes()

    def _on_id_list(self, frame: _Frame, lo: int, hi: int, peer_range: _Range) -> bool:
        # The Initiator settles the range from our full list; it needs nothing else.
        return self._send_ids(frame, lo, hi, peer_range.bound)
