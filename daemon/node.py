"""The node's service API: the one facade that the RPC server and the tests call.

Rules:
- `Node.run` owns the node's state: room states, subscriptions, the outbound queue.
  It starts the network and its own tasks in its nursery and nothing else spawns.
- Every state change happens in synchronous code between awaits, so the trio tasks
  of one node never see half an update.
- `send` returns only after its message is committed to the store; getting it out
  to the room is the node's job from then on.
- Everything from the network is decoded and verified before it is stored; what
  fails is dropped and counted by reason in `status`.
- A store that fails (full disk, damaged page) never stops the node: reads, relaying
  and answering peers go on, `status.store` says what is wrong, verified envelopes
  wait in a bounded buffer, and one task retries the write with back-off. Once a
  write succeeds, every room syncs again to fetch what the buffer could not hold.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from . import __version__
from .adapters.autonat import AutoNAT
from .adapters.blockstore import BlockStore, BlockStoreError
from .adapters.exchange import BlockExchange
from .adapters.identity import Identity
from .adapters.p2p import GossipMessage, P2PNetwork, PeerEvent
from .adapters.relay import Relay
from .adapters.store import Store
from .config import Config
from .core import envelope as env_codec
from .core import peerid
from .core import presence as presence_codec
from .core.connmgr import Limits
from .core.envelope import CHAT_KINDS, Envelope, EnvelopeError
from .core.relay import RelayLimits
from .core.rooms import RoomState, check_room_name, room_of_topic, topic_for
from .core.store_health import Backoff, PendingEnvelopes, StoreHealth
from .errors import (
    GossipchatError,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    NotInRoom,
    ResponseTooLarge,
    ShuttingDown,
    StoreUnavailable,
)
from .images import ImageService, Progress
from .presence import PresenceService
from .redial import Redialer
from .sync import SyncService

log = logging.getLogger(__name__)

# How many inbound gossip messages one store transaction takes at most.
INBOUND_BATCH = 256


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


def _opt_str(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")
    return value


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


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false")
    return value


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
class NodeStats:
    """Counters for `status`."""

    rejected: Counter[str] = field(default_factory=Counter)
    received_new: int = 0
    received_duplicate: int = 0
    sent: int = 0
    subscriptions_overflowed: int = 0
    gaps_suspected: int = 0
    # Resource limits hit, by config key, and bugs contained, by surface (docs/limits.md).
    limits: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)


class Node:
    """One gossipchat peer: identity, store, network and rooms."""

    def __init__(self, config: Config, identity: Identity, store: Store,
                 network: P2PNetwork, blocks: BlockStore) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.network = network
        self.stats = NodeStats()
        self.started_at = time.monotonic()
        self._rooms: dict[str, RoomState] = {}
        self._joined_set: set[str] = set(store.joined_rooms())
        # The nick on each author's newest message heard, with that message's ts.
        self._nicks: dict[str, tuple[str, int]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._next_subscription = 1
        self._outbound: deque[tuple[str, bytes]] = deque()
        self._outbound_ready = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self.stop_requested = trio.Event()
        self.store_health = StoreHealth()
        self._pending = PendingEnvelopes()
        self._store_retry = Backoff()
        self._store_wakeup = trio.Event()
        store.on_error = self._on_store_error
        self.web_url: str | None = None  # set by the daemon when the web UI listens
        self.nick_name = _usable_nick(store.get_setting("nick")) or config.nick
        self.sync = SyncService(self, network, interval_s=config.sync_interval_s,
                                depth=config.sync_depth)
        self.redialer = Redialer(network, store)
        self.presence = PresenceService(self, network, limits=Limits(
            room_peers_min=config.room_peers_min, room_peers_max=config.room_peers_max,
            max_connections=config.max_connections), interval_s=config.presence_interval_s)
        self.redialer.defer = self.presence.manages
        self.images = ImageService(self, config, blocks, BlockExchange(network, blocks))
        self.autonat = AutoNAT(network)
        self.relay = Relay(network, self.autonat, serve=config.relay_service,
                           want=config.relay_reservations, limits=RelayLimits(
                               max_reservations=config.relay_max_reservations,
                               max_circuits=config.relay_max_circuits,
                               max_circuits_per_peer=config.relay_max_circuits_per_peer,
                               reservation_ttl_s=config.relay_reservation_ttl_s,
                               circuit_duration_s=config.relay_circuit_duration_s,
                               circuit_bytes=config.relay_circuit_bytes))

    # lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the network, rejoin rooms, and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.network.run)
            for peer in self.store.blocked():
                await self.network.block(peer)
            for room in self.store.joined_rooms():
                self._room_state(room)
                await self.network.subscribe(topic_for(room))
                await self.network.subscribe(presence_codec.topic_for(room))
            nursery.start_soon(self._process_inbound)
            nursery.start_soon(self._process_peer_events)
            nursery.start_soon(self._publish_outbound)
            nursery.start_soon(self._retry_store_writes)
            await nursery.start(self.sync.run)
            # Presence first: it loads the directories the Redialer defers to.
            await nursery.start(self.presence.run)
            await nursery.start(self.redialer.run)
            await nursery.start(self.images.run)
            await nursery.start(self.autonat.run)
            await nursery.start(self.relay.run)
            for addr in self.config.bootstrap:
                nursery.start_soon(self._bootstrap, addr)
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._stopping = True
                self._nursery = None
                for sub in list(self._subscriptions.values()):
                    sub.send.close()
                nursery.cancel_scope.cancel()

    def count_limit(self, key: str) -> None:
        """Count a request refused or cut by the resource limit `key`."""
        self.stats.limits[key] += 1

    def count_fault(self, surface: str) -> None:
        """Count an unexpected error that one input caused and the daemon contained."""
        self.stats.faults[surface] += 1

    def _faults(self) -> dict[str, int]:
        faults = dict(self.stats.faults)
        for protocol, count in self.network.stats.stream_faults.items():
            faults[f"stream {protocol}"] = count
        bitswap = self.images.exchange.view()["stream_faults"]
        if bitswap:
            faults["stream bitswap"] = bitswap
        return faults

    def request_stop(self) -> None:
        """Ask the daemon to stop (the `shutdown` method)."""
        self._stopping = True
        self.stop_requested.set()

    def joined_rooms(self) -> list[str]:
        """Rooms this node is in."""
        return sorted(self._joined_set)

    def _check_running(self) -> None:
        if self._stopping:
            raise ShuttingDown("the daemon is shutting down")

    async def _bootstrap(self, addr: str) -> None:
        delay = 0.5
        for _attempt in range(8):
            try:
                await self.network.connect(addr)
                return
            except GossipchatError as exc:  # keep trying: a bootstrap peer may start later
                log.info("bootstrap %s: %s; retrying in %.1f s", addr, exc.message, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # rooms

    def _room_state(self, room: str) -> RoomState:
        state = self._rooms.get(room)
        if state is None:
            state = RoomState(room)
            state.clock.observe(self.store.max_lamport(room))
            self._rooms[room] = state
        return state

    def _joined(self, room: object) -> RoomState:
        name = check_room_name(room)
        state = self._rooms.get(name)
        if state is None or name not in self._joined_set:
            raise NotInRoom(f"not in room {name!r}; join it first (p2pctl join {name})")
        return state

    # the service API

    def id(self) -> dict[str, Any]:
        """Peer id, listen addresses and nickname."""
        return {
            "peer_id": self.identity.peer_id_text,
            "addrs": self.network.listen_addrs(),
            "nick": self.nick_name,
        }

    def status(self) -> dict[str, Any]:
        """Version, uptime, peers, rooms and store counts."""
        gossip = self.network.stats
        return {
            "version": __version__,
            "peer_id": self.identity.peer_id_text,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "peers": len(self.network.connected_peers()),
            "rooms": len(self._joined_set),
            "messages": self._message_count(),
            "blocks": self.images.blocks.count,
            "reachability": self.autonat.verdict(),
            "autonat": self.autonat.view(),
            "relay": self.relay.view(),
            "web": self.web_url,
            "images": self.images.view(),
            "gossip": {
                "published": gossip.published,
                "publish_waits": gossip.publish_waits,
                "received": gossip.received,
                "inbound_dropped": gossip.inbound_dropped,
                "outbound_dropped": gossip.outbound_dropped,
                "outbound_queued": len(self._outbound),
            },
            "received_new": self.stats.received_new,
            "gaps_suspected": self.stats.gaps_suspected,
            "received_duplicate": self.stats.received_duplicate,
            "rejected": dict(self.stats.rejected),
            "limits": dict(self.stats.limits),
            "faults": self._faults(),
            "subscriptions": len(self._subscriptions),
            "sync": self.sync.view(),
            "redial": {"attempts": self.redialer.attempts,
                       "reconnected": self.redialer.reconnected},
            "connections": self.presence.connections_view(),
            "presence": self.presence.view(),
            "store": {**self.store_health.view(), "pending": len(self._pending),
                      "pending_dropped": self._pending.dropped},
        }

    def _message_count(self) -> int | None:
        # status must answer on a damaged store too: the count is what it can spare.
        try:
            return self.store.count_messages()
        except StoreUnavailable:
            return None

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers with address and shared rooms."""
        out = []
        for snap in self.network.snapshot():
            rooms = sorted(r for t in snap.topics if (r := room_of_topic(t)) is not None)
            out.append({"peer_id": snap.peer_id, "addrs": snap.addrs, "rooms": rooms})
        return sorted(out, key=lambda p: p["peer_id"])

    async def connect(self, addr: object) -> dict[str, Any]:
        """Dial a peer by multiaddr."""
        self._check_running()
        if not isinstance(addr, str):
            raise InvalidArgument("addr must be a multiaddr string")
        return {"peer_id": await self.network.connect(addr)}

    async def set_nick(self, name: object) -> dict[str, Any]:
        """Set the display name and announce it to every joined room."""
        self._check_running()
        if not isinstance(name, str):
            raise InvalidArgument("name must be a string")
        try:
            # Peers apply the same rule on decode: a nick they would refuse is refused here.
            nick = env_codec.check_nick(name.strip())
        except EnvelopeError as exc:
            raise InvalidArgument(exc.detail) from None
        self.store.set_setting("nick", nick)
        self.nick_name = nick
        for room in self.store.joined_rooms():
            self._publish_local(room, "nick", {"nick": nick})
        self.presence.changed()
        return {"nick": nick}

    async def join(self, room: object) -> dict[str, Any]:
        """Join a room (persisted) and announce ourselves in it."""
        self._check_running()
        name = check_room_name(room)
        already = name in self._joined_set
        self.store.join_room(name, now_ms())
        self._joined_set.add(name)
        self._room_state(name)
        await self.network.subscribe(topic_for(name))
        await self.network.subscribe(presence_codec.topic_for(name))
        if not already:
            self.presence.joined(name)
            self._publish_local(name, "join", self._nick_body())
            self.sync.sync_now(name)
        return {"room": name}

    async def leave(self, room: object) -> dict[str, Any]:
        """Leave a room; its history stays in the store."""
        self._check_running()
        state = self._joined(room)
        self._publish_local(state.name, "leave", self._nick_body())
        self.store.leave_room(state.name)
        self.images.unpin_room(state.name)
        self._joined_set.discard(state.name)
        self.presence.left(state.name)
        await self.network.unsubscribe(topic_for(state.name))
        await self.network.unsubscribe(presence_codec.topic_for(state.name))
        return {"room": state.name}

    def rooms(self) -> list[dict[str, Any]]:
        """Joined rooms with member and message counts."""
        out = []
        for room in self.store.joined_rooms():
            sync = self.sync.rooms.get(room)
            out.append({
                "room": room,
                "members": len(self.presence.members(room)),
                "messages": self.store.count_messages(room),
                "last_sync": sync.last_sync_ms if sync else 0,
                "repaired": sync.repaired if sync else 0,
            })
        return out

    def members(self, room: object) -> list[dict[str, Any]]:
        """The room's members from its presence directory, this node included:
        nick, when each was last heard (ms) and whether it is online now."""
        state = self._joined(room)
        rows = self.presence.members(state.name)
        for row in rows:
            # A nick set since the member's last announcement shows on its messages first.
            heard = self._nicks.get(row["peer_id"])
            if heard is not None and heard[1] >= row["last_seen"]:
                row["nick"] = heard[0]
        return rows

    async def send(self, room: object, text: object) -> dict[str, Any]:
        """Post a text message; returns it once it is committed locally."""
        self._check_running()
        state = self._joined(room)
        if not isinstance(text, str):
            raise InvalidArgument("text must be a string")
        if not text.strip():
            raise InvalidArgument("text is empty")
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > env_codec.MAX_TEXT_BYTES:
            raise MessageTooLarge(f"text too large: {size} bytes, limit 65536 (64 KiB)")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument("text is not valid Unicode (lone surrogate)") from None
        env = self._publish_local(state.name, "text", {**self._nick_body(), "text": text})
        return message_view(env)

    async def send_image(self, room: object, path: object = None, data: object = None,
                         caption: object = None, filename: object = None,
                         keep_metadata: object = False) -> dict[str, Any]:
        """Post an image (a file path or base64 data) with an optional caption."""
        self._check_running()
        state = self._joined(room)
        env = await self.images.send_image(
            state.name, path=_opt_str("path", path), data=_opt_str("data", data),
            caption=_opt_str("caption", caption), filename=_opt_str("filename", filename),
            keep_metadata=_flag("keep_metadata", keep_metadata))
        return message_view(env)

    async def fetch(self, cid: object, path: object = None, dir: object = None,
                    force: object = False, timeout: object = None,  # noqa: ASYNC109 - RPC name
                    progress: Progress | None = None) -> dict[str, Any]:
        """Fetch an image by CID from the peers that hold it; optionally write it out."""
        self._check_running()
        cid_text = _opt_str("cid", cid)
        if cid_text is None:
            raise InvalidArgument("cid is required")
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, int | float)):
            raise InvalidArgument("timeout must be a number of seconds")
        return await self.images.fetch(
            cid_text, path=_opt_str("path", path), directory=_opt_str("dir", dir),
            force=_flag("force", force),
            timeout_s=float(timeout) if timeout is not None else None, progress=progress)

    def post(self, room: str, kind: str, body: dict[str, Any]) -> Envelope:
        """Commit and publish a message of ours in a joined room."""
        state = self._joined(room)
        return self._publish_local(state.name, kind, {**self._nick_body(), **body})

    def history(self, room: object, limit: object = None,
                before: object = None) -> list[dict[str, Any]]:
        """The newest `limit` messages of a room (before a message id), oldest first.

        An answer larger than `rpc_max_response_bytes` is refused before it is built,
        with a hint to page back with `before`.
        """
        state = self._joined(room)
        if limit is None:
            count = self.config.history_default_limit
        elif type(limit) is int and 1 <= limit <= self.config.history_max_limit:
            count = limit
        else:
            raise InvalidArgument(
                f"limit must be an integer from 1 to {self.config.history_max_limit}"
            )
        position = None
        if before is not None:
            raw = _message_id("before", before)
            found = self.store.position(raw)
            if found is None:
                raise NotFound(f"unknown message id {before}")
            if found.room != state.name:
                raise InvalidArgument(f"message {before} is not in room {state.name!r}")
            position = found.position
        envelopes = self.store.history(state.name, count, position)
        budget = self.config.rpc_max_response_bytes
        size = 0
        for env in envelopes:
            # A message's JSON view is about its wire size plus the field names; a
            # thumbnail grows by a third in base64.
            size += len(env.wire) + 300
            if env.kind == "image":
                size += len(env.body["thumbnail"]) // 3
        if size > budget:
            raise ResponseTooLarge(
                f"{len(envelopes)} messages of {state.name!r} make about {size} bytes, "
                f"over the {budget} one answer may hold; ask for a smaller limit and "
                "page back with before=<id of the oldest message you have>",
                {"approx_bytes": size, "max_bytes": budget})
        verdicts = self.store.image_verdicts(e.id for e in envelopes if e.kind == "image")
        return [message_view(e, verdicts.get(e.id)) for e in envelopes]

    # subscriptions

    def subscribe(self, rooms: object = None) -> Subscription:
        """A feed of new messages in the given rooms (default: all joined rooms)."""
        self._check_running()
        chosen: frozenset[str] | None = None
        if rooms is not None:
            if not isinstance(rooms, list) or not rooms:
                raise InvalidArgument("rooms must be a non-empty list of room names")
            chosen = frozenset(self._joined(r).name for r in rooms)
        send, receive = trio.open_memory_channel[dict[str, Any]](self.config.subscriber_buffer)
        sub = Subscription(str(self._next_subscription), chosen, send, receive)
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

    def _deliver(self, envelopes: Iterable[Envelope]) -> None:
        for env in envelopes:
            if env.kind not in CHAT_KINDS:
                continue
            view: dict[str, Any] | None = None
            for sub in list(self._subscriptions.values()):
                if not sub.wants(env.room):
                    continue
                if sub.rooms is None and env.room not in self._joined_set:
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

    # block list

    async def block(self, peer: object) -> dict[str, Any]:
        """Drop a peer and refuse it from now on (persisted)."""
        peer_id = self._check_peer(peer)
        if peer_id == self.identity.peer_id_text:
            raise InvalidArgument("cannot block this node itself")
        self.store.block(peer_id, now_ms())
        await self.network.block(peer_id)
        return {"peer": peer_id}

    def unblock(self, peer: object) -> dict[str, Any]:
        """Accept a peer again."""
        peer_id = self._check_peer(peer)
        self.store.unblock(peer_id)
        self.network.unblock(peer_id)
        self.redialer.lost(peer_id)
        self.presence.wake()
        return {"peer": peer_id}

    def blocked(self) -> list[str]:
        """The blocked peer ids."""
        return self.store.blocked()

    @staticmethod
    def _check_peer(peer: object) -> str:
        if not isinstance(peer, str) or not peerid.is_valid_text(peer):
            raise InvalidArgument(f"not a peer id: {peer!r}")
        return peer

    # outbound

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

    # inbound

    async def _process_inbound(self) -> None:
        receive = self.network.inbound
        while True:
            batch = [await receive.receive()]
            while len(batch) < INBOUND_BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                self.accept_gossip(batch)
            except StoreUnavailable as exc:  # counted in store_health; keep taking gossip
                log.debug("gossip intake: %s", exc.message)
            except Exception:
                # A bug that one batch triggers costs that batch (sync repairs it from
                # peers), never the intake task and with it the daemon.
                log.exception("gossip intake failed on a batch of %d", len(batch))
                self.count_fault("gossip")
            await trio.lowlevel.checkpoint()

    def accept_gossip(self, batch: list[GossipMessage]) -> None:
        """Verify, store and deliver gossip; count and drop what fails."""
        now = now_ms()
        valid: list[Envelope] = []
        for msg in batch:
            room = room_of_topic(msg.topic)
            if room is None:
                if presence_codec.room_of_topic(msg.topic) is not None:
                    self.presence.accept_gossip(msg)
                else:
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
        self.accept_envelopes(valid, now)

    def accept_envelopes(self, envelopes: list[Envelope], now: int, *, live: bool = True
                         ) -> list[Envelope]:
        """Store verified envelopes; update rooms and feeds with those that are new."""
        wanted = [
            e for e in envelopes
            if e.room in self._joined_set and not self.network.is_blocked(e.author_text)
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
                    self.sync.suspect_gap(env.room, source)
            state.clock.observe(env.lamport)
            state.saw(env.author_text, env.nick, env.ts_ms)
            if env.nick and env.ts_ms >= self._nicks.get(env.author_text, ("", -1))[1]:
                self._nicks[env.author_text] = (env.nick, env.ts_ms)
            if env.kind == "image":
                try:
                    self.images.on_image(env)
                except BlockStoreError as exc:  # e.g. a full disk: fetch on demand later
                    log.warning("image %s not pinned: %s", env.body.get("cid"), exc)
        self._deliver(added)
        return added

    # store health

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
        for room in self._joined_set:
            self.sync.sync_now(room)

    def _any_room_peer(self, room: str) -> str | None:
        peers = self.network.topic_peers(topic_for(room))
        return peers[0] if peers else None

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
        return len(self.accept_envelopes(valid, now, live=False))

    async def _process_peer_events(self) -> None:
        async for event in self.network.peer_events:
            try:
                self.on_peer_event(event)
            except StoreUnavailable as exc:  # counted in store_health; keep watching peers
                log.debug("peer event %s: %s", event.peer_id, exc.message)

    def on_peer_event(self, event: PeerEvent) -> None:
        """React to a connection coming up or going down."""
        if not event.connected:
            if not self.network.is_connected(event.peer_id):
                self.sync.forget_peer(event.peer_id)
                self.presence.peer_lost(event.peer_id)
                self.relay.peer_lost(event.peer_id)
                # Room members are the connection manager's to replace or redial.
                if not self._stopping:
                    self.redialer.lost(event.peer_id)
            return
        if self.network.is_blocked(event.peer_id) and self._nursery is not None:
            self._nursery.start_soon(self.network.hang_up, event.peer_id)
            return
        # A connection coming up is a reason to sync, from both sides. The event of the
        # connection that went before it may have been read only after this one came up
        # (so it did not look like a loss): without this, a pair's routine schedule
        # would survive a reconnect and leave the session to one side only.
        self.sync.forget_peer(event.peer_id)
        addrs = self.network.peer_addrs(event.peer_id)
        if addrs:
            self.store.remember_peer(event.peer_id, addrs, now_ms())
