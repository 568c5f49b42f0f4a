"""The GossipSub v1.1 router: meshes, fanout, gossip, GRAFT/PRUNE, and what arrives.

Rules (libp2p/specs pubsub/gossipsub v1.0 and v1.1, in go-libp2p-pubsub's shape):
- Everything that changes the router's state is here; this file does no I/O and
  knows no clock. The adapter calls `add_peer`, `remove_peer`, `handle_rpc`,
  `publish`, `join`, `leave` and `heartbeat` with `now`, then sends what each peer's
  `Outbox` holds and delivers what `handle_rpc` returns.
- A received message is handled once: the forwarder's gate (rate limit, graylist),
  then topics we subscribe to, the seen cache (a copy whose id is in it is not even
  decoded: rpc.py), StrictSign (one signature check), the
  topic validator (ACCEPT, IGNORE, REJECT), and only ACCEPTed messages are cached and
  forwarded to the topic's mesh. REJECT and a bad signature cost the forwarder (P4),
  a first ACCEPTed delivery earns it credit (P2).
- A copy still queued for a peer that sends us the same message is withdrawn: the
  peer has it (js-libp2p's gossipsub leaves out the peers that sent a copy while it
  validated). The adapter sends what a batch of frames queued at the batch's end, so
  a peer whose copy arrived in the same batch is not sent ours.
- Our own messages are signed once, encoded once, and flood-published to every peer
  of the topic whose score is at least the publish threshold (go's default).
- The heartbeat keeps each mesh as go's does (v1.1): GRAFTs up to D below D_lo; above
  D_hi it keeps the D_score best-scored peers and the rest of D at random, with at
  least D_out peers we dialed where there are that many; at D_lo or more it GRAFTs
  peers we dialed while fewer than D_out are in the mesh; and every
  `opportunistic_graft_ticks` heartbeats, when the mesh's median score is below the
  opportunistic graft threshold, it GRAFTs a few better-scored peers. Peers we
  dialed cannot all be chosen by others, which is what makes an eclipse harder.
- A GRAFT refused because the mesh is full (D_hi, and the peer is not one we dialed)
  is PRUNEd with PX, so that the peer can find other members; one refused for its
  score or its backoff is PRUNEd without.
- Each IWANT we send holds its peer to a promise for one of the ids, picked at random
  (go's gossip tracer): a valid copy from anyone within `iwant_followup_s` keeps it;
  otherwise the heartbeat charges the peer one behaviour penalty unit. A peer that
  advertises what it does not send pays for the asking.
- Peers are the adapter's peer id strings; `add_peer` is told each peer's binary id
  for PX.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protobuf import len_field, varint_field
from ..scoring import ChatScoring, Validation
from . import rpc, signing
from .backoff import Backoff
from .mcache import MessageCache
from .outbox import DEFAULT_MAX_BYTES, MAX_FRAME, Outbox
from .score import PeerScores
from .seen import SeenCache

__all__ = ["Delivery", "GossipParams", "Router", "TopicValidator"]

# (topic, data, origin's binary id) -> the outcome, and what to hand on with the message
TopicValidator = Callable[[str, bytes, bytes], tuple[Validation, Any]]


@dataclass(frozen=True)
class GossipParams:
    """The router's numbers; the defaults are go-libp2p-pubsub's unless noted."""

    d: int = 6
    d_lo: int = 4
    d_hi: int = 12
    d_lazy: int = 6
    # IHAVE goes to this share of the topic's peers outside the mesh, if more than
    # d_lazy (v1.1 adaptive gossip dissemination).
    gossip_factor: float = 0.25
    d_score: int = 4  # mesh peers kept by score when the mesh is trimmed
    d_out: int = 2  # mesh peers that we dialed, kept or grafted where there are any
    opportunistic_graft_ticks: int = 60
    opportunistic_graft_peers: int = 2
    fanout_ttl_s: float = 60.0
    history: int = 5
    gossip_windows: int = 3
    seen_ttl_s: float = 120.0
    # Short backoffs so a restarted peer rejoins meshes quickly (go: 60 s and 10 s).
    prune_backoff_s: int = 10
    unsubscribe_backoff_s: int = 5
    graft_flood_s: float = 10.0
    max_ihave_length: int = 5000
    max_ihave_messages: int = 10
    max_iwant_retransmit: int = 3
    iwant_followup_s: float = 3.0
    px_peers: int = 16
    flood_publish: bool = True
    max_queue_bytes: int = DEFAULT_MAX_BYTES
    max_frame: int = MAX_FRAME

    def __post_init__(self) -> None:
        # go-libp2p-pubsub's own checks of these numbers (GossipSubParams.validate).
        if not 0 < self.d_lo <= self.d <= self.d_hi:
            raise ValueError("need 0 < d_lo <= d <= d_hi")
        if not 0 <= self.d_score <= self.d:
            raise ValueError("need 0 <= d_score <= d")
        if not 0 <= self.d_out < self.d_lo or self.d_out > self.d // 2:
            raise ValueError("need 0 <= d_out < d_lo and d_out <= d / 2")
        if self.opportunistic_graft_ticks < 1 or self.opportunistic_graft_peers < 0:
            raise ValueError("need opportunistic_graft_ticks >= 1 and _peers >= 0")
        if not 0 <= self.gossip_factor <= 1:
            raise ValueError("need 0 <= gossip_factor <= 1")


@dataclass(frozen=True)
class Delivery:
    """A message of a subscribed topic that passed every check, for the application."""

    topic: str
    data: bytes
    origin: bytes  # the binary id of the peer that signed it
    forwarder: str  # the peer it arrived from
    checked: Any = None  # what the topic's validator made of it
    outcome: Validation = Validation.ACCEPT


@dataclass
class _Peer:
    peer_bytes: bytes
    outbound: bool
    outbox: Outbox
    topics: set[str] = field(default_factory=set)
    ihaves: int = 0  # IHAVE messages this heartbeat
    iasked: int = 0  # ids we asked it for this heartbeat


def _graft_piece(topic: str) -> bytes:
    return len_field(3, len_field(1, topic.encode()))


def _prune_piece(topic: str, backoff: int, px: tuple[rpc.PxPeer, ...] = ()) -> bytes:
    body = [len_field(1, topic.encode())]
    body += [len_field(2, len_field(1, p.peer_id)) for p in px]
    body.append(varint_field(3, backoff))
    return len_field(4, b"".join(body))


def _ihave_piece(topic: str, ids: list[bytes]) -> bytes:
    return len_field(1, len_field(1, topic.encode()) + b"".join(len_field(2, i) for i in ids))


def _iwant_piece(ids: list[bytes]) -> bytes:
    return len_field(2, b"".join(len_field(1, i) for i in ids))


class Router:
    """One node's GossipSub state."""

    def __init__(self, *, peer_bytes: bytes, public_key: bytes,
                 sign: Callable[[bytes], bytes], scoring: ChatScoring,
                 params: GossipParams | None = None, seqno_start: int = 0,
                 rng: random.Random | None = None) -> None:
        self.params = params or GossipParams()
        self.scoring = scoring
        self.scores = PeerScores(scoring)
        self.peer_bytes = peer_bytes
        self._public_key = public_key
        self._sign = sign
        self._seqno = seqno_start
        self._rng = rng or random.Random()
        self.peers: dict[str, _Peer] = {}
        self.topic_peers: dict[str, set[str]] = {}
        self.subscriptions: set[str] = set()
        self.mesh: dict[str, set[str]] = {}
        self.fanout: dict[str, set[str]] = {}
        self._fanout_used: dict[str, float] = {}
        self.validators: dict[str, TopicValidator] = {}
        self.mcache = MessageCache(self.params.history, self.params.gossip_windows)
        self.seen = SeenCache(self.params.seen_ttl_s)
        self.backoff = Backoff()
        # Hooks, all synchronous: the forwarder gate (False drops a message unread),
        # invalid messages by cause, a validator that raised, and PX offers we accept.
        self.gate: Callable[[str], bool] = lambda peer: True
        self.on_invalid: Callable[[str, str, str], None] = lambda peer, topic, cause: None
        self.on_validator_error: Callable[[str, str, Exception], None] = (
            lambda topic, peer, exc: None)
        self.on_refused: Callable[[str], None] = lambda peer: None
        # A peer announced a subscription it did not hold: (peer, topic).
        self.on_subscribed: Callable[[str, str], None] = lambda peer, topic: None
        self.px_offers: list[rpc.PxPeer] = []
        # Peers whose outbox got something since the adapter last looked.
        self.dirty: set[str] = set()
        self.duplicates = 0
        self.withdrawn = 0  # queued copies not sent: the peer sent us the message first
        self.malformed = 0
        self._ticks = 0  # heartbeats so far, for opportunistic grafting
        # IWANT promises: message id -> {peer asked: when the promise breaks}
        self._promises: dict[bytes, dict[str, float]] = {}
        self.broken_promises = 0

    # peers

    def add_peer(self, peer: str, peer_bytes: bytes, *, outbound: bool = False) -> None:
        """A pubsub stream with `peer` is up: greet it with our subscriptions."""
        if peer in self.peers:
            return
        state = _Peer(peer_bytes, outbound,
                      Outbox(self.params.max_queue_bytes, self.params.max_frame))
        self.peers[peer] = state
        self.scores.add_peer(peer)
        self.greet(peer)

    def greet(self, peer: str) -> None:
        """Tell `peer` every topic we are in (again).

        Sent when a peer comes up, and again whenever it opens a new stream to us or
        we open a new one to it: a side whose connections all closed for a moment
        (one replaced by another) forgot the other's topics, while the other, which
        never saw it gone, would not repeat them. Subscriptions are a set at the
        receiver, so a repeat costs a few bytes and changes nothing.
        """
        state = self.peers.get(peer)
        if state is None:
            return
        for topic in sorted(self.subscriptions):
            state.outbox.push_subscription(rpc.subscription_field(rpc.SubOpt(True, topic)))
        if state.outbox:
            self.dirty.add(peer)

    def remove_peer(self, peer: str, now: float) -> None:
        """`peer` is gone: out of every mesh, fanout and topic."""
        state = self.peers.pop(peer, None)
        if state is None:
            return
        for topic in state.topics:
            self.topic_peers.get(topic, set()).discard(peer)
        for peers in (*self.mesh.values(), *self.fanout.values()):
            peers.discard(peer)
        self.scores.remove_peer(peer, now)
        self.dirty.discard(peer)

    def outbox(self, peer: str) -> Outbox | None:
        """The queue of a peer (None once it is gone)."""
        state = self.peers.get(peer)
        return None if state is None else state.outbox

    def peer_topics(self, peer: str) -> set[str]:
        """The topics a peer announced."""
        state = self.peers.get(peer)
        return set() if state is None else set(state.topics)

    def _push_control(self, peer: str, piece: bytes) -> None:
        state = self.peers.get(peer)
        if state is not None:
            state.outbox.push_control(piece)
            self.dirty.add(peer)

    def _push_message(self, peer: str, wire: bytes, msg_id: bytes) -> None:
        state = self.peers.get(peer)
        if state is None:
            return
        if state.outbox.push_message(wire, msg_id):
            self.dirty.add(peer)
        else:
            self.on_refused(peer)

    # our subscriptions

    def join(self, topic: str, now: float) -> None:
        """Subscribe to a topic and build its mesh (from its fanout first)."""
        if topic in self.subscriptions:
            return
        self.subscriptions.add(topic)
        sub = rpc.subscription_field(rpc.SubOpt(True, topic))
        for peer, state in self.peers.items():
            state.outbox.push_subscription(sub)
            self.dirty.add(peer)
        mesh = {p for p in self.fanout.pop(topic, set()) if self.scores.score(p) >= 0}
        self._fanout_used.pop(topic, None)
        if len(mesh) < self.params.d:
            mesh |= set(self._pick(topic, self.params.d - len(mesh), now, exclude=mesh))
        self.mesh[topic] = mesh
        for peer in mesh:
            self._push_control(peer, _graft_piece(topic))

    def leave(self, topic: str, now: float) -> None:
        """Unsubscribe: PRUNE the mesh with the unsubscribe backoff, and say so."""
        if topic not in self.subscriptions:
            return
        self.subscriptions.discard(topic)
        self.validators.pop(topic, None)
        backoff = self.params.unsubscribe_backoff_s
        for peer in self.mesh.pop(topic, set()):
            self.backoff.add(topic, peer, backoff, now)
            self._push_control(peer, _prune_piece(topic, backoff))
        sub = rpc.subscription_field(rpc.SubOpt(False, topic))
        for peer, state in self.peers.items():
            state.outbox.push_subscription(sub)
            self.dirty.add(peer)

    def _pick(self, topic: str, count: int, now: float, exclude: set[str], *,
              outbound: bool = False, above: float | None = None) -> list[str]:
        """Up to `count` random peers of `topic` fit to GRAFT: not in `exclude` nor in
        a backoff, with a score of at least 0 (above `above` when given), and only
        peers we dialed if `outbound`."""
        candidates = [p for p in self.topic_peers.get(topic, ())
                      if p not in exclude and not self.backoff.active(topic, p, now)
                      and (score := self.scores.score(p)) >= 0
                      and (above is None or score > above)
                      and (not outbound or self._dialed(p))]
        self._rng.shuffle(candidates)
        return candidates[:count]

    def _dialed(self, peer: str) -> bool:
        state = self.peers.get(peer)
        return state is not None and state.outbound

    # publishing

    def publish_targets(self, topic: str) -> list[str]:
        """The peers a message of ours on `topic` goes to now."""
        if self.params.flood_publish:
            threshold = self.scoring.publish_threshold
            return [p for p in self.topic_peers.get(topic, ())
                    if self.scores.score(p) >= threshold]
        if topic in self.mesh:
            return list(self.mesh[topic])
        return list(self.fanout.get(topic, ()))

    def has_room(self, topic: str, size: int) -> bool:
        """Whether a message of `size` bytes fits every target's queue now."""
        for peer in self.publish_targets(topic):
            state = self.peers.get(peer)
            if state is not None and not state.outbox.has_room(size):
                return False
        return True

    def publish(self, topic: str, data: bytes, now: float) -> bytes:
        """Sign and send a message of ours; its message id."""
        self._seqno += 1
        unsigned = rpc.Message(self.peer_bytes, data, self._seqno.to_bytes(8, "big"), (topic,))
        msg = signing.sign(unsigned, self._sign, self._public_key)
        msg_id = msg.msg_id
        wire = rpc.message_field(msg)
        self.seen.add(msg_id, now)
        self.mcache.put(msg_id, topic, wire)
        if topic not in self.subscriptions:
            if topic not in self.fanout:
                self.fanout[topic] = set(self._pick(topic, self.params.d, now, set()))
            self._fanout_used[topic] = now
        targets = set(self.publish_targets(topic))
        if not self.params.flood_publish and topic not in self.subscriptions:
            targets = set(self.fanout[topic])
        for peer in targets:
            self._push_message(peer, wire, msg_id)
        return msg_id

    # what peers send

    def handle_rpc(self, peer: str, frame: bytes | memoryview, now: float) -> list[Delivery]:
        """One RPC frame from `peer`: what to deliver to the application."""
        state = self.peers.get(peer)
        if state is None:
            return []
        try:
            message = rpc.decode_rpc(frame, seen=self.seen)
        except rpc.RpcError:
            self.malformed += 1
            self.scores.penalize(peer, 1.0)
            return []
        for sub in message.subscriptions:
            self._subscription(peer, state, sub, now)
        deliveries: list[Delivery] = []
        for msg_id in message.known:
            # Copies of messages seen already, left undecoded: counted as `_message`
            # counts them, each through the forwarder's gate first.
            self._had(state, msg_id)
            if self.gate(peer):
                self.duplicates += 1
        for msg in message.publish:
            self._message(peer, msg, now, deliveries)
        if message.control and self.scores.score(peer) >= self.scoring.graylist_threshold:
            self._control(peer, state, message.control, now)
        return deliveries

    def _subscription(self, peer: str, state: _Peer, sub: rpc.SubOpt, now: float) -> None:
        if sub.subscribe:
            new = sub.topic not in state.topics
            state.topics.add(sub.topic)
            self.topic_peers.setdefault(sub.topic, set()).add(peer)
            if new:
                self.on_subscribed(peer, sub.topic)
            # A peer joining a topic of ours while our mesh has room is grafted at once,
            # not at the next heartbeat: what we forward meanwhile would reach it by
            # neither path (the heartbeat grafts it before its gossip, which skips mesh
            # peers), as py-libp2p does on a subscription too.
            mesh = self.mesh.get(sub.topic)
            if mesh is not None and len(mesh) < self.params.d and peer not in mesh \
                    and not self.backoff.active(sub.topic, peer, now) \
                    and self.scores.score(peer) >= 0:
                mesh.add(peer)
                self._push_control(peer, _graft_piece(sub.topic))
            return
        state.topics.discard(sub.topic)
        peers = self.topic_peers.get(sub.topic)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self.topic_peers[sub.topic]
        self.mesh.get(sub.topic, set()).discard(peer)
        self.fanout.get(sub.topic, set()).discard(peer)

    def _message(self, peer: str, msg: rpc.Message, now: float,
                 deliveries: list[Delivery]) -> None:
        if not self.gate(peer):
            return
        topics = [t for t in msg.topics if t in self.subscriptions]
        if not topics:
            return
        msg_id = msg.msg_id
        if msg_id in self.seen or msg.from_id == self.peer_bytes:
            # A copy of one of ours comes back after its id left the seen cache: it is
            # still ours, not news.
            self.duplicates += 1
            self._had(self.peers[peer], msg_id)
            return
        if signing.check(msg) is not None:
            # Not marked seen: a genuine copy from an honest peer may follow.
            for topic in msg.topics:
                self.scores.invalid_message(peer, topic)
                self.on_invalid(peer, topic, "bad_signature")
            return
        self.seen.add(msg_id, now)
        if self._promises:
            self._promises.pop(msg_id, None)  # whoever brought it kept the promise
        wire: bytes | None = None
        for topic in topics:
            outcome, checked = self._validate(peer, topic, msg)
            if outcome is Validation.REJECT:
                self.scores.invalid_message(peer, topic)
                self.on_invalid(peer, topic, "rejected")
                continue
            deliveries.append(Delivery(topic, msg.data, msg.from_id, peer, checked, outcome))
            if outcome is Validation.IGNORE:
                continue
            self.scores.first_delivery(peer, topic)
            if wire is None:
                wire = rpc.message_field(msg)
                self.mcache.put(msg_id, topic, wire)
            for target in self.mesh.get(topic, ()):
                if target != peer and self.peers[target].peer_bytes != msg.from_id:
                    self._push_message(target, wire, msg_id)

    def _had(self, state: _Peer, msg_id: bytes) -> None:
        """The peer sent us a message: it has it, so a copy queued for it is unqueued."""
        if state.outbox.withdraw(msg_id):
            self.withdrawn += 1

    def _validate(self, peer: str, topic: str, msg: rpc.Message) -> tuple[Validation, Any]:
        validate = self.validators.get(topic)
        if validate is None:
            return Validation.ACCEPT, None
        try:
            return validate(topic, msg.data, msg.from_id)
        except Exception as exc:
            # A bug of ours, not the forwarder's fault: no penalty, and the message
            # goes on as if there were no validator.
            self.on_validator_error(topic, peer, exc)
            return Validation.ACCEPT, None

    def _control(self, peer: str, state: _Peer, control: rpc.Control, now: float) -> None:
        iwant = self._ihave(peer, state, control.ihave)
        if iwant:
            self._push_control(peer, _iwant_piece(iwant))
            promised = self._promises.setdefault(self._rng.choice(iwant), {})
            promised.setdefault(peer, now + self.params.iwant_followup_s)
        self._iwant(peer, control.iwant)
        for topic, px in self._graft(peer, control.graft, now):
            self._push_control(peer, _prune_piece(topic, self.params.prune_backoff_s,
                                                  self._px_for(topic, peer) if px else ()))
        for prune in control.prune:
            self._prune(peer, prune, now)

    def _ihave(self, peer: str, state: _Peer, ihaves: tuple[rpc.IHave, ...]) -> list[bytes]:
        if not ihaves or self.scores.score(peer) < self.scoring.gossip_threshold:
            return []
        state.ihaves += 1
        if state.ihaves > self.params.max_ihave_messages:
            return []
        room = self.params.max_ihave_length - state.iasked
        wanted: list[bytes] = []
        for ihave in ihaves:
            if ihave.topic not in self.mesh:
                continue
            wanted += [i for i in ihave.ids if i not in self.seen]
        self._rng.shuffle(wanted)
        wanted = wanted[: max(room, 0)]
        state.iasked += len(wanted)
        return wanted

    def _iwant(self, peer: str, ids: tuple[bytes, ...]) -> None:
        if not ids or self.scores.score(peer) < self.scoring.gossip_threshold:
            return
        for msg_id in ids:
            cached = self.mcache.get(msg_id)
            if cached is None:
                continue
            if cached.ask(peer) > self.params.max_iwant_retransmit:
                continue
            self._push_message(peer, cached.wire, msg_id)

    def _graft(self, peer: str, topics: tuple[str, ...], now: float
               ) -> list[tuple[str, bool]]:
        """Take GRAFTs; the topics to PRUNE back, each with whether to offer PX."""
        prune: list[tuple[str, bool]] = []
        for topic in topics:
            mesh = self.mesh.get(topic)
            if mesh is None or peer in mesh:
                continue  # unknown topics are ignored (spam hardening, as go)
            until = self.backoff.until(topic, peer)
            if until > now:
                # A GRAFT in its backoff costs a behaviour penalty unit (P7 in go), and
                # one more before go's flood cutoff: `graft_flood_s` after a PRUNE
                # with our backoff. (With our 10 s for both, every GRAFT inside a
                # backoff of ours counts as a flood.)
                self.scores.penalize(peer, 1.0)
                if now < until + self.params.graft_flood_s - self.params.prune_backoff_s:
                    self.scores.penalize(peer, 1.0)
                self.backoff.add(topic, peer, self.params.prune_backoff_s, now)
                prune.append((topic, False))
                continue
            if self.scores.score(peer) < 0:
                self.backoff.add(topic, peer, self.params.prune_backoff_s, now)
                prune.append((topic, False))
                continue
            if len(mesh) >= self.params.d_hi and not self.peers[peer].outbound:
                self.backoff.add(topic, peer, self.params.prune_backoff_s, now)
                prune.append((topic, True))  # full: other members may have room
                continue
            mesh.add(peer)
        return prune

    def _prune(self, peer: str, prune: rpc.Prune, now: float) -> None:
        self.mesh.get(prune.topic, set()).discard(peer)
        backoff = prune.backoff if prune.backoff is not None else self.params.prune_backoff_s
        self.backoff.add(prune.topic, peer, backoff, now)
        if prune.peers and self.scores.score(peer) >= self.scoring.accept_px_threshold:
            known = {state.peer_bytes for state in self.peers.values()}
            fresh = [p for p in prune.peers if p.peer_id not in known
                     and p.peer_id != self.peer_bytes]
            self.px_offers = (self.px_offers + fresh)[-self.params.px_peers:]

    def _px_for(self, topic: str, exclude: str) -> tuple[rpc.PxPeer, ...]:
        peers = [p for p in self.topic_peers.get(topic, ())
                 if p != exclude and self.scores.score(p) >= 0]
        self._rng.shuffle(peers)
        return tuple(rpc.PxPeer(self.peers[p].peer_bytes) for p in peers[: self.params.px_peers])

    # the heartbeat

    def heartbeat(self, now: float) -> None:
        """Once a second: decay scores, mend meshes and fanout, gossip, shift caches."""
        self.scores.decay(now)
        self._break_promises(now)
        self.backoff.expire(now)
        self.seen.expire(now)
        params = self.params
        self._ticks += 1
        for state in self.peers.values():
            state.ihaves = state.iasked = 0
        for topic, mesh in self.mesh.items():
            for peer in [p for p in mesh if self.scores.score(p) < 0]:
                mesh.discard(peer)
                self.backoff.add(topic, peer, params.prune_backoff_s, now)
                self._push_control(peer, _prune_piece(topic, params.prune_backoff_s))
            if len(mesh) < params.d_lo:
                self._graft_all(topic, mesh, self._pick(topic, params.d - len(mesh), now,
                                                        exclude=mesh))
            if len(mesh) > params.d_hi:
                self._trim(topic, mesh, now)
            if len(mesh) >= params.d_lo:
                dialed = sum(1 for p in mesh if self._dialed(p))
                if dialed < params.d_out:
                    self._graft_all(topic, mesh, self._pick(
                        topic, params.d_out - dialed, now, exclude=mesh, outbound=True))
            if self._ticks % params.opportunistic_graft_ticks == 0 and len(mesh) > 1:
                self._graft_better(topic, mesh, now)
            self._gossip(topic, mesh)
        for topic in list(self.fanout):
            if self._fanout_used.get(topic, 0.0) + params.fanout_ttl_s < now:
                del self.fanout[topic]
                self._fanout_used.pop(topic, None)
                continue
            peers = self.fanout[topic]
            threshold = self.scoring.publish_threshold
            for peer in [p for p in peers if p not in self.topic_peers.get(topic, ())
                         or self.scores.score(p) < threshold]:
                peers.discard(peer)
            if len(peers) < params.d:
                peers |= set(self._pick(topic, params.d - len(peers), now, exclude=peers))
            self._gossip(topic, peers)
        self.mcache.shift()

    def _break_promises(self, now: float) -> None:
        """Charge each peer one penalty unit per IWANT promise it let run out."""
        for msg_id, promised in list(self._promises.items()):
            for peer, deadline in list(promised.items()):
                if deadline <= now:
                    del promised[peer]
                    self.scores.penalize(peer, 1.0)
                    self.broken_promises += 1
            if not promised:
                del self._promises[msg_id]

    def _graft_all(self, topic: str, mesh: set[str], peers: list[str]) -> None:
        for peer in peers:
            mesh.add(peer)
            self._push_control(peer, _graft_piece(topic))

    def _trim(self, topic: str, mesh: set[str], now: float) -> None:
        """Above D_hi: keep the D_score best by score and the rest of D at random, with
        D_out peers we dialed among them where the mesh has that many (go's
        heartbeat); PRUNE the others with PX."""
        params = self.params
        ranked = list(mesh)
        self._rng.shuffle(ranked)  # ties in score fall at random
        ranked.sort(key=self.scores.score, reverse=True)
        rest = ranked[params.d_score:]
        self._rng.shuffle(rest)
        ranked[params.d_score:] = rest
        keep = ranked[:params.d]
        short = params.d_out - sum(1 for p in keep if self._dialed(p))
        if short > 0:
            # Dialed peers from beyond D take the places of the last kept ones that
            # we did not dial (the random ones before the best-scored).
            extra = [p for p in ranked[params.d:] if self._dialed(p)][:short]
            undialed = [p for p in keep if not self._dialed(p)]
            out = set(undialed[len(undialed) - len(extra):])
            keep = [p for p in keep if p not in out] + extra
        kept = set(keep)
        for peer in ranked:
            if peer in kept:
                continue
            mesh.discard(peer)
            self.backoff.add(topic, peer, params.prune_backoff_s, now)
            self._push_control(peer, _prune_piece(topic, params.prune_backoff_s,
                                                  self._px_for(topic, peer)))

    def _graft_better(self, topic: str, mesh: set[str], now: float) -> None:
        """Opportunistic grafting (v1.1): when the mesh's median score is below the
        threshold, GRAFT a few peers scored above that median, so that a mesh filled
        with peers that relay nothing first (a sybil's) is mended by the scores."""
        scores = sorted(self.scores.score(p) for p in mesh)
        median = scores[len(scores) // 2]
        if median >= self.scoring.opportunistic_graft_threshold:
            return
        self._graft_all(topic, mesh, self._pick(
            topic, self.params.opportunistic_graft_peers, now, exclude=mesh, above=median))

    def _gossip(self, topic: str, exclude: set[str]) -> None:
        ids = self.mcache.gossip_ids(topic)
        if not ids:
            return
        ids = ids[: self.params.max_ihave_length]
        threshold = self.scoring.gossip_threshold
        candidates = [p for p in self.topic_peers.get(topic, ())
                      if p not in exclude and self.scores.score(p) >= threshold]
        self._rng.shuffle(candidates)
        piece = _ihave_piece(topic, ids)
        count = max(self.params.d_lazy, int(self.params.gossip_factor * len(candidates)))
        for peer in candidates[:count]:
            self._push_control(peer, piece)
