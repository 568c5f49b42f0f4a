"""Our wants across every fetch and every peer: whom we asked for what, who answered.

Bitswap's client side below the sessions, sans-IO. The adapter's engine task owns one
`WantList`; each fetch (a session, numbered) asks it to send want-haves and
want-blocks to peers, and it returns the wire entries to send and the events each
session must hear. Blocks are keyed by their sha2-256 digest, so a CIDv0 and a CIDv1
of the same block are one want.

Rules:
- A peer is asked once per block, whichever sessions want it: a second session's ask
  is answered from what the peer said already (HAVE or DONT_HAVE), or waits with the
  first ask for the peer's answer, which reaches both.
- A want-block to a peer asked a want-have before replaces that entry (as in boxo).
- A peer that said DONT_HAVE keeps our want (send-dont-have): it tells us HAVE or
  sends the block if the block reaches it later, until we cancel.
- When the block arrives, or the last session that wants it ends, every peer that
  holds our want for it gets a cancel. The cancels a block's arrival sends to peers
  that were only asked want-have are `lazy`: nothing is lost if they go out a little
  later with other news for the peer (at worst the peer says HAVE once more), so the
  adapter may gather them. A cancel to a peer asked for the block itself is not lazy:
  the peer could be sending the block already.
- Only answers to our asks count: a presence for something we did not ask that peer
  about changes nothing.
- Which peers want a block too (their wantlists hold it: they are fetching it as well)
  is told to the sessions that want it, also when the peer asked before we did
  (the last `PEER_WANTS` digests are remembered).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .message import WantEntry

__all__ = ["BlockIn", "CoWant", "Event", "GotBlock", "Have", "Outcome", "PeerGone", "WantList"]

P = TypeVar("P", bound=Hashable)
RECENT_DIGESTS = 65536  # digests we asked for lately: a late duplicate is not "bad"
PEER_WANTS = 4096  # digests whose wanters we remember (peers that fetch them too)


@dataclass(frozen=True, slots=True)
class GotBlock(Generic[P]):
    """A wanted block arrived (verified by its digest) from `peer`."""

    cid: bytes
    data: bytes | memoryview  # a read-only view into its message, as decoded
    peer: P


@dataclass(frozen=True, slots=True)
class Have(Generic[P]):
    """`peer` says it holds `cid` (have=True) or does not yet (have=False)."""

    cid: bytes
    peer: P
    have: bool


@dataclass(frozen=True, slots=True)
class PeerGone(Generic[P]):
    """`peer` will not answer our wants any more (disconnected, dropped); `returns` if
    it may come back (its connection closed, as a relay's circuit does at a limit)."""

    peer: P
    reason: str
    returns: bool = False


@dataclass(frozen=True, slots=True)
class CoWant(Generic[P]):
    """`peer` wants `cid` too (wanting=True), or no longer: it is fetching it as well."""

    cid: bytes
    peer: P
    wanting: bool


Event = GotBlock[P] | Have[P] | PeerGone[P] | CoWant[P]


@dataclass(slots=True)
class Outcome(Generic[P]):
    """What a call asks of the adapter: entries to send per peer, events per session."""

    send: dict[P, list[WantEntry]] = field(default_factory=dict)
    tell: list[tuple[int, Event[P]]] = field(default_factory=list)
    lazy: dict[P, list[WantEntry]] = field(default_factory=dict)  # cancels that may wait

    def entry(self, peer: P, entry: WantEntry, *, lazy: bool = False) -> None:
        """Queue one wire entry for `peer` (`lazy`: see the module rules)."""
        (self.lazy if lazy else self.send).setdefault(peer, []).append(entry)


class BlockIn:
    """How `WantList.block` judged an arriving block."""

    WANTED = "wanted"
    DUPLICATE = "duplicate"  # asked for lately, arrived already
    UNWANTED = "unwanted"  # never asked for: forged, corrupt, or a confused peer


@dataclass(slots=True)
class _Want(Generic[P]):
    cids: set[bytes]
    sessions: set[int]
    have_asked: set[P] = field(default_factory=set)  # want-have out, no answer yet
    block_asked: set[P] = field(default_factory=set)  # want-block out, no DONT_HAVE yet
    has: set[P] = field(default_factory=set)  # said HAVE
    has_not: set[P] = field(default_factory=set)  # said DONT_HAVE (and keep our want)

    def holders(self) -> set[P]:
        """Peers whose wantlist holds our want: all get the cancel."""
        return self.have_asked | self.block_asked | self.has | self.has_not


_NO_WANT: _Want[Any] = _Want(set(), set())


class WantList(Generic[P]):
    """The engine's record of every block we want, keyed by sha2-256 digest."""

    def __init__(self) -> None:
        self._wants: dict[bytes, _Want[P]] = {}
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._wanted_by: OrderedDict[bytes, set[P]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._wants)

    def __contains__(self, digest: object) -> bool:
        return digest in self._wants

    def _get(self, session: int, cid: bytes, digest: bytes) -> _Want[P]:
        want = self._wants.get(digest)
        if want is None:
            want = self._wants[digest] = _Want(set(), set())
        want.cids.add(cid)
        want.sessions.add(session)
        self._remember(digest)
        return want

    def peer_wants(self, peer: P, digest: bytes, wanting: bool, out: Outcome[P]) -> None:
        """`peer`'s wantlist gained (or lost) this block: sessions that want it hear so."""
        wanters = self._wanted_by.get(digest)
        if wanting:
            if wanters is None:
                wanters = self._wanted_by[digest] = set()
                while len(self._wanted_by) > PEER_WANTS:
                    self._wanted_by.popitem(last=False)
            if peer in wanters:
                return
            wanters.add(peer)
        elif wanters is None or peer not in wanters:
            return
        else:
            wanters.discard(peer)
        want = self._wants.get(digest)
        if want is not None:
            for session in want.sessions:
                for ours in want.cids:  # our names for the block (CIDv0 or v1)
                    out.tell.append((session, CoWant(ours, peer, wanting)))

    def want_have(self, session: int, peer: P, wanted: Iterable[tuple[bytes, bytes]],
                  out: Outcome[P]) -> None:
        """Ask `peer` whether it holds each (cid, digest); answers known already are told."""
        for cid, digest in wanted:
            fresh = session not in self._wants.get(digest, _NO_WANT).sessions
            want = self._get(session, cid, digest)
            if fresh:
                for other in sorted(self._wanted_by.get(digest, ()), key=str):
                    out.tell.append((session, CoWant(cid, other, True)))
            if peer in want.has:
                out.tell.append((session, Have(cid, peer, True)))
            elif peer in want.has_not:
                out.tell.append((session, Have(cid, peer, False)))
            elif peer not in want.have_asked and peer not in want.block_asked:
                want.have_asked.add(peer)
                out.entry(peer, WantEntry(cid, want_have=True, send_dont_have=True))

    def want_block(self, session: int, peer: P, wanted: Iterable[tuple[bytes, bytes]],
                   out: Outcome[P]) -> None:
        """Ask `peer` for each (cid, digest)'s block."""
        for cid, digest in wanted:
            want = self._get(session, cid, digest)
            if peer in want.block_asked:
                continue  # asked already, for another session: the block reaches both
            if peer in want.has_not and peer not in want.has:
                # It said DONT_HAVE and keeps the want: this session hears the same now.
                out.tell.append((session, Have(cid, peer, False)))
                continue
            want.have_asked.discard(peer)
            want.block_asked.add(peer)
            out.entry(peer, WantEntry(cid, send_dont_have=True))

    def cancel(self, peer: P, cids: Iterable[tuple[bytes, bytes]], out: Outcome[P]) -> None:
        """Take our wants for these blocks back from `peer` (a better peer serves them)."""
        for cid, digest in cids:
            want = self._wants.get(digest)
            if want is None or peer not in want.holders():
                continue
            want.have_asked.discard(peer)
            want.block_asked.discard(peer)
            want.has_not.discard(peer)
            out.entry(peer, WantEntry(cid, cancel=True))

    def block(self, peer: P, digest: bytes, data: bytes | memoryview, out: Outcome[P]) -> str:
        """A block with this digest arrived from `peer`: a `BlockIn` verdict.

        A wanted block is told to every session that wants it (once per CID name) and
        cancelled at every other peer that holds our want.
        """
        want = self._wants.pop(digest, None)
        if want is None:
            return BlockIn.DUPLICATE if digest in self._recent else BlockIn.UNWANTED
        self._remember(digest)
        for session in want.sessions:
            for cid in want.cids:
                out.tell.append((session, GotBlock(cid, data, peer)))
        for other in want.holders() - {peer}:
            lazy = other not in want.block_asked
            for cid in want.cids:
                out.entry(other, WantEntry(cid, cancel=True), lazy=lazy)
        return BlockIn.WANTED

    def presence(self, peer: P, digest: bytes, have: bool, out: Outcome[P]) -> bool:
        """`peer` said HAVE or DONT_HAVE for a digest; False if we never asked it."""
        want = self._wants.get(digest)
        if want is None or peer not in want.holders():
            return False
        if have:
            want.has.add(peer)
            want.has_not.discard(peer)
            want.have_asked.discard(peer)
        else:
            want.has.discard(peer)
            want.has_not.add(peer)
            want.have_asked.discard(peer)
            want.block_asked.discard(peer)
        for session in want.sessions:
            for cid in want.cids:
                out.tell.append((session, Have(cid, peer, have)))
        return True

    def close_session(self, session: int, out: Outcome[P]) -> None:
        """A fetch ended: wants no other session shares are cancelled everywhere."""
        for digest, want in list(self._wants.items()):
            want.sessions.discard(session)
            if want.sessions:
                continue
            del self._wants[digest]
            for peer in want.holders():
                for cid in want.cids:
                    out.entry(peer, WantEntry(cid, cancel=True))

    def peer_gone(self, peer: P, reason: str, out: Outcome[P], *, returns: bool = False
                  ) -> None:
        """`peer`'s wantlist is gone with its connection: sessions that asked it hear so."""
        told: set[int] = set()
        for want in self._wants.values():
            if peer in want.holders():
                told.update(want.sessions)
            want.have_asked.discard(peer)
            want.block_asked.discard(peer)
            want.has.discard(peer)
            want.has_not.discard(peer)
        for session in sorted(told):
            out.tell.append((session, PeerGone(peer, reason, returns)))

    def peer_left(self, peer: P) -> None:
        """`peer`'s wantlist is gone (disconnected): it wants nothing of us any more."""
        for wanters in self._wanted_by.values():
            wanters.discard(peer)

    def asked_lately(self, digest: bytes) -> bool:
        """True if we asked for this block lately (we fetched it, we are not its source)."""
        return digest in self._recent

    def clear(self) -> None:
        """Forget everything (the service stops)."""
        self._wants.clear()
        self._wanted_by.clear()

    def _remember(self, digest: bytes) -> None:
        self._recent[digest] = None
        self._recent.move_to_end(digest)
        while len(self._recent) > RECENT_DIGESTS:
            self._recent.popitem(last=False)
