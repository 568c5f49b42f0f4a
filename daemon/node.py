"""The node's service API: the one facade that the RPC server and the web UI call.

Rules:
- `Node` is exactly the RPC surface: each public method is one JSON-RPC method of
  INTERFACE.md (and `count_limit`, `count_fault`, `request_stop` for the servers).
  It checks parameters and hands the work to the layer that owns it.
- The layers below it take what they use and never reach back: `History` (history.py)
  owns the joined rooms and their messages; `SyncService`, `ImageService`,
  `PresenceService` and `Redialer` take the history, the store and the network.
  `Node.__init__` wires them (the hooks of History included) and `Node.run` starts
  them in its nursery; nothing else spawns.
- Every state change happens in synchronous code between awaits, so the trio tasks
  of one node never see half an update.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from . import __version__
from .adapters.autonat import AutoNAT
from .adapters.blockstore import BlockStore, BlockStoreError
from .adapters.dcutr import HolePuncher
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
from .core.envelope import Envelope, EnvelopeError
from .core.intake import IntakePacer
from .core.relay import RelayLimits
from .core.rooms import check_room_name, room_of_topic, topic_for
from .errors import (
    GossipchatError,
    InvalidArgument,
    MessageTooLarge,
    ShuttingDown,
    StoreUnavailable,
)
from .history import INBOUND_BATCH, History, Subscription, message_view, now_ms
from .images import ImageService, Progress
from .presence import PresenceService
from .redial import Redialer
from .sync import SyncService

__all__ = ["Node", "Subscription", "message_view", "now_ms"]

log = logging.getLogger(__name__)


def _opt_str(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false")
    return value


@dataclass
class NodeStats:
    """Counters for `status` that belong to no layer below: limits and faults."""

    # Resource limits hit, by config key, and bugs contained, by surface (docs/limits.md).
    limits: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    # Gossip intake: batches written, and how many of them waited for more.
    intake_batches: int = 0
    intake_lingered: int = 0


class Node:
    """One gossipchat peer: identity, store, network, rooms and the services on them."""

    def __init__(self, config: Config, identity: Identity, store: Store,
                 network: P2PNetwork, blocks: BlockStore) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.network = network
        self.stats = NodeStats()
        self.started_at = time.monotonic()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self.stop_requested = trio.Event()
        self.web_url: str | None = None  # set by the daemon when the web UI listens
        self.room_history = History(identity, store, network, default_nick=config.nick,
                               subscriber_buffer=config.subscriber_buffer)
        self.sync = SyncService(self.room_history, store, network,
                                interval_s=config.sync_interval_s, depth=config.sync_depth)
        # Discovery services (service.py registers them) by name, each with its view.
        self.discovery: dict[str, Callable[[], dict[str, Any]]] = {}
        self.redialer = Redialer(network, store)
        self.presence = PresenceService(
            self.room_history, store, network, identity, limits=Limits(
                room_peers_min=config.room_peers_min, room_peers_max=config.room_peers_max,
                max_connections=config.max_connections),
            interval_s=config.presence_interval_s)
        # Room members are the connection manager's to redial; peers this node hung up
        # on (a DHT query's connection, a trim) are not to be redialled at all.
        self.redialer.defer = lambda peer: (self.presence.manages(peer)
                                            or network.hung_up_lately(peer))
        self.images = ImageService(self.room_history, store, network, config, blocks,
                                   BlockExchange(network, blocks,
                                                 max_wants_per_peer=config.max_wants_per_peer))
        network.on_topic_peer = self.presence.topic_peer
        self.room_history.on_gap = self.sync.suspect_gap
        self.room_history.on_image = self._on_image
        self.room_history.on_store_recovered = self._on_store_recovered
        self.autonat = AutoNAT(network, forced=None if config.reachability == "auto"
                               else config.reachability)
        self.relay = Relay(network, self.autonat, serve=config.relay_service,
                           want=config.relay_reservations, limits=RelayLimits(
                               max_reservations=config.relay_max_reservations,
                               max_circuits=config.relay_max_circuits,
                               max_circuits_per_peer=config.relay_max_circuits_per_peer,
                               reservation_ttl_s=config.relay_reservation_ttl_s,
                               circuit_duration_s=config.relay_circuit_duration_s,
                               circuit_bytes=config.relay_circuit_bytes))
        self.holepunch = HolePuncher(network, enabled=config.hole_punching)
        self.relay.on_inbound_circuit = self.holepunch.relayed_inbound

    # lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the network, rejoin rooms, and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.network.run)
            for peer in self.store.blocked():
                await self.network.block(peer)
            for room in self.room_history.joined_rooms():
                await self.network.subscribe(topic_for(room), self.room_history.validate_gossip)
                await self.network.subscribe(presence_codec.topic_for(room),
                                             self.presence.validate_gossip)
            await nursery.start(self.room_history.run)
            nursery.start_soon(self._process_inbound)
            nursery.start_soon(self._process_peer_events)
            await nursery.start(self.sync.run)
            # Presence first: it loads the directories the Redialer defers to.
            await nursery.start(self.presence.run)
            await nursery.start(self.redialer.run)
            await nursery.start(self.images.run)
            await nursery.start(self.autonat.run)
            await nursery.start(self.relay.run)
            await nursery.start(self.holepunch.run)
            for addr in self.config.bootstrap:
                nursery.start_soon(self._bootstrap, addr)
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._stopping = True
                self._nursery = None
                nursery.cancel_scope.cancel()

    def count_limit(self, key: str) -> None:
        """Count a request refused or cut by the resource limit `key`."""
        self.stats.limits[key] += 1

    def count_fault(self, surface: str) -> None:
        """Count an unexpected error that one input caused and the daemon contained."""
        self.stats.faults[surface] += 1

    def _limits(self) -> dict[str, int]:
        """`status.limits`: refusals by limit, the RPC server's and the layers' below."""
        limits = dict(self.stats.limits)
        gossip = self.network.stats
        for key, count in (
                ("inbound_connections", gossip.refused["inbound_total"]),
                ("inbound_per_ip", gossip.refused["inbound_per_ip"]),
                ("gossip_rate", sum(gossip.rate_limited.values())),
                ("concurrent_fetches", self.images.fetch_slots.timed_out),
                ("streams_per_connection", gossip.refused_streams["per_connection"]),
                ("streams_per_protocol", sum(n for p, n in gossip.refused_streams.items()
                                             if p != "per_connection")),
                ("wants_per_peer", self.images.exchange.bitswap.stats.wants_dropped)):
            if count:
                limits[key] = count
        return limits

    def _faults(self) -> dict[str, int]:
        faults = dict(self.stats.faults)
        for protocol, count in self.network.stats.stream_faults.items():
            faults[f"stream {protocol}"] = count
        bitswap = self.images.exchange.bitswap.stats.stream_faults
        if bitswap:
            faults["stream bitswap"] = bitswap
        return faults

    def request_stop(self) -> None:
        """Ask the daemon to stop (the `shutdown` method)."""
        self._stopping = True
        self.stop_requested.set()

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

    # the service API

    def id(self) -> dict[str, Any]:
        """Peer id, listen addresses and nickname."""
        return {
            "peer_id": self.identity.peer_id_text,
            "addrs": self.network.listen_addrs(),
            "nick": self.room_history.nick_name,
        }

    def status(self) -> dict[str, Any]:
        """Version, uptime, peers, rooms and store counts."""
        gossip = self.network.stats
        history = self.room_history.stats
        connected = self.network.connected_peers()  # read once: four sections use it
        return {
            "version": __version__,
            "peer_id": self.identity.peer_id_text,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "peers": len(connected),
            "rooms": len(self.room_history.joined_rooms()),
            "messages": self._message_count(),
            "blocks": self.images.blocks.count,
            "reachability": self.autonat.verdict(),
            "autonat": self.autonat.view(),
            "relay": self.relay.view(),
            "holepunch": self.holepunch.view(),
            "web": self.web_url,
            "images": self.images.view(),
            "gossip": {
                "published": gossip.published,
                "publish_waits": gossip.publish_waits,
                "received": gossip.received,
                "inbound_dropped": gossip.inbound_dropped,
                "outbound_dropped": gossip.outbound_dropped,
                "outbound_queued": self.room_history.outbound_queued,
                "rate_limited": dict(gossip.rate_limited),
                "flooders_cut": gossip.flooders_cut,
                "max_msgs_per_peer_s": self.network.limits.gossip_rate,
                "burst_per_peer": self.network.limits.gossip_burst,
                "bucket_low": int(self.network.gossip_limiter.lowest_tokens),
                "score": self.network.score_view(connected),
                "copies_dropped": self.network.router.duplicates,
                "copies_withheld": self.network.router.withdrawn,
                "broken_promises": self.network.router.broken_promises,
                "frames_in": self.network.pubsub.frames_in,
                "frames_out": self.network.pubsub.frames_out,
                "intake_batches": self.stats.intake_batches,
                "intake_lingered": self.stats.intake_lingered,
            },
            "received_new": history.received_new,
            "gaps_suspected": history.gaps_suspected,
            "received_duplicate": history.received_duplicate,
            "rejected": dict(history.rejected),
            "limits": self._limits(),
            "faults": self._faults(),
            "subscriptions": self.room_history.subscriptions,
            "sync": self.sync.view(),
            "redial": {"attempts": self.redialer.attempts,
                       "reconnected": self.redialer.reconnected},
            "connections": {**self.presence.connections_view(connected),
                            "inbound": self.network.inbound_count(),
                            "max_inbound_connections": self.network.limits.inbound.max_total,
                            "max_inbound_per_ip": self.network.limits.inbound.max_per_ip,
                            "refused": dict(gossip.refused),
                            "streams_refused": dict(gossip.refused_streams)},
            "presence": self.presence.view(connected),
            "discovery": self.discovery_view(),
            "store": self.room_history.store_view(),
        }

    def discovery_view(self) -> dict[str, Any]:
        """The `discovery` section of `status`: one entry per discovery service."""
        return {name: view() for name, view in sorted(self.discovery.items())}

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
            out.append({"peer_id": snap.peer_id, "addrs": snap.addrs, "rooms": rooms,
                        "score": round(snap.score, 2)})
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
        self.room_history.set_nick(nick)
        self.presence.changed()
        return {"nick": nick}

    async def join(self, room: object) -> dict[str, Any]:
        """Join a room (persisted) and announce ourselves in it."""
        self._check_running()
        name = check_room_name(room)
        new = self.room_history.join(name)
        if new:
            # Before the subscriptions go out: a member that hears of them announces
            # at once, and a record that came before the directory would be ignored.
            self.presence.joined(name)
        await self.network.subscribe(topic_for(name), self.room_history.validate_gossip)
        await self.network.subscribe(presence_codec.topic_for(name),
                                     self.presence.validate_gossip)
        if new:
            self.sync.sync_now(name)
        return {"room": name}

    async def leave(self, room: object) -> dict[str, Any]:
        """Leave a room; its history stays in the store."""
        self._check_running()
        name = self.room_history.room(room)
        self.room_history.leave(name)
        self.images.unpin_room(name)
        self.presence.left(name)
        await self.network.unsubscribe(topic_for(name))
        await self.network.unsubscribe(presence_codec.topic_for(name))
        return {"room": name}

    def rooms(self) -> list[dict[str, Any]]:
        """Joined rooms with member and message counts."""
        out = []
        for room in self.room_history.joined_rooms():
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
        rows = self.presence.members(self.room_history.room(room))
        for row in rows:
            # A nick set since the member's last announcement shows on its messages
            # first. Both times are the member's own clock: a record's seq and a
            # message's ts. When we heard each does not matter (an old record can
            # arrive after a newer message, from a directory fetch).
            nick_ms = row.pop("nick_ms")
            heard = self.room_history.newest_nick(row["peer_id"])
            if heard is not None and heard[1] >= nick_ms:
                row["nick"] = heard[0]
        return rows

    async def send(self, room: object, text: object) -> dict[str, Any]:
        """Post a text message; returns it once it is committed locally."""
        self._check_running()
        name = self.room_history.room(room)
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
        return message_view(self.room_history.post(name, "text", {"text": text}))

    async def send_image(self, room: object, path: object = None, data: object = None,
                         caption: object = None, filename: object = None,
                         keep_metadata: object = False) -> dict[str, Any]:
        """Post an image (a file path or base64 data) with an optional caption."""
        self._check_running()
        name = self.room_history.room(room)
        env = await self.images.send_image(
            name, path=_opt_str("path", path), data=_opt_str("data", data),
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

    def history(self, room: object, limit: object = None,
                   before: object = None) -> list[dict[str, Any]]:
        """The newest `limit` messages of a room (before a message id), oldest first.

        An answer larger than `rpc_max_response_bytes` is refused before it is built,
        with a hint to page back with `before`.
        """
        name = self.room_history.room(room)
        if limit is None:
            count = self.config.history_default_limit
        elif type(limit) is int and 1 <= limit <= self.config.history_max_limit:
            count = limit
        else:
            raise InvalidArgument(
                f"limit must be an integer from 1 to {self.config.history_max_limit}"
            )
        if before is not None and not isinstance(before, str):
            raise InvalidArgument(f"before: {before!r} is not a message id "
                                  "(64 hex characters)")
        return self.room_history.history(name, count, before, self.config.rpc_max_response_bytes)

    # subscriptions

    def subscribe(self, rooms: object = None) -> Subscription:
        """A feed of new messages in the given rooms (default: all joined rooms)."""
        self._check_running()
        chosen: frozenset[str] | None = None
        if rooms is not None:
            if not isinstance(rooms, list) or not rooms:
                raise InvalidArgument("rooms must be a non-empty list of room names")
            chosen = frozenset(self.room_history.room(r) for r in rooms)
        return self.room_history.subscribe(chosen)

    def unsubscribe(self, subscription: object) -> bool:
        """End a feed."""
        return self.room_history.unsubscribe(subscription)

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

    # wiring: what the layers below report, handed to the ones that act on it

    def _on_image(self, env: Envelope) -> None:
        try:
            self.images.on_image(env)
        except BlockStoreError as exc:  # e.g. a full disk: fetch on demand later
            log.warning("image %s not pinned: %s", env.body.get("cid"), exc)

    def _on_store_recovered(self, rooms: list[str]) -> None:
        for room in rooms:
            self.sync.sync_now(room)

    async def _process_inbound(self) -> None:
        receive = self.network.inbound
        pacer = IntakePacer()
        while True:
            batch = [await receive.receive()]
            while len(batch) < INBOUND_BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            linger = pacer.linger(trio.current_time())
            if linger and len(batch) < INBOUND_BATCH:
                self.stats.intake_lingered += 1
                with trio.move_on_after(linger):
                    while len(batch) < INBOUND_BATCH:
                        batch.append(await receive.receive())
            self.stats.intake_batches += 1
            pacer.took(trio.current_time(), len(batch))
            try:
                self._route_gossip(batch)
            except StoreUnavailable as exc:  # counted in store_health; keep taking gossip
                log.debug("gossip intake: %s", exc.message)
            except Exception:
                # A bug that one batch triggers costs that batch (sync repairs it from
                # peers), never the intake task and with it the daemon.
                log.exception("gossip intake failed on a batch of %d", len(batch))
                self.count_fault("gossip")
            await trio.lowlevel.checkpoint()

    def _route_gossip(self, batch: list[GossipMessage]) -> None:
        chat: list[GossipMessage] = []
        for msg in batch:
            if presence_codec.room_of_topic(msg.topic) is not None:
                self.presence.accept_gossip(msg)
            else:
                chat.append(msg)
        self.room_history.accept_gossip(chat)

    async def _process_peer_events(self) -> None:
        async for event in self.network.peer_events:
            try:
                self._on_peer_event(event)
            except StoreUnavailable as exc:  # counted in store_health; keep watching peers
                log.debug("peer event %s: %s", event.peer_id, exc.message)

    def _on_peer_event(self, event: PeerEvent) -> None:
        """React to a connection coming up or going down."""
        if not event.connected:
            if not self.network.is_connected(event.peer_id):
                self.sync.forget_peer(event.peer_id)
                self.presence.peer_lost(event.peer_id, relayed=event.relayed)
                self.relay.peer_lost(event.peer_id)
                # Room members are the connection manager's to replace or redial.
                if not self._stopping:
                    self.redialer.lost(event.peer_id)
            return
        if self.network.is_blocked(event.peer_id):
            return  # the network closes its connections as they come up (_admit)
        # A connection coming up is a reason to sync, from both sides. The event of the
        # connection that went before it may have been read only after this one came up
        # (so it did not look like a loss): without this, a pair's routine schedule
        # would survive a reconnect and leave the session to one side only.
        self.sync.forget_peer(event.peer_id)
        addrs = self.network.peer_addrs(event.peer_id)
        if addrs:
            self.store.remember_peer(event.peer_id, addrs, now_ms())
