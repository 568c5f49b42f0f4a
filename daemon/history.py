"""Room history: the joined rooms, their clocks and nicks, what we publish, what we take in.

Rules:
- `History` owns the joined rooms (one set, loaded from the store at start and written
  through on every change), each room's Lamport clock and recent authors, the nick on
  each author's newest message, the queue of our own messages waiting to be published,
  the subscriber feeds, and the buffer of verified envelopes a failing store could not
  take. Its tasks (`run`) are the only ones that publish, retry store writes and
  checkpoint the store's WAL: from a worker thread, once CHECKPOINT_COMMITS commits
  (by anyone) went into it, or CHECKPOINT_IDLE_S after the last checkpoint if fewer
  did, so that no commit stalls the event loop with a checkpoint's fsyncs
  (adapters/store.py).
- Every state change happens in synchronous code between awaits, so no task sees half
  an update.
- `publish` returns only after its message is committed to the store; getting it out
  to the room is the publish task's job from then on.
- Everything from the network is decoded and verified before it is stored; what fails
  is dropped and counted by reason in `stats.rejected`.
- A store that fails (full disk, damaged page) never stops intake: verified envelopes
  wait in a bounded buffer and one task retries the write with back-off. Once a write
  succeeds, `on_store_recovered` asks for every room to be synced again, to fetch what
  the buffer could not hold.
- History knows nothing of the services above it. What they want to hear of is a
  hook, set by whoever wires the daemon together (node.py): a gap in a room's clock
  (`on_gap`), a new image message (`on_image`), a store that takes writes again
  (`on_store_recovered`).
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from .adapters import timers
from .adapters.identity import Identity
from .adapters.p2p import GossipMessage, P2PNetwork
from .adapters.store import Store
from .core import envelope as env_codec
from .core import ticks
from .core.envelope import CHAT_KINDS, Envelope, EnvelopeError
from .core.rooms import RoomState, check_room_name, room_of_topic, topic_for
from .core.scoring import Validation, judge
from .core.store_health import Backoff, PendingEnvelopes, StoreHealth
from .errors import (
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    NotInRoom,
    ResponseTooLarge,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

# How many inbound gossip messages one store transaction takes at most.
INBOUND_BATCH = 256
# WAL checkpoints (see the rules): how often the task looks, after how many commits it
# checkpoints (a commit adds 1-10 pages: about 0.5-4 MB of WAL), and how long a few
# commits wait at most.
CHECKPOINT_POLL_S = 1.0
CHECKPOINT_COMMITS = 100
CHECKPOINT_IDLE_S = 30.0


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def _usable_nick(stored: str | None) -> str:
    """A nick saved before the nick rule existed may break it: then there is none."""
    try:
        return env_codec.check_nick(stored) if stored else ""
    except EnvelopeError:
        log.warning("the saved nick %r breaks the nick rule; set a new one with "
                    "'p2pctl nick NAME'", stored)
        return ""


def message_view(env: Envelope, unavailable: str | None = None) -> dict[str, Any]:
    """The JSON message object of INTERFACE.md.

    `unavailable` is why an image message's bytes were refused (they are not what
    the message says); it shows as `image.unavailable`.
    """
    view: dict[str, Any] = {
        "id": env.id.hex(),
        "room": env.room,
        "author": env.author_text,
        "nick": env.nick,
        "ts": env.ts_ms,
        "lamport": env.lamport,
        "kind": env.kind,
        "text": env.body.get("text", env.body.get("caption", "")),
    }
    if env.kind == "image":
        body = env.body
        view["image"] = {
            "cid": body["cid"],
            "filename": body["filename"],
            "mime": body["mime"],
            "size": body["size"],
            "width": body["width"],
            "height": body["height"],
            "thumbnail": base64.b64encode(body["thumbnail"]).decode("ascii"),
        }
        if unavailable is not None:
            view["image"]["unavailable"] = unavailable
    return view


@dataclass
class Subscription:
    """A live feed of new chat messages for one RPC client."""

    id: str
    rooms: frozenset[str] | None  # None: every room the node is in, now or later
    send: trio.MemorySendChannel[dict[str, Any]]
    receive: trio.MemoryReceiveChannel[dict[str, Any]]
    overflowed: bool = False

    def wants(self, room: str) -> bool:
        """True if messages of the room belong in this feed."""
        return self.rooms is None or room in self.rooms


@dataclass
class HistoryStats:
    """Counters for `status`."""

    rejected: Counter[str] = field(default_factory=Counter)
    received_new: int = 0
    received_duplicate: int = 0
    sent: int = 0
    subscriptions_overflowed: int = 0
    gaps_suspected: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0


def _ignore(*_args: object) -> None:
    return None


class History:
    """The rooms this node is in and their messages, in and out."""

    def __init__(self, identity: Identity, store: Store, network: P2PNetwork, *,
                 default_nick: str, subscriber_buffer: int) -> None:
        self.identity = identity
        self.store = store
        self.network = network
        self.stats = HistoryStats()
        self.subscriber_buffer = subscriber_buffer
        self._rooms: dict[str, RoomState] = {}
        self._joined: set[str] = set(store.joined_rooms())
        # The nick on each author's newest message heard, with that message's ts.
        self._nicks: dict[str, tuple[str, int]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._next_subscription = 1
        self._outbound: deque[tuple[str, bytes]] = deque()
        self._outbound_ready = trio.Event()
        self.store_health = StoreHealth()
        self._pending = PendingEnvelopes()
        self._store_retry = Backoff()
        self._store_wakeup = trio.Event()
        store.on_error = self._on_store_error
        self.nick_name = _usable_nick(store.get_setting("nick")) or default_nick
        # Hooks for the services above (see the module's rules).
        self.on_gap: Callable[[str, str], None] = _ignore
        self.on_image: Callable[[Envelope], None] = _ignore
        self.on_store_recovered: Callable[[list[str]], None] = _ignore
        for room in self._joined:
            self._room_state(room)

    # lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Publish our messages and retry held store writes until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publish_outbound)
                nursery.start_soon(self._retry_store_writes)
                nursery.start_soon(self._checkpoint_wal)
                task_status.started()
                await trio.sleep_forever()
        finally:
            for sub in list(self._subscriptions.values()):
                sub.send.close()

    # rooms

    def joined_rooms(self) -> list[str]:
        """Rooms this node is in."""
        return sorted(self._joined)

    def is_joined(self, room: str) -> bool:
        """True if this node is in `room`."""
        return room in self._joined

    def room(self, room: object) -> str:
        """The name of a joined room, or NotInRoom with the way in."""
        name = check_room_name(room)
        if name not in self._joined:
            raise NotInRoom(f"not in room {name!r}; join it first (p2pctl join {name})")
        return name

    def join(self, room: str) -> bool:
        """Join `room` (persisted) and post our join message; False if already in it."""
        if room in self._joined:
            return False
        self.store.join_room(room, now_ms())
        self._joined.add(room)
        self._room_state(room)
        self._publish_local(room, "join", self._nick_body())
        return True

    def leave(self, room: str) -> None:
        """Post our leave message and leave `room`; its history stays in the store."""
        self._publish_local(room, "leave", self._nick_body())
        self.store.leave_room(room)
        self._joined.discard(room)

    def _room_state(self, room: str) -> RoomState:
        state = self._rooms.get(room)
        if state is None:
            state = RoomState(room)
            state.clock.observe(self.store.max_lamport(room))
            self._rooms[room] = state
        return state

    def newest_nick(self, author: str) -> tuple[str, int] | None:
        """The nick on the newest message heard from `author`, with its ts (ms)."""
        return self._nicks.get(author)

    # what we say

    def set_nick(self, nick: str) -> None:
        """Keep `nick` (already checked) and announce it in every joined room."""
        self.store.set_setting("nick", nick)
        self.nick_name = nick
        for room in self.joined_rooms():
            self._publish_local(room, "nick", {"nick": nick})

    def post(self, room: str, kind: str, body: dict[str, Any]) -> Envelope:
        """Commit and publish a message of ours (with our nick) in a joined room."""
        return self._publish_local(self.room(room), kind, {**self._nick_body(), **body})

    def _nick_body(self) -> dict[str, Any]:
        return {"nick": self.nick_name} if self.nick_name else {}

    def _publish_local(self, room: str, kind: str, body: dict[str, Any]) -> Envelope:
        state = self._room_state(room)
        ts = now_ms()
        try:
            # The clock moves only once the message is on disk: a refused write must
            # not leave a Lamport gap that makes peers hunt for a message that is not.
            env = env_codec.create(
                room=room, author=self.identity.peer_id, lamport=state.clock.value + 1,
                ts_ms=ts, kind=kind, body=body, sign=self.identity.sign,
            )
        except EnvelopeError as exc:
            raise MessageTooLarge(f"message rejected: {exc.detail}") from None
        try:
            self.store.add_messages([env], ts)
        except StoreUnavailable as exc:
            raise type(exc)(f"not sent: {exc.message}", exc.data) from exc
        self._store_wrote()
        state.clock.observe(env.lamport)
        state.saw(self.identity.peer_id_text, self.nick_name, ts)
        self.stats.sent += 1
        self._deliver([env])
        self._outbound.append((topic_for(room), env.wire))
        self._outbound_ready.set()
        return env

    @property
    def outbound_queued(self) -> int:
        """Our messages committed but not yet handed to gossip."""
        return len(self._outbound)

    async def _publish_outbound(self) -> None:
        while True:
            while not self._outbound:
                self._outbound_ready = trio.Event()
                await self._outbound_ready.wait()
            topic, wire = self._outbound.popleft()
            try:
                await self.network.publish(topic, wire)
            except Exception as exc:  # py-libp2p raises assorted errors mid-teardown
                log.warning("publish to %s failed: %s", topic, exc)

    # what we hear

    def validate_gossip(self, topic: str, data: bytes, origin: bytes = b""
                        ) -> tuple[Validation, Envelope | None]:
        """The topic validator of chat rooms (P2PNetwork.subscribe), run before GossipSub
        forwards a message: decode and verify it once, count what is refused in
        `rejected`, and hand the envelope on. Only what no honest peer forwards is
        REJECTed (core/scoring.py `judge`); the rest is left to `accept_gossip`.

        `origin` signed the gossip message (the router checks StrictSign before any
        validator): when it is the envelope's author, that signature is the author's
        over these bytes, and the envelope's own is left to sync (core/envelope.py)."""
        room = room_of_topic(topic)
        if room is None:
            return Validation.IGNORE, None
        try:
            env = env_codec.decode(data, now_ms=now_ms(), signed_by=origin or None)
        except EnvelopeError as exc:
            outcome = judge(exc.reason)
            if outcome is Validation.REJECT:
                self.stats.rejected[exc.reason] += 1
            return outcome, None  # IGNORE: accept_gossip decodes and counts it again
        if env.room != room:
            self.stats.rejected["room_mismatch"] += 1
            return judge("room_mismatch"), None
        return Validation.ACCEPT, env

    def accept_gossip(self, batch: list[GossipMessage]) -> None:
        """Verify, store and deliver chat gossip; count and drop what fails."""
        now = now_ms()
        valid: list[Envelope] = []
        for msg in batch:
            if isinstance(msg.checked, Envelope) and room_of_topic(msg.topic) == msg.checked.room:
                valid.append(msg.checked)  # decoded and verified by validate_gossip
                continue
            room = room_of_topic(msg.topic)
            if room is None:
                self.stats.rejected["unknown_topic"] += 1
                continue
            try:
                env = env_codec.decode(msg.data, now_ms=now)
            except EnvelopeError as exc:
                self.stats.rejected[exc.reason] += 1
                log.debug("dropped envelope from %s: %s", msg.forwarder, exc)
                continue
            if env.room != room:
                self.stats.rejected["room_mismatch"] += 1
                continue
            valid.append(env)
        self._accept_envelopes(valid, now)

    def accept_synced(self, room: str, wires: Iterable[bytes],
                      allowed_ids: set[bytes] | None) -> int:
        """Verify envelopes a sync peer sent for `room`; store them; return how many new."""
        now = now_ms()
        valid: list[Envelope] = []
        for wire in wires:
            try:
                env = env_codec.decode(wire, now_ms=now)
            except EnvelopeError as exc:
                self.stats.rejected[f"sync_{exc.reason}"] += 1
                continue
            if env.room != room:
                self.stats.rejected["sync_room_mismatch"] += 1
                continue
            if allowed_ids is not None and env.id not in allowed_ids:
                self.stats.rejected["sync_unrequested"] += 1
                continue
            valid.append(env)
        return len(self._accept_envelopes(valid, now, live=False))

    def _accept_envelopes(self, envelopes: list[Envelope], now: int, *, live: bool = True
                          ) -> list[Envelope]:
        """Store verified envelopes; update rooms and feeds with those that are new."""
        wanted = [
            e for e in envelopes
            if e.room in self._joined and not self.network.is_blocked(e.author_text)
        ]
        if not wanted:
            return []
        if self.store_health.writes_failing:
            # The retry task writes them in order once the store takes writes again.
            self._pending.hold(wanted)
            return []
        try:
            added = self.store.add_messages(wanted, now)
        except StoreUnavailable:
            self._pending.hold(wanted)
            return []
        return self._stored(wanted, added, live=live)

    def _stored(self, wanted: list[Envelope], added: list[Envelope], *, live: bool
                ) -> list[Envelope]:
        """Update counters, rooms and feeds after `added` of `wanted` were written."""
        self.stats.received_new += len(added)
        self.stats.received_duplicate += len(wanted) - len(added)
        for env in added:
            state = self._room_state(env.room)
            if live and env.lamport > state.clock.value + 1:
                # The author had seen messages we have not: fetch them soon.
                self.stats.gaps_suspected += 1
                source = env.author_text if self.network.is_connected(env.author_text) \
                    else self._any_room_peer(env.room)
                if source:
                    self.on_gap(env.room, source)
            state.clock.observe(env.lamport)
            state.saw(env.author_text, env.nick, env.ts_ms)
            if env.nick and env.ts_ms >= self._nicks.get(env.author_text, ("", -1))[1]:
                self._nicks[env.author_text] = (env.nick, env.ts_ms)
            if env.kind == "image":
                self.on_image(env)
        self._deliver(added)
        return added

    def _any_room_peer(self, room: str) -> str | None:
        peers = self.network.topic_peers(topic_for(room))
        return peers[0] if peers else None

    # reading

    def history(self, room: str, count: int, before: str | None,
                max_bytes: int) -> list[dict[str, Any]]:
        """The newest `count` messages of a joined room (before a message id), oldest
        first; `ResponseTooLarge` if their views would pass `max_bytes`."""
        position = None
        if before is not None:
            raw = _message_id("before", before)
            found = self.store.position(raw)
            if found is None:
                raise NotFound(f"unknown message id {before}")
            if found.room != room:
                raise InvalidArgument(f"message {before} is not in room {room!r}")
            position = found.position
        envelopes = self.store.history(room, count, position)
        size = 0
        for env in envelopes:
            # A message's JSON view is about its wire size plus the field names; a
            # thumbnail grows by a third in base64.
            size += len(env.wire) + 300
            if env.kind == "image":
                size += len(env.body["thumbnail"]) // 3
        if size > max_bytes:
            raise ResponseTooLarge(
                f"{len(envelopes)} messages of {room!r} make about {size} bytes, "
                f"over the {max_bytes} one answer may hold; ask for a smaller limit and "
                "page back with before=<id of the oldest message you have>",
                {"approx_bytes": size, "max_bytes": max_bytes})
        verdicts = self.store.image_verdicts(e.id for e in envelopes if e.kind == "image")
        return [message_view(e, verdicts.get(e.id)) for e in envelopes]

    # subscriber feeds

    def subscribe(self, rooms: frozenset[str] | None) -> Subscription:
        """A feed of new messages in the given joined rooms (None: all, now or later)."""
        send, receive = trio.open_memory_channel[dict[str, Any]](self.subscriber_buffer)
        sub = Subscription(str(self._next_subscription), rooms, send, receive)
        self._next_subscription += 1
        self._subscriptions[sub.id] = sub
        return sub

    def unsubscribe(self, subscription: object) -> bool:
        """End a feed."""
        sub = self._subscriptions.pop(str(subscription), None)
        if sub is None:
            raise NotFound(f"unknown subscription {subscription!r}")
        sub.send.close()
        return True

    @property
    def subscriptions(self) -> int:
        """Feeds open now."""
        return len(self._subscriptions)

    def _deliver(self, envelopes: Iterable[Envelope]) -> None:
        for env in envelopes:
            if env.kind not in CHAT_KINDS:
                continue
            view: dict[str, Any] | None = None
            for sub in list(self._subscriptions.values()):
                if not sub.wants(env.room):
                    continue
                if sub.rooms is None and env.room not in self._joined:
                    continue
                view = view or message_view(env)
                try:
                    sub.send.send_nowait(view)
                except trio.WouldBlock:
                    # A slow reader must never hold up the node: end its feed and say
                    # so; it can catch up with `history`.
                    sub.overflowed = True
                    self.stats.subscriptions_overflowed += 1
                    self._subscriptions.pop(sub.id, None)
                    sub.send.close()
                except trio.ClosedResourceError:
                    self._subscriptions.pop(sub.id, None)

    # store health

    def store_view(self) -> dict[str, Any]:
        """The `store` section of `status`."""
        return {**self.store_health.view(), "pending": len(self._pending),
                "pending_dropped": self._pending.dropped,
                "wal_checkpoints": self.stats.checkpoints,
                "wal_checkpoint_failures": self.stats.checkpoint_failures}

    async def _checkpoint_wal(self) -> None:
        """Own the WAL's checkpoints (see the rules), each in a worker thread."""
        store = self.store
        done = store.commits
        last = trio.current_time()
        while True:
            # On the daemon's shared grid (core/ticks.py), with its other timers.
            await timers.sleep_until(ticks.next_at(trio.current_time(), CHECKPOINT_POLL_S))
            waiting = store.commits - done
            now = trio.current_time()
            if waiting < CHECKPOINT_COMMITS and not (waiting and now - last >= CHECKPOINT_IDLE_S):
                continue
            done, last = store.commits, now  # commits during this one wait for the next
            try:
                # Not cancellable while it runs: shutdown waits for it, then closes.
                await trio.to_thread.run_sync(store.checkpoint)
            except StoreUnavailable as exc:
                # The writes meet the same failure and store health handles it; a WAL
                # left unchecked meanwhile only grows (bounded: adapters/store.py).
                self.stats.checkpoint_failures += 1
                log.warning("WAL checkpoint failed: %s", exc.message)
                continue
            self.stats.checkpoints += 1

    def _on_store_error(self, error: StoreUnavailable, write: bool) -> None:
        if self.store_health.failed(error, write=write, now_ms=now_ms()):
            log.error("store degraded: %s", error.message)
            self._store_wakeup.set()

    def _store_wrote(self) -> None:
        # A write of ours went through while writes were failing: retry the held ones
        # now instead of at the end of the back-off.
        if self.store_health.writes_failing:
            self._store_wakeup.set()

    async def _retry_store_writes(self) -> None:
        """Own the retries: write held envelopes (or a probe) until the store takes them."""
        while True:
            if not self.store_health.writes_failing:
                self._store_retry.reset()
                await self._store_wakeup.wait()
                self._store_wakeup = trio.Event()
                continue
            with trio.move_on_after(self._store_retry.next_delay()):
                await self._store_wakeup.wait()
            self._store_wakeup = trio.Event()
            self._retry_store_write()

    def _retry_store_write(self) -> None:
        now = now_ms()
        held = self._pending.envelopes()
        try:
            if not held:
                self.store.probe_write(now)
            # In batches, so that a disk with a little room again takes what fits.
            for start in range(0, len(held), INBOUND_BATCH):
                batch = held[start : start + INBOUND_BATCH]
                added = self.store.add_messages(batch, now)
                self._pending.release(batch)
                self._stored(batch, added, live=False)
        except StoreUnavailable:
            return
        self.store_health.write_succeeded()
        log.info("store takes writes again: %d held messages written, syncing every room",
                 len(held))
        self.on_store_recovered(self.joined_rooms())


def _message_id(name: str, value: object) -> bytes:
    """A message id parameter: 64 hex characters (sha256 of the envelope)."""
    if isinstance(value, str) and len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    shown = repr(value[:80]) + "..." if isinstance(value, str) and len(value) > 80 \
        else repr(value)
    raise InvalidArgument(f"{name}: {shown} is not a message id (64 hex characters)")
