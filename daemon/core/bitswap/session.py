"""One fetch's choice of peers: who is asked whether it has a block, who is asked for it.

A bitswap session, sans-IO (the idea of boxo's sessions, sized for a chat room). The
adapter's fetch task owns one `Session`: it reports what the peers answered
(`block`, `have`, `peer_gone`, `rejoin`, `set_direct`, `set_legacy`) and asks `plan`
which wire wants to send now. Time is an argument; nothing here reads a clock.

Rules:
- Every peer of the session is asked want-have (with send-dont-have) for every block
  the fetch needs next (`frontier` of them). A peer that lacks a block keeps the want
  and says HAVE once the block reaches it, so members that fetch the same image learn
  from each other, block by block, who can serve what: they serve each other from the
  first block on, not after they hold the whole file.
- A block is asked (want-block) of one peer that said HAVE, chosen by tier, then load:
  direct peers before relayed ones (a relay limits bytes and time and is slow),
  and room members before `fallback` peers (the original poster serves only what no
  other member has yet). The fetch waits for a busy peer of the best tier rather
  than go down a tier.
- Each peer has a window of blocks in flight: `window` for members, `fallback_window`
  for fallback peers, `relayed_window` over a relay, so that a cut circuit loses
  little and a relay is never asked to carry more than a few blocks at once.
- Members fetching the same image at the same time split what only the original
  poster has: a peer whose wantlist holds a block too (`wanted_by`) is fetching it,
  and of the peers fetching a block, one chosen by rendezvous hashing of the block and
  the peer ids takes it from the poster; the others wait up to `defer` seconds for its
  HAVE (or 4 times as long as the poster took for our own blocks lately, if longer,
  up to `max_defer`: on a loaded machine the others' blocks come as slowly), then take
  it from the poster themselves. Blocks asked of fallback peers are
  taken in an order of this session's own (seeded), so that members spread their
  asks over the file.
- A holder of a better tier takes over an open ask: a direct peer that says HAVE for
  a block asked of a relayed peer, a member for a block asked of the poster. The old
  ask is cancelled (a poster that held the block back for a member never sends it).
- A block asked more than `stall` seconds ago is asked of one more peer too.
- Peers on bitswap 1.0/1.1 (`set_legacy`) cannot answer want-have: they are asked for
  blocks as if they had said HAVE, after the peers that did.
- While the fallback peers are the session's only live peers (a room of two: the
  author is the only one to ask), they are presumed to hold every block (an author
  imported the whole image) and asked want-block at once, without a want-have round
  first: two round trips fewer before the first leaf's bytes. A DONT_HAVE ends the
  presumption for that block. They keep `fallback_window`: a member of a large room
  that is connected to the author alone looks the same, and with a member's window it
  took a whole copy from the author at once (fanout bench: 2.1x the poster's upload,
  all members done in 11 s instead of 4-6). With members in the session, the rules
  above apply.
- Likewise, a session's only live peer (a member or not) is presumed to hold every
  block and asked want-block at once, within its window: with nobody else to ask,
  want-have would tell nothing that want-block with send-dont-have does not, a round
  trip later (boxo asks want-block of one peer and want-have of the others). Two
  rounds fewer for a 10 MB fetch from one peer: the root, then its leaves. Once a
  second peer is live, every peer is asked want-have first again.
- `plan` reports the fetch stuck (`Plan.stuck`) once some block has no peer that has
  it or may still get it: every peer said DONT_HAVE or went away (and did not come back
  within `rejoin_s`, if it went away with its connection), for `patience` seconds.
  Within `patience` the fetch waits for a HAVE, since the peers keep our want-have.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Plan", "Session", "SessionLimits"]

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How much one session asks of each peer, and how long it waits."""

    window: int = 32  # blocks in flight at a direct room member
    fallback_window: int = 4  # ... at a fallback peer (the original poster)
    relayed_window: int = 2  # ... at a peer reached only through a relay
    stall: float = 5.0  # a block asked this long ago is asked of one more peer
    frontier: int = 256  # blocks asked about (want-have) at once
    patience: float = 0.0  # how long to wait for a HAVE once every peer said DONT_HAVE
    rejoin_s: float = 10.0  # how long a gone peer may take to come back
    max_rejoins: int = 16
    rejoin_settle_s: float = 0.5  # a peer back sooner is the connection that just failed
    defer: float = 0.5  # how long to wait for a co-fetcher's HAVE before asking the poster
    max_defer: float = 3.0  # ... at most, however slow the poster's blocks arrive


@dataclass(slots=True)
class Plan(Generic[P]):
    """The wants to send now, per peer; `stuck` says why the fetch cannot go on."""

    want_have: dict[P, list[bytes]] = field(default_factory=dict)
    want_block: dict[P, list[bytes]] = field(default_factory=dict)
    cancel: dict[P, list[bytes]] = field(default_factory=dict)
    stuck: str | None = None
    # Peers asked now that had nothing of ours to answer before (no block in flight,
    # no want-have open): the fetch waits on these wants alone, so they go out at once.
    idle: set[P] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        """True if nothing is to be sent."""
        return not (self.want_have or self.want_block or self.cancel)


@dataclass(slots=True)
class _Peer:
    direct: bool = True
    fallback: bool = False
    legacy: bool = False  # no presences (bitswap 1.0/1.1)
    window: int | None = None  # a cap of its own (a relay's limits), if any
    in_flight: set[bytes] = field(default_factory=set)
    asked_have: set[bytes] = field(default_factory=set)  # want-have out, no answer yet
    has: set[bytes] = field(default_factory=set)
    has_not: set[bytes] = field(default_factory=set)
    wants: set[bytes] = field(default_factory=set)  # its wantlist holds these too
    gone: str | None = None
    gone_at: float = 0.0
    returns: bool = False  # gone with its connection, which may come back
    rejoins: int = 0
    blocks: int = 0  # blocks this peer delivered to the session


@dataclass(slots=True)
class _PlanView(Generic[P]):
    """What one `plan` looks up again and again (see `Session._view`)."""

    holders: dict[bytes, list[tuple[P, _Peer]]] = field(default_factory=dict)
    rank: dict[P, tuple[tuple[bool, bool, bool], int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Ask(Generic[P]):
    first: float  # when the block was first asked (or last asked anew)
    peers: list[P]


class Session(Generic[P]):
    """The peer selection of one fetch (see the module rules)."""

    def __init__(self, peers: Iterable[P], *, fallback: Iterable[P] = (),
                 limits: SessionLimits | None = None, seed: int | None = None,
                 me: P | None = None) -> None:
        self.limits = limits or SessionLimits()
        self._me = me
        self._peers: dict[P, _Peer] = {}
        for peer in peers:
            self._peers.setdefault(peer, _Peer())
        for peer in fallback:
            self._peers.setdefault(peer, _Peer()).fallback = True
        self._asked: dict[bytes, _Ask[P]] = {}
        self._order: dict[bytes, float] = {}
        self._rng = random.Random(seed)
        self._waiting_since: float | None = None
        self._share = self.limits.window
        self._presume_fallback = False  # see `plan`
        self._presume_alone = False  # ... and the rules: the only live peer is presumed
        self._deferred: dict[bytes, float] = {}  # cid -> since when only a fallback has it
        self._fallback_latency = 0.0  # moving average: want-block to block, fallback peers
        self.moved_to_direct = 0  # block asks moved off relayed peers to direct ones

    # ----------------------------------------------------------------------------------
    # What the peers said

    @property
    def peers(self) -> list[P]:
        """Every peer of the session, gone or not."""
        return list(self._peers)

    def is_direct(self, peer: P) -> bool:
        """True unless the peer is known to be reached only through a relay."""
        state = self._peers.get(peer)
        return state is None or state.direct

    def served(self) -> dict[P, int]:
        """Blocks each peer delivered to this session."""
        return {peer: state.blocks for peer, state in self._peers.items() if state.blocks}

    def gone_peers(self) -> list[P]:
        """Peers gone that may still come back (`rejoin` them once connected again)."""
        return [peer for peer, state in self._peers.items()
                if state.gone is not None and state.returns
                and state.rejoins < self.limits.max_rejoins]

    def block(self, cid: bytes, peer: P | None, now: float | None = None) -> None:
        """A block the fetch wanted arrived (from `peer`; from another fetch's ask too)."""
        ask = self._asked.pop(cid, None)
        state = self._peers.get(peer) if peer is not None else None
        if ask is not None and now is not None and state is not None and state.fallback:
            took = max(0.0, now - ask.first)
            self._fallback_latency = took if not self._fallback_latency \
                else 0.75 * self._fallback_latency + 0.25 * took
        self._order.pop(cid, None)
        self._deferred.pop(cid, None)
        self._waiting_since = None
        for state in self._peers.values():
            state.in_flight.discard(cid)
            state.asked_have.discard(cid)
            state.has.discard(cid)
            state.has_not.discard(cid)
            state.wants.discard(cid)
        if peer is not None and peer in self._peers:
            self._peers[peer].blocks += 1

    def have(self, peer: P, cid: bytes, have: bool) -> None:
        """`peer` said HAVE (have=True) or DONT_HAVE for `cid`."""
        state = self._peers.get(peer)
        if state is None:
            return
        state.asked_have.discard(cid)
        if have:
            state.has.add(cid)
            state.has_not.discard(cid)
            self._waiting_since = None
            return
        state.has.discard(cid)
        state.has_not.add(cid)
        if cid in state.in_flight:
            state.in_flight.discard(cid)
            self._drop_ask(cid, peer)

    def wanted_by(self, peer: P, cid: bytes, wanting: bool) -> None:
        """`peer`'s wantlist holds `cid` (wanting=True) or no longer: it fetches it too."""
        state = self._peers.get(peer)
        if state is None:
            return
        if wanting:
            state.wants.add(cid)
        else:
            state.wants.discard(cid)

    def peer_gone(self, peer: P, reason: str, now: float, *, returns: bool = False) -> None:
        """`peer` cannot serve us now: what it was asked goes to others. With `returns`
        (its connection closed) it may come back within `rejoin_s`."""
        state = self._peers.get(peer)
        if state is None:
            return
        if state.gone is not None:
            state.returns = state.returns or returns
            return
        state.gone = reason
        state.gone_at = now
        state.returns = returns
        for cid in state.in_flight:
            self._drop_ask(cid, peer)
        state.in_flight.clear()
        # Its wantlist died with the connection: ask again once it is back.
        state.asked_have.clear()
        state.has_not.clear()
        state.wants.clear()

    def rejoin(self, peer: P, now: float) -> bool:
        """A gone peer is connected: take it back (True) if it went away with its
        connection and did not just leave (the connection seen may be the dying one)."""
        state = self._peers.get(peer)
        if state is None or state.gone is None or not state.returns \
                or state.rejoins >= self.limits.max_rejoins:
            return False
        if now - state.gone_at < self.limits.rejoin_settle_s:
            return False
        state.gone = None
        state.rejoins += 1
        return True

    def set_direct(self, peer: P, direct: bool, *, window: int | None = None) -> None:
        """Whether `peer` is reached over a direct connection (True) or only a relay;
        `window` caps its blocks in flight further (a relay's byte limit allows few)."""
        state = self._peers.get(peer)
        if state is not None:
            state.direct = direct
            state.window = window

    def set_legacy(self, peer: P) -> None:
        """`peer` speaks bitswap 1.0/1.1: it answers no want-have."""
        state = self._peers.get(peer)
        if state is not None:
            state.legacy = True
            state.asked_have.clear()

    def _drop_ask(self, cid: bytes, peer: P) -> None:
        ask = self._asked.get(cid)
        if ask is not None and peer in ask.peers:
            ask.peers.remove(peer)
            if not ask.peers:
                del self._asked[cid]

    # ----------------------------------------------------------------------------------
    # What to send

    def _capacity(self, state: _Peer) -> int:
        limits = self.limits
        if not state.direct:
            window = limits.relayed_window
        else:
            window = limits.fallback_window if state.fallback else limits.window
        if state.window is not None:
            window = min(window, state.window)
        # No peer takes more than its share while others may have the blocks too: the
        # first HAVEs to arrive must not take every block before the next ones do.
        return max(1, min(window, self._share))

    def _reckon_share(self, frontier: set[bytes], live: list[tuple[P, _Peer]]) -> None:
        contenders = sum(
            1 for _, state in live
            if state.legacy or not (frontier.isdisjoint(state.has)
                                    and frontier.isdisjoint(state.asked_have)
                                    and frontier.isdisjoint(state.in_flight)))
        self._share = -(-len(frontier) // max(1, contenders))

    @staticmethod
    def _tier(state: _Peer) -> tuple[bool, bool, bool]:
        # Direct before relayed, members before fallback, HAVE before presumed (legacy).
        return (not state.direct, state.fallback, state.legacy)

    def _presumed(self, state: _Peer) -> bool:
        """True for a peer taken to hold every block it did not say DONT_HAVE for."""
        return state.legacy or self._presume_alone \
            or (self._presume_fallback and state.fallback)

    def _view(self, frontier: list[bytes], frontier_set: set[bytes],
              live: list[tuple[P, _Peer]]) -> _PlanView[P]:
        """Who has each block of the frontier, and each live peer's tier and capacity:
        built once per `plan`, since nothing a plan does changes them (only loads)."""
        view: _PlanView[P] = _PlanView()
        for peer, state in live:
            view.rank[peer] = (self._tier(state), self._capacity(state))
            if self._presumed(state):
                cids: Iterable[bytes] = (cid for cid in frontier
                                         if cid in state.has or cid not in state.has_not)
            else:
                cids = frontier_set.intersection(state.has)
            for cid in cids:
                view.holders.setdefault(cid, []).append((peer, state))
        return view

    @staticmethod
    def _holders(view: _PlanView[P], cid: bytes, exclude: Sequence[P]) -> list[tuple[P, _Peer]]:
        return [(peer, state) for peer, state in view.holders.get(cid, ())
                if peer not in exclude]

    @staticmethod
    def _choose(view: _PlanView[P], holders: list[tuple[P, _Peer]]) -> tuple[P, _Peer] | None:
        """The least loaded of the (non-empty) holders in their best tier, or None while
        all of those are busy."""
        best = min(view.rank[peer][0] for peer, _ in holders)
        chosen = holders[0]
        chosen_load = math.inf
        chosen_capacity = 0
        for peer, state in holders:  # the first of the least loaded, in the peers' order
            tier, capacity = view.rank[peer]
            if tier != best:
                continue
            load = len(state.in_flight) / capacity
            if load < chosen_load:
                chosen, chosen_load, chosen_capacity = (peer, state), load, capacity
        if len(chosen[1].in_flight) >= chosen_capacity:
            return None
        return chosen

    def _ask(self, plan: Plan[P], cid: bytes, peer: P, state: _Peer, now: float,
             also: list[P]) -> None:
        state.in_flight.add(cid)
        self._asked[cid] = _Ask(now, [*also, peer])
        plan.want_block.setdefault(peer, []).append(cid)

    def _ordered(self, frontier: Sequence[bytes]) -> list[bytes]:
        # Each session looks at the blocks in a random order of its own, so that
        # sessions fetching the same file at once start on different blocks.
        for cid in frontier:
            if cid not in self._order:
                self._order[cid] = self._rng.random()
        return sorted(frontier, key=lambda cid: self._order[cid])

    def plan(self, wanted: Sequence[bytes], now: float) -> Plan[P]:
        """The wants to send now for the blocks the fetch still needs (`wanted`)."""
        plan: Plan[P] = Plan()
        frontier = list(wanted[: self.limits.frontier])
        frontier_set = set(frontier)
        live = [(peer, state) for peer, state in self._peers.items() if state.gone is None]
        idle = {peer for peer, state in live if not state.in_flight and not state.asked_have}
        self._presume_fallback = bool(live) and all(state.fallback for _, state in live)
        self._presume_alone = len(live) == 1
        for peer, state in live:
            if self._presumed(state):
                continue
            known = state.has | state.has_not | state.asked_have | state.in_flight
            unasked = [cid for cid in frontier if cid not in known]
            if unasked:
                state.asked_have.update(unasked)
                plan.want_have[peer] = unasked
        self._reckon_share(frontier_set, live)
        view = self._view(frontier, frontier_set, live)
        unserved: list[bytes] = []
        for cid in self._ordered(frontier):
            ask = self._asked.get(cid)
            if ask is not None and now - ask.first < self.limits.stall:
                self._move_up(plan, view, cid, ask, now)
                continue
            holders = self._holders(view, cid, ask.peers if ask is not None else ())
            if not holders:
                if ask is None:
                    unserved.append(cid)
                continue
            if ask is None and all(state.fallback for _, state in holders) \
                    and not self._mine_to_take(cid, now):
                continue  # a member fetching it too takes it from the poster
            chosen = self._choose(view, holders)
            if chosen is None:
                continue  # the best holders are busy; a block arriving frees a slot
            self._ask(plan, cid, *chosen, now, ask.peers if ask is not None else [])
        plan.stuck = self._stuck(unserved, now)
        plan.idle = idle & (plan.want_block.keys() | plan.want_have.keys())
        return plan

    def _mine_to_take(self, cid: bytes, now: float) -> bool:
        """True if this session should take `cid` from a fallback peer now."""
        if self._me is None:
            return True
        since = self._deferred.setdefault(cid, now)
        defer = min(max(self.limits.defer, 4 * self._fallback_latency), self.limits.max_defer)
        if now - since >= defer:
            return True  # its taker has not said HAVE in time: take it ourselves
        fetchers = [peer for peer, state in self._peers.items()
                    if state.gone is None and not state.fallback and cid in state.wants]
        return min([self._me, *fetchers], key=lambda peer: _rendezvous(cid, peer)) == self._me

    def _move_up(self, plan: Plan[P], view: _PlanView[P], cid: bytes, ask: _Ask[P],
                 now: float) -> None:
        """Move an open ask to a holder of a better tier: a direct peer over relayed ones,
        a member over the poster (which may be holding the block back for a member)."""
        best_asked = min(self._tier(self._peers[peer]) for peer in ask.peers)
        holders = [(peer, state) for peer, state in self._holders(view, cid, ask.peers)
                   if view.rank[peer][0][:2] < best_asked[:2]]
        if not holders:
            return
        chosen = self._choose(view, holders)
        if chosen is None:
            return
        if any(not self._peers[peer].direct for peer in ask.peers) and chosen[1].direct:
            self.moved_to_direct += 1
        for peer in ask.peers:
            self._peers[peer].in_flight.discard(cid)
            plan.cancel.setdefault(peer, []).append(cid)
        del self._asked[cid]
        self._ask(plan, cid, *chosen, now, [])

    def _stuck(self, unserved: list[bytes], now: float) -> str | None:
        """Why the fetch cannot go on, or None while it can (or may) go on."""
        if not unserved:
            self._waiting_since = None
            return None
        cid = unserved[0]
        for state in self._peers.values():
            if state.gone is None and cid in state.asked_have:
                return None  # an answer is on its way
            if state.gone is not None and state.returns \
                    and state.rejoins < self.limits.max_rejoins \
                    and now - state.gone_at < self.limits.rejoin_s:
                return None  # it may come back
        if self._waiting_since is None:
            self._waiting_since = now
        if now - self._waiting_since < self.limits.patience:
            return None  # the peers keep our want-have: a HAVE may come
        reasons = []
        for peer, state in self._peers.items():
            if state.gone is not None:
                reasons.append(f"{peer}: {state.gone}")
            else:
                reasons.append(f"{peer}: does not have it")
        return "; ".join(reasons) if reasons else "no peers"


def _rendezvous(cid: bytes, peer: object) -> bytes:
    """Rendezvous hash of a block and a peer: every peer ranks the same peers alike."""
    return hashlib.blake2b(cid + str(peer).encode(), digest_size=8).digest()
