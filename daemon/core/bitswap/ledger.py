"""What one peer wants from us (its wantlist as we hold it) and what we answer next.

Bitswap's server side, sans-IO: the adapter's link task for the peer owns one
`PeerLedger`, feeds it the peer's wantlist entries and the CIDs that reach our store,
and asks it to `compose` the next message from what the store's index says it holds.

Rules:
- A want-have is answered with HAVE once we hold the block; a want-block with the
  block. Both are then forgotten. With send-dont-have we answer DONT_HAVE once and keep
  the want: if the block reaches us later, the peer gets the HAVE or the block then
  (that is how a fetching member learns, block by block, that we can serve it).
- A cancel forgets the entry; a full wantlist replaces every entry.
- At most `max_wants` entries are kept; the rest are dropped and counted.
- Presences go only to peers on bitswap 1.2 (`v12`): older ones cannot read them.
- A block the caller says to `hold` (sent to another peer a moment ago) is held back
  and looked at again after `release_held`: the peer may get it from that other peer
  meanwhile and cancel (BitTorrent's super-seeding idea), so the original poster
  uploads each block about once.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from .message import Presence, WantEntry

__all__ = ["Composed", "LedgerEntry", "PeerLedger", "hold_back"]

P = TypeVar("P", bound=Hashable)


def hold_back(last_sent: tuple[float, P] | None, peer: P, now: float, hold_s: float, *,
              connected: Callable[[P], bool], fetched_lately: Callable[[], bool]) -> bool:
    """Whether a block we would send `peer` now waits (the `hold` of `compose`).

    `last_sent` is (when, to whom) we last sent the block. It waits only if it went to
    another peer less than `hold_s` ago, that peer is still connected (one that left
    passes nothing on), and we did not fetch the block lately ourselves: a member
    passing blocks on holds nothing back, or each hop would add a wait; the source
    (e.g. the poster) does, so that its takers serve each other.
    """
    if last_sent is None:
        return False
    at, to = last_sent
    if to == peer or now - at >= hold_s or not connected(to):
        return False
    return not fetched_lately()


BLOCK_OVERHEAD = 64  # bytes a block adds to a message besides its data (prefix, tags)
PRESENCE_OVERHEAD = 4


@dataclass(slots=True)
class LedgerEntry:
    """One CID the peer wants from us."""

    want_have: bool
    send_dont_have: bool
    dont_have_sent: bool = False


@dataclass(slots=True)
class Composed:
    """What the next message carries: presences now, blocks to read from the store."""

    presences: list[Presence] = field(default_factory=list)
    blocks: list[tuple[bytes, LedgerEntry]] = field(default_factory=list)


class PeerLedger:
    """The wantlist one peer sent us, and which of its entries to look at again."""

    def __init__(self, max_wants: int) -> None:
        self.max_wants = max_wants
        self._entries: OrderedDict[bytes, LedgerEntry] = OrderedDict()
        self._todo: deque[bytes] = deque()  # entries to look at again
        self._held: list[bytes] = []  # blocks held back (`hold`), to look at again later

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cid: object) -> bool:
        return cid in self._entries

    @property
    def has_held(self) -> bool:
        """True while some block is held back (see `release_held`)."""
        return bool(self._held)

    def release_held(self) -> None:
        """Look again at the blocks held back."""
        self._todo.extend(self._held)
        self._held.clear()

    @property
    def has_work(self) -> bool:
        """True while some entry may be answerable now."""
        return bool(self._todo)

    def apply(self, entries: Iterable[WantEntry], full: bool) -> int:
        """Take a wantlist update; returns how many wants were dropped (over max_wants)."""
        if full:
            self._entries.clear()
        dropped = 0
        for entry in entries:
            if entry.cancel:
                self._entries.pop(entry.cid, None)
                continue
            if entry.cid not in self._entries and len(self._entries) >= self.max_wants:
                dropped += 1
                continue
            self._entries[entry.cid] = LedgerEntry(entry.want_have, entry.send_dont_have)
            self._todo.append(entry.cid)
        return dropped

    def blocks_arrived(self, cids: Iterable[bytes],
                       alias: Callable[[bytes], bytes | None]) -> None:
        """These blocks reached our store: entries for them are answerable now.

        `alias(cid)` names the same block under another CID version (CIDv0 and CIDv1
        dag-pb share a digest), or None.
        """
        for cid in cids:
            if cid in self._entries:
                self._todo.append(cid)
            else:
                other = alias(cid)
                if other is not None and other in self._entries:
                    self._todo.append(other)

    def compose(self, size_of: Callable[[bytes], int | None], *, max_block: int,
                target: int, used: int, v12: bool,
                hold: Callable[[bytes], bool] | None = None) -> Composed:
        """Choose the next message's presences and blocks, about `target` bytes.

        `size_of(cid)` is the stored block's size or None if we lack it; `used` is what
        the message holds already (our own wants). A target of 0 means one block per
        message. Chosen blocks leave the ledger; give back those the store cannot read
        with `unreadable`. Blocks `hold(cid)` is true for are held back.
        """
        out = Composed()
        size = used
        while self._todo:
            cid = self._todo[0]
            entry = self._entries.get(cid)
            if entry is None:
                self._todo.popleft()
                continue
            block_size = size_of(cid)
            if block_size is not None and entry.want_have and v12:
                out.presences.append(Presence(cid, have=True))
                del self._entries[cid]
                size += len(cid) + PRESENCE_OVERHEAD
            elif block_size is not None and hold is not None and hold(cid):
                self._held.append(cid)  # keep the want: sent later, or cancelled
            elif block_size is not None:
                if block_size <= max_block:
                    if out.blocks and size + block_size + BLOCK_OVERHEAD > target:
                        break  # the next message takes it
                    out.blocks.append((cid, entry))
                    size += block_size + BLOCK_OVERHEAD
                del self._entries[cid]
            elif entry.send_dont_have and not entry.dont_have_sent and v12:
                # Keep the want: if the block arrives later we still send it.
                out.presences.append(Presence(cid, have=False))
                entry.dont_have_sent = True
                size += len(cid) + PRESENCE_OVERHEAD
            self._todo.popleft()
            if size >= target:
                break
        return out

    def unreadable(self, cid: bytes, entry: LedgerEntry, *, v12: bool) -> Presence | None:
        """A chosen block the store could not read after all (corrupt, dropped, gone).

        Answered as for any block we lack, so the peer asks elsewhere now instead of
        waiting out its timeout; the want is kept in case the block comes back.
        """
        if cid not in self._entries:
            self._entries[cid] = entry
        if entry.send_dont_have and not entry.dont_have_sent and v12:
            entry.dont_have_sent = True
            return Presence(cid, have=False)
        return None
