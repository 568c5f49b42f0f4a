"""History sync: reconcile each room with each peer in it, and repair what gossip lost.

Rules:
- One session reconciles one room with one peer over /gossipchat/sync/1.0.0
  (core/syncwire.py has the frames, core/reconcile.py the set reconciliation).
- Sessions start when a peer first shows up in a room's topic (connect, reconnect,
  late join), every `interval` seconds with jitter after that, and about a second
  after a gap is suspected (a Lamport jump on a live message).
- Routine re-syncs back off while a pair keeps matching (up to 8x the interval) and
  are run by the lower peer id only; first meetings and gaps are either side's.
- Routine re-syncs leave out messages younger than SETTLE_MS (by their ts): in a
  burst they are still on their way through gossip, and a re-sync then fetched and
  pushed them a second time (in a 1,000-message burst in 10 daemons, 3,000 of the
  9,000 deliveries). First meetings reconcile everything.
- A gap session leaves out messages younger than GAP_SETTLE_MS, and one follow-up
  GAP_SETTLE_MS later covers what it left out. In a burst, messages from several
  senders arrive out of Lamport order all the time, so gaps are suspected every
  second; reconciling everything, those sessions fetched what gossip was about to
  deliver (in a 1,000-message burst in 50 daemons, 29,000 of the 49,000
  deliveries), and each such message was then decoded and verified a second time
  when its gossip copy came.
- Every envelope a peer pushes or returns is decoded and verified, its own signature
  included (no gossip message's signature vouches for it), and must belong to the
  session's room; a peer breaking the protocol has its stream reset and the error
  counted. Likewise every envelope we push or return has had its own signature
  checked (`_servable`).
- The service's tasks own its state (the schedule and its backoff, per-room state,
  stats), all on the one trio thread: the scheduler task starts sessions, and each
  session task, when it ends, updates its own pair's schedule and the stats itself,
  between awaits, so no lock is needed. Others only call `suspect_gap`, `forget_peer`
  and `sync_now`.
- While the store refuses writes no session starts (what it fetched could not be
  kept); the node asks for a round in every room once writes work again. A store
  error in a session, either side, ends that session, never the node.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .adapters import timers
from .adapters.p2p import P2PNetwork, Stream, StreamClosedError
from .core import envelope as env_codec
from .core import reconcile, syncwire, ticks, varint
from .core.reconcile import ReconcileError
from .core.rooms import topic_for
from .core.syncwire import (
    Done,
    Envelopes,
    Frame,
    Hello,
    Push,
    Reconcile,
    Refuse,
    SyncWireError,
    Want,
    Welcome,
)
from .errors import GossipchatError, StoreUnavailable

if TYPE_CHECKING:
    from .adapters.store import Store
    from .history import History

log = logging.getLogger(__name__)

TICK_S = 1.0
FRAME_TIMEOUT_S = 30.0
SESSION_TIMEOUT_S = 300.0
# Opening the stream (multistream negotiation included): py-libp2p's new_stream never
# returns when the peer resets the stream during negotiation, and a session stuck
# there would hold its (room, peer) slot for good.
OPEN_TIMEOUT_S = 10.0
GAP_DEBOUNCE_S = 1.0
# A gap session reconciles messages older than this only (Hello's until) ...
GAP_SETTLE_MS = 2000
# ... and this many sessions follow a suspected gap, GAP_SETTLE_MS apart.
GAP_SESSIONS = 2
# Routine re-syncs reconcile messages older than this only (Hello's until).
SETTLE_MS = 5000
MAX_CONCURRENT_SESSIONS = 4
# Signature checks (`_servable`) between two yields to the other tasks: about 2 ms.
CHECKS_PER_YIELD = 32
MAX_BACKOFF_S = 60.0
MAX_QUIET_DOUBLINGS = 3


class SyncProtocolError(Exception):
    """The peer sent something the protocol does not allow at that point."""


@dataclass
class RoomSyncState:
    """What `rooms` and `status` report for one room."""

    last_sync_ms: int = 0
    last_peer: str = ""
    repaired: int = 0
    pushed: int = 0


@dataclass
class SyncStats:
    """Counters over all sessions."""

    sessions_ok: int = 0
    sessions_failed: int = 0
    sessions_served: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    repaired: int = 0
    pushed: int = 0
    withheld: int = 0  # envelopes asked for or due but not served: see `_servable`
    errors: Counter[str] = field(default_factory=Counter)
    last_session: dict[str, Any] = field(default_factory=dict)


class FramedStream:
    """Frames over a libp2p stream, with byte counts and per-frame deadlines."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.sent = 0
        self.received = 0
        self._buffer = bytearray()

    async def send(self, frame: Frame) -> None:
        data = syncwire.encode(frame)
        self.sent += len(data)
        await self.stream.write(data)

    async def _fill(self, n: int) -> None:
        while len(self._buffer) < n:
            chunk = await self.stream.read(max(65536, n - len(self._buffer)))
            if not chunk:
                raise StreamClosedError("peer closed the sync stream")
            self._buffer += chunk

    async def recv(self) -> Frame:
        with trio.fail_after(FRAME_TIMEOUT_S):
            while (length := syncwire.read_length(bytes(self._buffer[:5]))) is None:
                if len(self._buffer) >= 5:
                    raise SyncWireError("bad length prefix")
                await self._fill(len(self._buffer) + 1)
            header = varint.encoded_len(length)
            await self._fill(header + length)
            body = bytes(self._buffer[header : header + length])
            del self._buffer[: header + length]
        self.received += header + length
        return syncwire.decode(body)


class SyncService:
    """Schedules and runs sync sessions for a node; serves the peers' sessions."""

    def __init__(self, history: History, store: Store, network: P2PNetwork, *,
                 interval_s: float, depth: int, rng: random.Random | None = None) -> None:
        self.history = history
        self.store = store
        self.network = network
        self.interval_s = interval_s
        self.depth = depth
        self.stats = SyncStats()
        self.rooms: dict[str, RoomSyncState] = {}
        self._rng = rng or random.Random()
        self._next_due: dict[tuple[str, str], float] = {}
        self._failures: Counter[tuple[str, str]] = Counter()
        self._quiet: Counter[tuple[str, str]] = Counter()
        self._periodic: set[tuple[str, str]] = set()
        self._gap_sessions: Counter[tuple[str, str]] = Counter()  # still to run
        self._running: set[tuple[str, str]] = set()
        self._limiter = trio.CapacityLimiter(MAX_CONCURRENT_SESSIONS)
        self._nursery: trio.Nursery | None = None
        self._wakeup = trio.Event()
        # Connections that may be passing (a DHT query's, ours or a peer's that dialed
        # us moments ago; service.py): no session yet.
        self.passing: Callable[[str], bool] = lambda _peer: False

    # scheduling

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the protocol and run the schedule until cancelled."""
        self.network.set_stream_handler(syncwire.PROTOCOL, self._serve)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._start_due_sessions()
                # Sessions come due on the daemon's shared one-second grid
                # (core/ticks.py); `sync_now` does not wait for it.
                await timers.wait(self._wakeup, ticks.next_at(trio.current_time(), TICK_S))
                self._wakeup = trio.Event()

    def _start_due_sessions(self) -> None:
        assert self._nursery is not None
        if self.history.store_health.writes_failing:
            return
        now = trio.current_time()
        connected = set(self.network.connected_peers())
        for room in self.history.joined_rooms():
            for peer in self.network.topic_peers(topic_for(room)):
                key = (room, peer)
                if peer not in connected or key in self._running:
                    continue
                if self.network.is_blocked(peer) or self.passing(peer):
                    continue
                due = self._next_due.get(key)
                if key in self._periodic and self.network.peer_id > peer:
                    # Routine re-syncs of a pair are the lower peer id's job, so each
                    # pair runs one session per round, not two.
                    continue
                if due is None or now >= due:
                    self._running.add(key)
                    self._nursery.start_soon(self._session_task, room, peer)

    def suspect_gap(self, room: str, peer: str) -> None:
        """A live message showed we may lack earlier ones: sync with peer soon."""
        key = (room, peer)
        soon = trio.current_time() + GAP_DEBOUNCE_S
        self._periodic.discard(key)
        self._quiet.pop(key, None)
        self._gap_sessions[key] = GAP_SESSIONS
        if self._next_due.get(key, soon + 1) > soon:
            self._next_due[key] = soon

    def forget_peer(self, peer: str) -> None:
        """A peer went away: sync again as soon as it is back."""
        for key in [k for k in self._next_due if k[1] == peer]:
            del self._next_due[key]
            self._failures.pop(key, None)
            self._periodic.discard(key)
            self._quiet.pop(key, None)
            self._gap_sessions.pop(key, None)

    def sync_now(self, room: str) -> None:
        """Sync a room with every peer in it now (the scheduler wakes for it)."""
        for key in [k for k in self._next_due if k[0] == room]:
            del self._next_due[key]
            self._periodic.discard(key)
            self._quiet.pop(key, None)
            self._gap_sessions.pop(key, None)
        self._wakeup.set()

    async def _session_task(self, room: str, peer: str) -> None:
        key = (room, peer)
        # A routine re-sync leaves out the last few seconds, a gap session the last
        # two: what is that young is mostly still on its way through gossip (in a
        # burst, for seconds).
        if key in self._periodic:
            until = _now_ms() - SETTLE_MS
        elif self._gap_sessions[key]:
            until = _now_ms() - GAP_SETTLE_MS
        else:
            until = 0
        try:
            async with self._limiter:
                differences = await self._initiate(room, peer, until)
        finally:
            self._running.discard(key)
        now = trio.current_time()
        if differences is None:
            self._failures[key] += 1
            self._periodic.discard(key)
            self._next_due[key] = now + min(MAX_BACKOFF_S, 2.0 ** self._failures[key])
            return
        self._failures.pop(key, None)
        if self._gap_sessions[key]:
            self._gap_sessions[key] -= 1
            if self._gap_sessions[key]:
                # The follow-up: what this one left out has settled by then.
                self._next_due[key] = now + GAP_SETTLE_MS / 1000
                return
            del self._gap_sessions[key]
        # A room that keeps matching is checked less and less often (up to 8x the
        # interval); any difference, gap or reconnect brings it back to the interval.
        self._quiet[key] = self._quiet[key] + 1 if differences == 0 else 0
        factor = 2 ** min(self._quiet[key], MAX_QUIET_DOUBLINGS)
        self._next_due[key] = now + self.interval_s * factor * self._rng.uniform(0.75, 1.25)
        self._periodic.add(key)

    # the initiator

    async def _initiate(self, room: str, peer: str, until: int = 0) -> int | None:
        """One session; the number of differences found, or None if it failed."""
        started = trio.current_time()
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                stream = await self.network.open_stream(peer, syncwire.PROTOCOL)
        except (StreamClosedError, GossipchatError, trio.TooSlowError) as exc:
            self._fail("open", room, peer, exc)
            return None
        framed = FramedStream(stream)
        try:
            with trio.fail_after(SESSION_TIMEOUT_S):
                have, need, repaired = await self._run_initiator(framed, room, until)
        except (StreamClosedError, trio.TooSlowError, SyncWireError, ReconcileError,
                SyncProtocolError, StoreUnavailable) as exc:
            await stream.reset()
            self._fail(type(exc).__name__, room, peer, exc)
            return None
        finally:
            self.stats.bytes_sent += framed.sent
            self.stats.bytes_received += framed.received
        await stream.close()
        self.stats.sessions_ok += 1
        state = self.rooms.setdefault(room, RoomSyncState())
        state.last_sync_ms = _now_ms()
        state.last_peer = peer
        state.repaired += repaired
        state.pushed += have
        self.stats.repaired += repaired
        self.stats.pushed += have
        self.stats.last_session = {
            "room": room, "peer": peer, "role": "initiator", "have": have, "need": need,
            "repaired": repaired, "bytes_sent": framed.sent,
            "bytes_received": framed.received,
            "ms": round(1000 * (trio.current_time() - started), 1),
        }
        if have or need:
            log.info("sync %s with %s: pushed %d, fetched %d (%d new), %d bytes", room,
                     peer, have, need, repaired, framed.sent + framed.received)
        return have + need

    async def _run_initiator(self, framed: FramedStream, room: str, until: int = 0
                             ) -> tuple[int, int, int]:
        await framed.send(Hello(room, self.store.window_start(room, self.depth), until))
        reply = await framed.recv()
        if isinstance(reply, Refuse):
            raise SyncProtocolError(f"refused: {reply.reason}")
        if not isinstance(reply, Welcome):
            raise SyncProtocolError(f"expected Welcome, got {type(reply).__name__}")
        items = self.store.sync_set(room, reply.since, until)
        initiator = reconcile.Initiator(items)
        message: bytes | None = initiator.initial_message()
        while message is not None:
            await framed.send(Reconcile(message))
            answer = await framed.recv()
            if not isinstance(answer, Reconcile):
                raise SyncProtocolError(f"expected Reconcile, got {type(answer).__name__}")
            message = initiator.receive(answer.data)
        have, need = sorted(initiator.have), sorted(initiator.need)
        for batch in syncwire.batches(await self._servable(have)):
            await framed.send(Push(batch))
        repaired = 0
        for start in range(0, len(need), syncwire.MAX_IDS_PER_WANT):
            chunk = tuple(need[start : start + syncwire.MAX_IDS_PER_WANT])
            await framed.send(Want(chunk))
            wanted = set(chunk)
            while True:
                answer = await framed.recv()
                if not isinstance(answer, Envelopes):
                    raise SyncProtocolError(
                        f"expected Envelopes, got {type(answer).__name__}")
                repaired += self.history.accept_synced(room, answer.envelopes, wanted)
                if answer.last:
                    break
        await framed.send(Done())
        return len(have), len(need), repaired

    # the responder

    async def _serve(self, stream: Stream) -> None:
        framed = FramedStream(stream)
        try:
            with trio.fail_after(SESSION_TIMEOUT_S):
                await self._run_responder(framed, stream.peer_id)
            self.stats.sessions_served += 1
        except (trio.TooSlowError, SyncWireError, ReconcileError, SyncProtocolError,
                StoreUnavailable) as exc:
            self.stats.errors[f"serve_{type(exc).__name__}"] += 1
            log.info("sync session from %s failed: %s", stream.peer_id, exc)
            await stream.reset()
        finally:
            self.stats.bytes_sent += framed.sent
            self.stats.bytes_received += framed.received

    async def _run_responder(self, framed: FramedStream, peer: str) -> None:
        hello = await framed.recv()
        if not isinstance(hello, Hello):
            raise SyncProtocolError(f"expected Hello, got {type(hello).__name__}")
        room = hello.room
        if room not in self.history.joined_rooms():
            await framed.send(Refuse(f"not in room {room!r}"))
            return
        since = max(hello.since, self.store.window_start(room, self.depth))
        await framed.send(Welcome(since))
        responder = reconcile.Responder(
            self.store.sync_set(room, since, hello.until))
        while True:
            frame = await framed.recv()
            match frame:
                case Reconcile(data):
                    await framed.send(Reconcile(responder.receive(data)))
                case Push(envelopes):
                    added = self.history.accept_synced(room, envelopes, None)
                    state = self.rooms.setdefault(room, RoomSyncState())
                    state.repaired += added
                    self.stats.repaired += added
                case Want(ids):
                    parts = syncwire.batches(await self._servable(ids)) or [()]
                    for i, batch in enumerate(parts):
                        await framed.send(Envelopes(batch, last=i == len(parts) - 1))
                case Done():
                    return
                case _:
                    raise SyncProtocolError(f"unexpected {type(frame).__name__}")

    async def _servable(self, ids: list[bytes] | tuple[bytes, ...]) -> list[bytes]:
        """The stored envelopes of `ids` that sync may hand on.

        An envelope whose own signature was never checked (a gossip message's
        signature by its author vouched for it; core/envelope.py) is checked now, once:
        a peer gets only envelopes it can check itself. One whose signature fails (its
        author sent it so on purpose) stays ours but is never served, and counts in
        `withheld` each time it would have been. Every message heard live is such an
        envelope, so a late joiner's first session may ask for thousands: the checks
        yield to the other tasks every CHECKS_PER_YIELD (62 us each).
        """
        out: list[bytes] = []
        checked: list[bytes] = []
        checks = 0
        for wire, signature_checked in self.store.wires(ids):
            if not signature_checked:
                checks += 1
                if checks % CHECKS_PER_YIELD == 0:
                    await trio.lowlevel.checkpoint()
                env = env_codec.from_trusted_wire(wire, signature_checked=False)
                if not env_codec.signature_valid(env):
                    self.stats.withheld += 1
                    continue
                checked.append(env.id)
            out.append(wire)
        if checked:
            try:
                self.store.mark_signatures_checked(checked)
            except StoreUnavailable:
                pass  # checked again next time
        return out

    def _fail(self, what: str, room: str, peer: str, exc: BaseException) -> None:
        self.stats.sessions_failed += 1
        self.stats.errors[what] += 1
        log.info("sync %s with %s failed (%s): %s", room, peer, what, exc)

    def view(self) -> dict[str, Any]:
        """The sync part of `status`."""
        return {
            "sessions_ok": self.stats.sessions_ok,
            "sessions_failed": self.stats.sessions_failed,
            "sessions_served": self.stats.sessions_served,
            "repaired": self.stats.repaired,
            "pushed": self.stats.pushed,
            "withheld": self.stats.withheld,
            "bytes_sent": self.stats.bytes_sent,
            "bytes_received": self.stats.bytes_received,
            "errors": dict(self.stats.errors),
            "last_session": self.stats.last_session,
        }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
