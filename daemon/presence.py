"""Presence and the connection manager: who is in each room, and staying connected to them.

Rules:
- Each joined room has a directory (core/presence.py), kept in the store. Records come
  from the room's presence topic `/gossipchat/1/presence/<room>` (only the member
  itself may publish its record there: the gossipsub origin must be the record's
  peer) and from directory fetches over `/gossipchat/presence/1.0.0`.
- This node announces itself in a room once the room's presence topic has a peer
  after a join or a start, twice more during WARMUP_S (meshes form in a heartbeat or
  two, and a record sent before is heard by fewer), then every announce interval of
  the room with +-25% jitter, and at once when its nick or its addresses change.
- A fetch asks one connected room member for its directory and hands it our own
  record; the stream then stays open for WATCH_S and carries the members the serving
  peer learns meanwhile (members that join at once would otherwise miss each other).
  For WARM_S after a join every new peer of the room is asked, then at most one per
  REFETCH_S, so a new member gets the directory from the first peer it meets. A
  failed fetch is retried from that peer with backoff (FETCH_RETRY_S).
- Every record, gossiped or fetched, is decoded and verified like a live envelope;
  what fails is dropped and counted in `status.presence.rejected` by reason; a
  record with a lower seq than the one kept is a replay, counted `stale`, and a
  member's new records are taken at most once per MIN_UPDATE_GAP_S.
- The manager (core/connmgr.py decides) runs every TICK_S and when a connection drops:
  it dials room members at their announced addresses and hangs up on surplus
  connections. Room members recently present are its business (`manages`): the
  Redialer defers them to it and keeps redialling the other peers it knew. A dialed
  connection that dies within STABLE_S counts as a failed dial of its address.
- The service task owns the directories, the schedules and the backoff state; its
  dial, trim, announce and fetch tasks only report back.
"""

from __future__ import annotations

import logging
import math
import random
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cbor2
import trio

from .adapters import timers
from .adapters.p2p import GossipMessage, P2PNetwork, Stream, StreamClosedError
from .core import connmgr, plaincbor, ticks
from .core import presence as codec
from .core import rooms as rooms_codec
from .core.connmgr import AddressBackoff, Limits
from .core.presence import Directory, PresenceError, PresenceRecord
from .core.scoring import Validation, judge
from .errors import GossipchatError, StoreUnavailable

if TYPE_CHECKING:
    from .adapters.identity import Identity
    from .adapters.store import Store
    from .history import History

log = logging.getLogger(__name__)

TICK_S = 1.0
# For WARM_S after a join, a room peer that appears (its subscription arrives) is looked
# at within FAST_TICK_S, and every new one is fetched from at once, so the first records
# cross as fast as the first messages. (Until 2026-12-06 the schedule polled every
# FAST_TICK_S for them instead: 300 ticks per daemon per join.)
FAST_TICK_S = 0.05
WARM_S = 15.0
MIN_TICK_GAP_S = 0.1
WARMUP_S = (3.0, 15.0)
# A fetch's stream stays open this long after the reply, carrying the members the
# serving peer learns meanwhile.
WATCH_S = 10.0
MAX_WATCH_FRAMES = 64
CHANGE_GAP_S = 5.0
REFETCH_S = 300.0
# A fetch that failed (the stream broke, the peer was busy or hung up a DHT query
# connection) is asked of that peer again after FETCH_RETRY_S, doubling to at most
# FETCH_RETRY_MAX_S while it keeps failing; without it, a member whose one fetch failed
# would learn of that peer only from its next announcement, an interval later.
FETCH_RETRY_S = 1.0
FETCH_RETRY_MAX_S = 120.0
FETCH_TIMEOUT_S = 20.0
MAX_REQUEST_BYTES = 8 * 1024
MAX_REPLY_BYTES = 1024 * 1024
MAX_REPLY_RECORDS = 2048
# A member's records are taken at most this often (a faster one is `too_frequent`).
MIN_UPDATE_GAP_S = 1.0
# A repeated record refreshes last seen in memory; in the store, at most this often.
SEEN_SAVE_GAP_MS = 60_000
# New and updated directory entries are written to the store together, this often.
SAVE_EVERY_S = 10.0
# A connection the manager dialed clears its address's failures once it lived this
# long; one that dies sooner counts as a failure.
STABLE_S = 10.0
# A member whose direct connection just closed (it hung up, blocked us, or went away)
# is not dialed again for this long; the manager replaces it with another member
# meanwhile. A relayed connection's loss has no pause (`peer_lost`).
LOST_PAUSE_S = 5.0
# A trimmed peer is left alone by the Redialer for this long.
TRIM_MEMORY_S = 600.0


class FetchError(Exception):
    """A directory fetch that the other side broke or refused."""


@dataclass
class PresenceStats:
    """Counters for `status.presence` and `status.connections`."""

    announced: int = 0
    received: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    fetches: int = 0
    fetches_failed: int = 0
    served: int = 0
    dials: int = 0
    dials_failed: int = 0
    trimmed: int = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def _read_frame(stream: Stream, limit: int) -> bytes:
    frame = await _read_frame_or_end(stream, limit)
    if frame is None:
        raise FetchError("the stream ended early")
    return frame


async def _read_frame_or_end(stream: Stream, limit: int) -> bytes | None:
    """The next frame, or None if the stream ends cleanly between frames."""
    first = await stream.read(4)
    if not first:
        return None
    header = first + await _read_exact(stream, 4 - len(first))
    (length,) = struct.unpack(">I", header)
    if length > limit:
        raise FetchError(f"a frame of {length} bytes, limit {limit}")
    return await _read_exact(stream, length)


async def _read_exact(stream: Stream, n: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < n:
        chunk = await stream.read(min(65536, n - len(buffer)))
        if not chunk:
            raise FetchError("the stream ended early")
        buffer += chunk
    return bytes(buffer)


class PresenceService:
    """Announces this node, keeps each room's directory, and manages connections."""

    def __init__(self, history: History, store: Store, network: P2PNetwork,
                 identity: Identity, *, limits: Limits,
                 interval_s: float = codec.BASE_INTERVAL_S,
                 rng: random.Random | None = None) -> None:
        self.history = history
        self.store = store
        self.identity = identity
        self.interval_s = interval_s
        self.network = network
        self.limits = limits
        self.stats = PresenceStats()
        self.directories: dict[str, Directory] = {}
        self.backoff = AddressBackoff()
        self._rng = rng or random.Random()
        self._dialing: set[str] = set()
        self._since: dict[str, float] = {}
        self._trimmed: dict[str, float] = {}
        self._next_announce: dict[str, float] = {}
        self._waiting_for_peer: set[str] = set()
        self._warmup: dict[str, list[float]] = {}
        self._announced: dict[str, tuple[tuple[str, ...], str]] = {}
        self._last_change = -CHANGE_GAP_S
        self._fetched: set[tuple[str, str]] = set()
        # Connections that may be passing (a DHT query's, ours or a peer's that dialed
        # us moments ago; service.py): no fetch yet.
        self.passing: Callable[[str], bool] = lambda _peer: False
        # (room, peer) -> (failures in a row, not again before this trio time)
        self._fetch_failed: dict[tuple[str, str], tuple[int, float]] = {}
        self._last_fetch: dict[str, float] = {}
        self._warm_until: dict[str, float] = {}
        self._watchers: list[tuple[str, trio.MemorySendChannel[PresenceRecord]]] = []
        self._updated_at: dict[tuple[str, str], float] = {}
        self._dialed: dict[str, tuple[str, float]] = {}
        self._lost_at: dict[str, float] = {}
        # Members whose last connection was relayed (their circuits are dialed first).
        self._relayed_lost: set[str] = set()
        self._saved_seen: dict[tuple[str, str], int] = {}
        # Directory entries not yet in the store, latest per (room, peer): written
        # together at most every SAVE_EVERY_S, and at shutdown.
        self._unsaved: dict[tuple[str, str], tuple[str, str, int, bytes, int]] = {}
        self._saved_at = 0.0
        self._seq = 0
        self._wakeup = trio.Event()
        self._woken = True  # the next tick is a full one (see _tick)
        self._full_at = -TICK_S
        self._addrs: tuple[str, ...] = ()
        self._nursery: trio.Nursery | None = None

    # lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve fetches, load the directories, and run the schedule until cancelled."""
        self.network.set_stream_handler(codec.PROTOCOL, self._serve)
        try:
            self._seq = int(self.store.get_setting("presence_seq") or 0)
        except (StoreUnavailable, ValueError):
            self._seq = 0
        for room in self.history.joined_rooms():
            self.joined(room)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._schedule()
        finally:
            self._flush()

    async def _schedule(self) -> None:
        while True:
            self._tick()
            ticked = trio.current_time()
            warm = any(ticked < t for t in self._warm_until.values())
            gap = FAST_TICK_S if warm else MIN_TICK_GAP_S
            # The tick runs on the daemon's shared grid (core/ticks.py), when an
            # announcement falls due, and on a wake-up (a room peer appeared, a
            # connection dropped, a member was heard of), but never sooner than `gap`
            # after the last one.
            due = min(ticks.next_at(ticked, TICK_S), self._announcement_due())
            await timers.wait(self._wakeup, max(due, ticked + gap))
            self._wakeup = trio.Event()
            if trio.current_time() < ticked + gap:
                await timers.sleep_until(ticked + gap)

    def _announcement_due(self) -> float:
        """When the next announcement falls due (rooms that wait for a peer wait for
        its subscription instead)."""
        return min((at for room, at in self._next_announce.items()
                    if room not in self._waiting_for_peer), default=math.inf)

    def wake(self) -> None:
        """Run the manager now (a connection dropped, a member appeared)."""
        self._woken = True
        self._wakeup.set()

    def topic_peer(self, peer: str, topic: str) -> None:
        """`peer` subscribed to `topic` (P2PNetwork.on_topic_peer): a new peer of a
        joined room's presence topic is announced to and fetched from at the next tick,
        a light one (the manager's plan waits for its own time)."""
        if codec.room_of_topic(topic) in self.directories:
            self._wakeup.set()

    # rooms

    def joined(self, room: str) -> None:
        """The node is in `room` (joined now, or at start): load it and announce soon."""
        if room not in self.directories:
            directory = Directory(room, base_interval_s=self.interval_s)
            try:
                stored = self.store.presence(room)
            except StoreUnavailable:
                stored = []
            for wire, last_seen in stored:
                try:
                    directory.restore(codec.from_trusted_wire(wire), last_seen)
                except Exception:  # a row this build cannot read: the network resends it
                    log.warning("unreadable presence row in room %s skipped", room)
            self.directories[room] = directory
        self._waiting_for_peer.add(room)
        self._warmup[room] = list(WARMUP_S)
        self._last_fetch.pop(room, None)
        self._warm_until[room] = trio.current_time() + WARM_S
        self.wake()

    def left(self, room: str) -> None:
        """The node left `room`: forget its directory."""
        self.directories.pop(room, None)
        self._warm_until.pop(room, None)
        self._waiting_for_peer.discard(room)
        self._next_announce.pop(room, None)
        self._announced.pop(room, None)
        self._fetched = {k for k in self._fetched if k[0] != room}
        self._fetch_failed = {k: v for k, v in self._fetch_failed.items() if k[0] != room}
        self._updated_at = {k: v for k, v in self._updated_at.items() if k[0] != room}
        self._saved_seen = {k: v for k, v in self._saved_seen.items() if k[0] != room}
        self._unsaved = {k: v for k, v in self._unsaved.items() if k[0] != room}
        try:
            self.store.forget_presence(room)
        except StoreUnavailable:
            pass

    def changed(self) -> None:
        """Our nick changed: announce it in every room now."""
        for room in self.directories:
            self._next_announce[room] = 0.0
        self.wake()

    def peer_lost(self, peer: str, *, relayed: bool = False) -> None:
        """A peer's last connection closed; `relayed` if it ran through a relay."""
        self._since.pop(peer, None)
        if relayed:
            # A relayed connection also ends when its relay dies or cuts the circuit
            # (protocol.md §10): the member did not hang up, so no pause; its circuits
            # are dialed first, through another relay if its own is gone.
            self._relayed_lost.add(peer)
        else:
            self._relayed_lost.discard(peer)
            self._lost_at[peer] = trio.current_time()
        dialed = self._dialed.pop(peer, None)
        if dialed is not None:
            # A connection that dies at once (the peer blocks us, or is not who the
            # address says) counts as a failed dial, so it backs off like one.
            self.backoff.failed(dialed[0], trio.current_time())
        self._fetched = {k for k in self._fetched if k[1] != peer}
        self._fetch_failed = {k: v for k, v in self._fetch_failed.items() if k[1] != peer}
        self.wake()

    def recently_trimmed(self, peer: str) -> bool:
        """True for a peer the manager hung up on as surplus within TRIM_MEMORY_S: other
        services (mDNS) must not dial it back."""
        trimmed = self._trimmed.get(peer)
        return trimmed is not None and trio.current_time() - trimmed < TRIM_MEMORY_S

    def wants(self, peer: str) -> bool:
        """True if the manager would have dialed this peer (`connmgr.worth_keeping`).
        Other services that dial for a moment of their own (DHT queries) close the
        rest."""
        connected = set(self.network.connected_peers())
        return connmgr.worth_keeping(peer, self._room_views(_now_ms(), connected),
                                     connected, self.limits)

    def manages(self, peer: str) -> bool:
        """True if reconnecting to this peer is the manager's call, not the Redialer's:
        a member recently present in a joined room (the manager dials those), or a peer
        it trimmed."""
        if self.recently_trimmed(peer):
            return True
        now_ms = _now_ms()
        for directory in self.directories.values():
            entry = directory.entries.get(peer)
            if entry is not None and entry.record.addrs \
                    and now_ms - entry.last_seen_ms <= connmgr.RECENT_MS:
                return True
        return False

    # the schedule

    def _tick(self) -> None:
        """A full tick (every TICK_S, and when woken) reads our addresses and runs the
        manager; the ticks in between (a new room peer, an announcement due) only look
        for new room peers to announce to and fetch from (the manager's plan and our
        addresses' parsing 20 times a second were ~3% of a forwarding member's CPU in
        a burst that follows a join)."""
        assert self._nursery is not None
        now = trio.current_time()
        connected = self.network.connected_peers()
        for peer in connected:
            self._since.setdefault(peer, now)
        full = self._woken or now - self._full_at >= TICK_S
        if full:
            self._woken = False
            self._full_at = now
            self._addrs = tuple(codec.announceable(self.network.listen_addrs()))
            for peer, (addr, at) in list(self._dialed.items()):
                if now - at >= STABLE_S:
                    del self._dialed[peer]
                    self.backoff.succeeded(addr)
        self._announce_due(now)
        self._fetch_due(now, set(connected))
        if full:
            self._manage(now, connected)
            if now - self._saved_at >= SAVE_EVERY_S:
                self._flush()

    def _announce_due(self, now: float) -> None:
        assert self._nursery is not None
        addrs = self._addrs
        nick = self.history.nick_name
        for room in list(self.directories):
            has_peers = bool(self.network.topic_peers(codec.topic_for(room)))
            last = self._announced.get(room)
            if last is not None and last != (addrs, nick) \
                    and now - self._last_change >= CHANGE_GAP_S:
                self._next_announce[room] = 0.0  # our addresses changed
            if room in self._waiting_for_peer:
                if not has_peers:
                    continue
                self._waiting_for_peer.discard(room)
                self._next_announce[room] = 0.0
            if now < self._next_announce.get(room, 0.0):
                continue
            if not has_peers:
                self._waiting_for_peer.add(room)  # nobody hears it now; once someone can
                continue
            if last is not None and last != (addrs, nick):
                self._last_change = now
            warmup = self._warmup.get(room)
            if warmup:
                delay = warmup.pop(0)
            else:
                delay = self.directories[room].interval_s() * self._rng.uniform(0.75, 1.25)
            self._next_announce[room] = now + delay
            record = self._own_record(room, addrs, nick)
            if record is None:
                continue
            self._announced[room] = (addrs, nick)
            self._nursery.start_soon(self._publish, room, record.wire)

    def _own_record(self, room: str, addrs: tuple[str, ...], nick: str
                    ) -> PresenceRecord | None:
        now_ms = _now_ms()
        self._seq = max(now_ms, self._seq + 1)
        try:
            self.store.set_setting("presence_seq", str(self._seq))
        except StoreUnavailable:
            pass  # a restart may reuse a seq: peers then drop that one as a replay
        try:
            record = codec.create(room=room, peer=self.identity.peer_id, addrs=addrs,
                                  nick=nick, seq=self._seq, sign=self.identity.sign)
        except PresenceError as exc:
            log.error("cannot build our presence record for %s: %s", room, exc)
            return None
        self._ingest(record, now_ms)
        return record

    async def _publish(self, room: str, wire: bytes) -> None:
        try:
            await self.network.publish(codec.topic_for(room), wire)
            self.stats.announced += 1
        except Exception as exc:  # py-libp2p raises assorted errors mid-teardown
            log.info("presence announcement in %s failed: %s", room, exc)

    # intake

    def validate_gossip(self, topic: str, data: bytes, origin: bytes
                        ) -> tuple[Validation, PresenceRecord | None]:
        """The topic validator of presence topics (P2PNetwork.subscribe), run before
        GossipSub forwards a record: what no honest member forwards (undecodable, a bad
        signature, another room's record, a record not announced by its own member)
        is REJECTed and counted here; the record passes on with the message."""
        room = codec.room_of_topic(topic)
        if room is None or room not in self.directories:
            return Validation.IGNORE, None  # accept_gossip counts it
        try:
            record = codec.decode(data, now_ms=_now_ms())
        except PresenceError as exc:
            outcome = judge(exc.reason)
            if outcome is Validation.REJECT:
                self.stats.rejected[exc.reason] += 1
            return outcome, None  # IGNORE: accept_gossip decodes and counts it again
        for reason, wrong in (("room_mismatch", record.room != room),
                              ("not_origin", record.peer != origin)):
            if wrong:
                self.stats.rejected[reason] += 1
                return judge(reason), None
        return Validation.ACCEPT, record

    def accept_gossip(self, msg: GossipMessage) -> None:
        """A message of a presence topic: verify, check its origin, keep it."""
        room = codec.room_of_topic(msg.topic)
        if room is None or room not in self.directories:
            self.stats.rejected["not_joined"] += 1
            return
        now_ms = _now_ms()
        checked = msg.checked
        if isinstance(checked, PresenceRecord) and checked.room == room:
            self._accept(checked, now_ms)  # decoded, verified by validate_gossip
            return
        try:
            record = codec.decode(msg.data, now_ms=now_ms)
        except PresenceError as exc:
            self.stats.rejected[exc.reason] += 1
            log.debug("dropped presence from %s: %s", msg.origin, exc)
            return
        if record.room != room:
            self.stats.rejected["room_mismatch"] += 1
            return
        if record.peer_text != msg.origin:
            # Only a member announces itself on the topic; others' records come by fetch.
            self.stats.rejected["not_origin"] += 1
            return
        self._accept(record, now_ms)

    def _accept(self, record: PresenceRecord, heard_ms: int) -> str | None:
        peer = record.peer_text
        if self.network.is_blocked(peer):
            self.stats.rejected["blocked"] += 1
            return None
        if peer == self.network.peer_id:
            # Our own record, relayed back or served by a peer: ours is the one we keep.
            return None
        directory = self.directories.get(record.room)
        kept = directory.entries.get(peer) if directory is not None else None
        key = (record.room, peer)
        if kept is None or record.seq > kept.record.seq:
            # An honest member re-announces on a change or on its schedule; one that
            # sends new records faster would cost a store write each.
            now = trio.current_time()
            last = self._updated_at.get(key)
            if kept is not None and last is not None and now - last < MIN_UPDATE_GAP_S:
                self.stats.rejected["too_frequent"] += 1
                return None
            self._updated_at[key] = now
        verdict = self._ingest(record, heard_ms)
        self.stats.received += 1
        if verdict == "stale":
            self.stats.rejected["stale"] += 1
        elif verdict == "duplicate":
            self.stats.duplicates += 1
        return verdict

    def _ingest(self, record: PresenceRecord, heard_ms: int) -> str:
        directory = self.directories.get(record.room)
        if directory is None:
            return "not_joined"
        verdict = directory.offer(record, heard_ms)
        entry = directory.entries.get(record.peer_text)
        key = (record.room, record.peer_text)
        if entry is not None and (verdict in ("new", "updated") or (
                verdict == "duplicate"
                and entry.last_seen_ms - self._saved_seen.get(key, 0) >= SEEN_SAVE_GAP_MS)):
            self._saved_seen[key] = entry.last_seen_ms
            self._save([(record.room, record.peer_text, entry.record.seq,
                         entry.record.wire, entry.last_seen_ms)])
        if verdict in ("new", "updated"):
            self._notify_watchers(record)
        if verdict == "new":
            self.wake()
        return verdict

    def _save(self, rows: list[tuple[str, str, int, bytes, int]]) -> None:
        """Keep rows for the next write (`_flush`); the latest per member wins."""
        for row in rows:
            self._unsaved[(row[0], row[1])] = row

    def _flush(self) -> None:
        """Write the entries kept since the last write, in one commit.

        The directory is soft state (members announce again, and a restarted node
        fetches it anew), so it is written at most every SAVE_EVERY_S, not per record:
        a commit per announcement was about a tenth of an idle member's CPU.
        """
        self._saved_at = trio.current_time()
        if not self._unsaved:
            return
        rows, self._unsaved = list(self._unsaved.values()), {}
        try:
            self.store.save_presence(rows)
        except StoreUnavailable as exc:  # the directory lives on in memory
            log.debug("presence not saved: %s", exc.message)

    # directory fetch

    def _fetch_due(self, now: float, connected: set[str]) -> None:
        assert self._nursery is not None
        for room in list(self.directories):
            warm = now < self._warm_until.get(room, 0.0)
            last = self._last_fetch.get(room)
            if not warm and last is not None and now - last < REFETCH_S:
                continue
            for peer in self.network.topic_peers(codec.topic_for(room)):
                key = (room, peer)
                if peer in connected and key not in self._fetched \
                        and now >= self._fetch_failed.get(key, (0, 0.0))[1] \
                        and not self.network.is_blocked(peer) and not self.passing(peer):
                    self._fetched.add(key)
                    self._nursery.start_soon(self._fetch_task, room, peer)
                    if not warm:
                        break

    async def _fetch_task(self, room: str, peer: str) -> None:
        try:
            count = await self._fetch(room, peer)
        except (FetchError, StreamClosedError, GossipchatError, trio.TooSlowError,
                StoreUnavailable) as exc:
            self.stats.fetches_failed += 1
            key = (room, peer)
            failures = self._fetch_failed.get(key, (0, 0.0))[0] + 1
            delay = min(FETCH_RETRY_MAX_S, FETCH_RETRY_S * 2 ** (failures - 1))
            # Not if the room was left or the peer lost meanwhile (those clear the state).
            if room in self.directories and self.network.is_connected(peer):
                self._fetch_failed[key] = (failures, trio.current_time() + delay)
                self._fetched.discard(key)
                log.info("presence fetch of %s from %s failed (again in %.0f s): %s",
                         room, peer, delay, exc)
            else:
                log.info("presence fetch of %s from %s failed: %s", room, peer, exc)
        else:
            self._fetch_failed.pop((room, peer), None)
            log.debug("presence fetch of %s from %s: %d records", room, peer, count)

    async def _fetch(self, room: str, peer: str) -> int:
        directory = self.directories.get(room)
        own = directory.entries.get(self.network.peer_id) if directory else None
        request = cbor2.dumps([1, room, own.record.wire if own else None], canonical=True)
        stream = await self.network.open_stream(peer, codec.PROTOCOL)
        taken = 0
        try:
            with trio.fail_after(FETCH_TIMEOUT_S):
                await stream.write(_frame(request))
                taken += self._take_reply(room, await _read_frame(stream, MAX_REPLY_BYTES))
            self.stats.fetches += 1
            self._last_fetch[room] = trio.current_time()
            # Then what the peer learns while we are new, until it ends the stream. A
            # watch that breaks (a hang-up, a trim) fails the fetch, so that it is asked
            # again while the peer stays connected: the members it would have carried
            # come with the next reply. (Counting such a fetch as done instead left
            # directories short, and the fanout bench's third round slow: 6-12 s
            # against 4-5.)
            with trio.move_on_after(WATCH_S + FETCH_TIMEOUT_S):
                for _ in range(MAX_WATCH_FRAMES):
                    frame = await _read_frame_or_end(stream, MAX_REPLY_BYTES)
                    if frame is None:
                        break
                    taken += self._take_reply(room, frame)
        except BaseException:
            await stream.reset()
            raise
        await stream.close()
        return taken

    def _take_reply(self, room: str, reply: bytes) -> int:
        try:
            items = plaincbor.loads(reply, max_items=3 * MAX_REPLY_RECORDS + 1)
        except Exception as exc:  # untrusted bytes: cbor2 raises a spread of types
            raise FetchError(f"undecodable reply ({type(exc).__name__})") from None
        if not isinstance(items, list) or len(items) > MAX_REPLY_RECORDS:
            raise FetchError("the reply is not an array of at most 2048 records")
        return self._take_records(room, items, _now_ms())

    def _take_records(self, room: str, items: list[Any], now_ms: int) -> int:
        taken = 0
        for item in items:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)
                    and type(item[1]) is int and item[1] >= 0):
                self.stats.rejected["fetch_malformed"] += 1
                continue
            wire, age_ms = item
            try:
                record = codec.decode(wire, now_ms=now_ms)
            except PresenceError as exc:
                self.stats.rejected[f"fetch_{exc.reason}"] += 1
                continue
            if record.room != room:
                self.stats.rejected["fetch_room_mismatch"] += 1
                continue
            if self._accept(record, now_ms - min(age_ms, now_ms)) in ("new", "updated"):
                taken += 1
        return taken

    async def _serve(self, stream: Stream) -> None:
        send, receive = trio.open_memory_channel[PresenceRecord](MAX_WATCH_FRAMES)
        watch: tuple[str, trio.MemorySendChannel[PresenceRecord]] | None = None
        try:
            with trio.fail_after(FETCH_TIMEOUT_S):
                request = await _read_frame(stream, MAX_REQUEST_BYTES)
                room, reply = self._answer(request, stream.peer_id)
                if room is not None:
                    watch = (room, send)
                    self._watchers.append(watch)
                await stream.write(_frame(reply))
            self.stats.served += 1
            # A new member also hears of the members we learn in its first seconds:
            # joins race, and without this the first to fetch would miss the others.
            with trio.move_on_after(WATCH_S):
                async for record in receive:
                    if record.peer_text == stream.peer_id:
                        continue
                    entry = [[record.wire, 0]]
                    await stream.write(_frame(cbor2.dumps(entry, canonical=True)))
        except (FetchError, trio.TooSlowError) as exc:
            self.stats.rejected["fetch_request"] += 1
            log.info("presence fetch from %s refused: %s", stream.peer_id, exc)
            await stream.reset()
        finally:
            if watch is not None:
                self._watchers.remove(watch)

    def _notify_watchers(self, record: PresenceRecord) -> None:
        for room, send in self._watchers:
            if room == record.room:
                try:
                    send.send_nowait(record)
                except trio.WouldBlock:
                    pass  # a slow watcher misses it; the member's own announcements repeat

    def _answer(self, request: bytes, asker: str) -> tuple[str | None, bytes]:
        try:
            items = plaincbor.loads(request, max_items=4)
        except Exception:  # untrusted bytes: cbor2 raises a spread of types
            raise FetchError("undecodable request") from None
        if not (isinstance(items, list) and len(items) == 3 and items[0] == 1
                and isinstance(items[1], str) and isinstance(items[2], bytes | None)):
            raise FetchError("malformed request")
        _version, room, theirs = items
        directory = self.directories.get(room)
        if directory is None:
            return None, cbor2.dumps([], canonical=True)
        now_ms = _now_ms()
        if theirs is not None:
            try:
                record = codec.decode(theirs, now_ms=now_ms)
            except PresenceError as exc:
                self.stats.rejected[f"fetch_{exc.reason}"] += 1
            else:
                if record.room != room or record.peer_text != asker:
                    self.stats.rejected["fetch_not_sender"] += 1
                else:
                    self._accept(record, now_ms)
        out: list[list[Any]] = []
        size = 16
        for record in directory.records(MAX_REPLY_RECORDS):
            entry = directory.entries[record.peer_text]
            size += len(record.wire) + 16
            if size > MAX_REPLY_BYTES:
                break
            out.append([record.wire, max(0, now_ms - entry.last_seen_ms)])
        return room, cbor2.dumps(out, canonical=True)

    # the connection manager

    def _room_views(self, now_ms: int, connected_set: set[str]) -> list[connmgr.RoomView]:
        """Each joined room's members as the manager sees them."""
        rooms = []
        for room, directory in self.directories.items():
            window = directory.online_window_ms()
            members = tuple(
                connmgr.Member(peer, connmgr.dial_order(
                    entry.record.addrs, relayed_last=peer in self._relayed_lost,
                    connected=connected_set),
                               now_ms - entry.last_seen_ms <= window or peer in connected_set,
                               entry.last_seen_ms)
                for peer, entry in directory.entries.items())
            # A connected peer in the room's topic whose presence record has not come
            # yet (it announced before we joined, and the fetch is under way) is a room
            # peer all the same: without it the manager would dial another member
            # while the one it has is about to be counted.
            unlisted = tuple(
                connmgr.Member(peer, (), True, now_ms)
                for peer in self.network.topic_peers(rooms_codec.topic_for(room))
                if peer in connected_set and peer not in directory.entries)
            rooms.append(connmgr.RoomView(room, members + unlisted))
        return rooms

    def _manage(self, now: float, connected: list[str]) -> None:
        assert self._nursery is not None
        now_ms = _now_ms()
        rooms = self._room_views(now_ms, set(connected))
        plan = connmgr.plan(
            rooms=rooms, connected={p: self._since.get(p, now) for p in connected},
            self_id=self.network.peer_id,
            blocked=[p for d in self.directories.values() for p in d.entries
                     if self.network.is_blocked(p)
                     or now - self._lost_at.get(p, -LOST_PAUSE_S) < LOST_PAUSE_S],
            dialing=self._dialing, backoff=self.backoff, limits=self.limits, now=now,
            now_ms=now_ms, rng=self._rng)
        for peer, addr in plan.dials:
            self._dialing.add(peer)
            self._nursery.start_soon(self._dial, peer, addr)
        for peer in plan.trims:
            self._trimmed[peer] = now
            self.stats.trimmed += 1
            self._nursery.start_soon(self._trim, peer)
        for peer in [p for p, t in self._trimmed.items() if now - t > TRIM_MEMORY_S]:
            del self._trimmed[peer]
        for peer in [p for p, t in self._lost_at.items() if now - t > LOST_PAUSE_S]:
            del self._lost_at[peer]
        self._relayed_lost = {p for p in self._relayed_lost
                              if any(p in d.entries for d in self.directories.values())}

    async def _dial(self, peer: str, addr: str) -> None:
        self.stats.dials += 1
        try:
            await self.network.dial_known(peer, [addr])
        except GossipchatError as exc:
            self.stats.dials_failed += 1
            self.backoff.failed(addr, trio.current_time())
            log.info("connection manager: dial %s at %s failed: %s", peer, addr, exc.message)
        else:
            self._dialed[peer] = (addr, trio.current_time())
            log.info("connection manager: connected to %s at %s", peer, addr)
        finally:
            self._dialing.discard(peer)
            self.wake()

    async def _trim(self, peer: str) -> None:
        log.info("connection manager: hanging up on %s (surplus)", peer)
        try:
            await self.network.hang_up(peer)
        except Exception as exc:  # the swarm raises a spread of types on a dying conn
            log.debug("hang up on %s: %s", peer, exc)

    # views

    def members(self, room: str) -> list[dict[str, Any]]:
        """`members` rows of a joined room, this node included (always online)."""
        directory = self.directories.get(room)
        if directory is None:
            return []
        now_ms = _now_ms()
        rows = {r["peer_id"]: r
                for r in directory.view(now_ms, set(self.network.connected_peers()))}
        rows[self.network.peer_id] = {"peer_id": self.network.peer_id,
                                      "nick": self.history.nick_name, "last_seen": now_ms,
                                      "online": True, "nick_ms": now_ms}
        return sorted(rows.values(), key=lambda r: r["peer_id"])

    def view(self, connected_peers: list[str]) -> dict[str, Any]:
        """The `presence` section of `status`: counters and, per room, who is present
        (`connected_peers`: the network's, as `status` has just read them)."""
        connected = set(connected_peers)
        now_ms = _now_ms()
        rooms = {}
        for room, directory in sorted(self.directories.items()):
            others = [p for p in directory.entries if p != self.network.peer_id]
            rooms[room] = {
                "members": len(others) + 1,
                "online": 1 + directory.online_count(now_ms, connected, self.network.peer_id),
                "connected": sum(p in connected for p in others),
                "announce_interval_s": round(directory.interval_s(), 1),
            }
        return {
            "announced": self.stats.announced,
            "received": self.stats.received,
            "duplicates": self.stats.duplicates,
            "rejected": dict(self.stats.rejected),
            "fetches": self.stats.fetches,
            "fetches_failed": self.stats.fetches_failed,
            "served": self.stats.served,
            "rooms": rooms,
        }

    def connections_view(self, connected_peers: list[str]) -> dict[str, Any]:
        """The `connections` section of `status`: the manager's counts and bounds."""
        return {
            "connected": len(connected_peers),
            "dialing": len(self._dialing),
            "dials": self.stats.dials,
            "dials_failed": self.stats.dials_failed,
            "trimmed": self.stats.trimmed,
            "addrs_backing_off": self.backoff.backing_off(trio.current_time()),
            "room_peers_min": self.limits.room_peers_min,
            "room_peers_max": self.limits.room_peers_max,
            "max_connections": self.limits.max_connections,
        }
