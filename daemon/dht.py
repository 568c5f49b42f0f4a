"""Room rendezvous over the Kademlia DHT (`/ipfs/kad/1.0.0`).

Rules:
- Mode: a server answers kad requests and announces the protocol (identify); a
  client only asks. `auto` is a server unless the node knows it is unreachable
  (status.reachability "private"); `off` runs nothing.
- The routing table (core/kadtable.py) holds DHT servers only: connected peers whose
  identify lists the protocol (bootstrap peers among them), peers that answered our
  queries, and the closer peers lookups meet. A peer that only sent us a request
  never enters it. Every TICK_S the connected peers are looked at; the table is
  refreshed by a lookup of our own id, soon after the first contact and then every
  REFRESH_S, skipped while a room's walk got answers within REFRESH_S (that walk
  refreshed it; core/kadtable.py), but not for longer than REFRESH_MAX_S.
- Each joined room's key (core/rendezvous.py) is walked with GET_PROVIDERS
  (core/kadlookup.py); the k nearest servers that answered get ADD_PROVIDER with our
  id and addresses, over the connections the walk dialed to them (hung up on after
  it; the walk's other dialed connections right after the walk). That repeats every
  PROVIDE_S (+-20%; core/rendezvous.py's RoomSchedule says when). Until a
  connection a query dialed is kept (the connection manager wants it) or hung up
  on, it is passing (`is_passing`): presence fetches and sync sessions leave it
  alone. The walk's providers, never our own store
  alone, are the room's members: up to room_peers_min of them that are not
  connected are dialed (announced addresses back off like the connection
  manager's). While a room has fewer connected members than room_peers_min, the
  walk repeats after FIND_FIRST_S, doubling to FIND_MAX_S; a room with enough is
  walked only to announce.
- Serving is bounded: MAX_INBOUND streams in all and MAX_STREAMS_PER_PEER per peer
  (more are reset), IDLE_S without a whole request closes a stream, a request is at
  most MAX_REQUEST_BYTES, a stream carries at most MAX_REQUESTS_PER_STREAM. An
  ADD_PROVIDER is taken only for the peer that sent it. Every refusal is counted in
  `status.discovery.dht.rejected`.
- One task (`run`) owns the table, the provider store, the schedules and the
  counters; query tasks report back through return values.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .adapters import kadaddrs, timers
from .adapters.p2p import P2PNetwork, Stream, StreamClosedError
from .core import kadwire, ticks
from .core.connmgr import AddressBackoff
from .core.kadlookup import Lookup
from .core.kadtable import K, ProvidersFull, ProviderStore, RoutingTable, refresh_needed
from .core.kadwire import Message, MessageType, Peer
from .core.rendezvous import RoomSchedule, room_key
from .core.rooms import topic_for
from .errors import GossipchatError

if TYPE_CHECKING:
    from .history import History

log = logging.getLogger(__name__)

PROTOCOL = "/ipfs/kad/1.0.0"
MODES = ("auto", "server", "client", "off")
TICK_S = 1.0
REFRESH_S = 300.0
# A refresh is skipped while room walks keep the table fresh (core/kadtable.py), but
# our own id is looked up at least this often. In a room of 30 that joined together,
# each member's refresh 60 s after first contact dialed ~15 servers and hung up on
# them: 0.3 s of CPU per member.
REFRESH_MAX_S = 1800.0
FIRST_REFRESHES_S = (1.0, 10.0, 60.0)
LOOKUP_TIMEOUT_S = 30.0
QUERY_TIMEOUT_S = 5.0
IDLE_S = 10.0
# A walk's dialed connections are kept or hung up on by the time it and its
# announcement are done.
PASSING_S = LOOKUP_TIMEOUT_S + 2 * QUERY_TIMEOUT_S
MAX_INBOUND = 64
MAX_STREAMS_PER_PEER = 4
MAX_REQUESTS_PER_STREAM = 1024
MAX_REQUEST_BYTES = 16 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_DIAL_ADDRS = 4
MAX_OWN_ADDRS = 16
READ_CHUNK = 16 * 1024
EXPIRE_EVERY_S = 60.0


@dataclass
class DhtStats:
    """Counters for `status.discovery.dht`."""

    lookups: int = 0
    lookups_empty: int = 0
    queries: int = 0
    queries_failed: int = 0
    providers_announced: int = 0
    providers_found: int = 0
    dials: int = 0
    dials_failed: int = 0
    hung_up: int = 0  # connections dialed for a query and closed after it
    refreshes_skipped: int = 0  # a room's walk had refreshed the table (core/kadtable.py)
    served: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass
class _Room:
    key: bytes
    schedule: RoomSchedule


def resolve_mode(mode: str, reachability: str) -> str:
    """The mode a daemon runs: `auto` is a server unless known unreachable."""
    if mode == "auto":
        return "client" if reachability == "private" else "server"
    return mode


async def _read_message(stream: Stream, reader: kadwire.FrameReader) -> bytes | None:
    """The next length-prefixed message; None at a clean end between messages."""
    while True:
        body = reader.next()
        if body is not None:
            return body
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            if reader.pending():
                raise kadwire.KadWireError("the stream ended inside a message")
            return None
        reader.feed(chunk)


class DhtService:
    """The node's Kademlia DHT client/server and the rooms' rendezvous on it."""

    def __init__(self, history: History, network: P2PNetwork, *, mode: str,
                 room_peers_min: int, rng: random.Random | None = None) -> None:
        self.history = history
        # Counts a contained bug in status.faults (the node's count_fault).
        self.count_fault: Callable[[str], None] = lambda _surface: None
        # Whether a connection this service dialed only to ask a question is worth
        # keeping (the connection manager's say, `connmgr.worth_keeping`: a member of
        # a room short of room_peers_min connections). Others are closed after the
        # query, so that walks do not pile connections above the manager's bounds.
        self.keep_connection: Callable[[str], bool] = lambda _peer: False
        # Peers dialed for a query and not yet kept or hung up on, with when the mark
        # lapses at the latest (a walk holds its connections until it is done).
        self._passing: dict[str, float] = {}
        self.network = network
        self.mode = resolve_mode(mode, "unknown")
        self.room_peers_min = room_peers_min
        self.stats = DhtStats()
        self.self_id = kadaddrs.peer_bytes(network.peer_id) or b""
        self.table = RoutingTable(self.self_id)
        self.providers = ProviderStore()
        self.backoff = AddressBackoff()
        self._rng = rng or random.Random()
        self._rooms: dict[str, _Room] = {}
        self._inbound: Counter[str] = Counter()
        self._refreshes = list(FIRST_REFRESHES_S)
        self._next_refresh: float | None = None
        self._refreshing = False
        self._refreshed_at = -math.inf  # our own id last looked up (-inf: never)
        self._room_walked_at = -math.inf  # a room's walk last got answers
        self._expired_at = 0.0
        self._nursery: trio.Nursery | None = None
        if self.mode == "server":
            # Before the host listens, so that the first identify already lists it:
            # py-libp2p pushes no identify update when a handler is added later.
            network.set_stream_handler(PROTOCOL, self._serve)

    # lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve (in server mode) and keep the table and the rooms' records fresh."""
        if self.mode == "off":
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._tick(trio.current_time())
                await timers.sleep_until(ticks.next_at(trio.current_time(), TICK_S))

    def _tick(self, now: float) -> None:
        assert self._nursery is not None
        self._seed_from_connections(now)
        for peer in [p for p, lapses in self._passing.items() if lapses <= now]:
            del self._passing[peer]  # a query that never came back to hang up
        if now - self._expired_at > EXPIRE_EVERY_S:
            self._expired_at = now
            self.providers.expire(now)
        self._sync_rooms(now)
        if not self.table:
            return
        if self._next_refresh is None:
            self._next_refresh = now + self._refreshes.pop(0)
        if now >= self._next_refresh and not self._refreshing:
            delay = self._refreshes.pop(0) if self._refreshes else REFRESH_S
            self._next_refresh = now + delay
            if refresh_needed(now, refreshed_at=self._refreshed_at,
                              walked_at=self._room_walked_at, recent_s=REFRESH_S,
                              max_s=REFRESH_MAX_S):
                self._refreshing = True
                self._refreshed_at = now
                self._nursery.start_soon(self._refresh)
            else:
                self.stats.refreshes_skipped += 1
        own_addrs = self._own_peer().addrs
        for name, room in self._rooms.items():
            provide = room.schedule.due(now, short=self._room_short(name), own_addrs=own_addrs)
            if provide is not None:
                self._nursery.start_soon(self._rendezvous, name, room, provide)

    def _seed_from_connections(self, now: float) -> None:
        for peer in self.network.connected_peers():
            peer_id = kadaddrs.peer_bytes(peer)
            if peer_id is None or peer_id in self.table or self.network.is_blocked(peer):
                continue
            if PROTOCOL in self.network.peer_protocols(peer):
                self.table.add(peer_id, self._peerstore_addrs(peer), now)

    def _sync_rooms(self, now: float) -> None:
        joined = set(self.history.joined_rooms())
        for name in joined - self._rooms.keys():
            self._rooms[name] = _Room(room_key(topic_for(name)), RoomSchedule(self._rng))
        for name in self._rooms.keys() - joined:
            del self._rooms[name]

    def _peerstore_addrs(self, peer: str) -> tuple[bytes, ...]:
        out = [kadaddrs.addr_to_bytes(a) for a in self.network.peer_addrs(peer)]
        return tuple(a for a in out if a)[:MAX_OWN_ADDRS]

    def _own_peer(self) -> Peer:
        addrs = [kadaddrs.addr_to_bytes(a) for a in self.network.listen_addrs()]
        return Peer(self.self_id, tuple(a for a in addrs if a)[:MAX_OWN_ADDRS])

    # lookups

    async def _refresh(self) -> None:
        try:
            await self._walk(MessageType.FIND_NODE, self.self_id)
        except Exception:
            # A bug that one walk hits must not take the daemon down with it.
            log.exception("DHT refresh failed")
            self.count_fault("dht")
        finally:
            self._refreshing = False

    async def _walk(self, kind: MessageType, key: bytes, *, held: set[str] | None = None
                    ) -> Lookup:
        """An iterative lookup of key; the table learns every server that answers.

        With `held`, connections dialed for its queries stay up and are added to it
        (the caller hangs up on them: `_hang_up_all`)."""
        lookup = Lookup(key, self.self_id)
        lookup.add_candidates([Peer(c.peer_id, c.addrs)
                               for c in self.table.closest(key, K)])
        self.stats.lookups += 1
        request = Message(kind, key)
        send, receive = trio.open_memory_channel[tuple[Peer, Message | None]](64)
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                while True:
                    for peer in lookup.next_queries():
                        nursery.start_soon(self._query_into, peer, request, send, held)
                    if lookup.done:
                        break
                    peer, reply = await receive.receive()
                    if reply is None:
                        lookup.failed(peer.id)
                        self.table.failed(peer.id)
                        continue
                    lookup.answered(peer.id, reply.closer, reply.providers)
                    # It answered on the protocol: it is a server.
                    self.table.add(peer.id, peer.addrs, trio.current_time())
                nursery.cancel_scope.cancel()
        if not lookup.answered_ids:
            self.stats.lookups_empty += 1
        return lookup

    async def _query_into(self, peer: Peer, request: Message,
                          send: trio.MemorySendChannel[tuple[Peer, Message | None]],
                          held: set[str] | None) -> None:
        reply = await self._query(peer, request, held=held)
        await send.send((peer, reply))

    async def _query(self, peer: Peer, request: Message, *, held: set[str] | None = None
                     ) -> Message | None:
        """One request and its reply; None on any failure (counted). A connection
        dialed for it is hung up on after it, or added to `held` for the caller."""
        text = kadaddrs.peer_text(peer.id)
        self.stats.queries += 1
        if self.network.is_blocked(text):
            return None
        dialed = not self.network.is_connected(text)
        if dialed:
            self._passing[text] = trio.current_time() + PASSING_S
        try:
            with trio.fail_after(QUERY_TIMEOUT_S):
                if not await self._ensure_connected(text, peer.addrs):
                    raise StreamClosedError(f"{text} has no address to dial")
                stream = await self.network.open_stream(text, PROTOCOL)
                try:
                    await stream.write(kadwire.frame(request))
                    if request.type == MessageType.ADD_PROVIDER:
                        return request
                    body = await _read_message(stream, kadwire.FrameReader(MAX_RESPONSE_BYTES))
                finally:
                    await stream.close()
            if body is None:
                raise kadwire.KadWireError("no reply")
            reply = kadwire.decode(body, max_size=MAX_RESPONSE_BYTES)
        except (trio.TooSlowError, StreamClosedError, GossipchatError,
                kadwire.KadWireError) as exc:
            self.stats.queries_failed += 1
            log.debug("kad %s to %s failed: %s", request.type, text, exc)
            return None
        finally:
            # Whatever became of the query (answered, timed out, or cancelled because
            # the lookup was done), a connection dialed for it goes. Hanging up only
            # after an answer left the busiest peers, whose queries time out most,
            # with the most connections (a room of 50: 30-40 each on the nodes
            # nearest the room's key).
            if dialed and held is not None:
                held.add(text)
            elif dialed:
                with trio.CancelScope(shield=True):
                    await self._maybe_hang_up(text)
        return reply

    async def _hang_up_all(self, peers: set[str]) -> None:
        """`_maybe_hang_up` each of peers, at once, whatever cancels the caller."""
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(self._maybe_hang_up, peer)

    async def _maybe_hang_up(self, peer: str) -> None:
        """Close a connection dialed for one query unless it is worth keeping."""
        try:
            if not self.network.is_connected(peer) or self.keep_connection(peer):
                return
            self.stats.hung_up += 1
            with trio.move_on_after(QUERY_TIMEOUT_S):
                await self.network.hang_up(peer)
        finally:
            self._passing.pop(peer, None)

    def is_passing(self, peer: str) -> bool:
        """True while the connection to peer is one a query dialed and is about to
        hang up on: presence and sync leave it alone. (Joining a room of 20 that all
        serve the DHT, each member's walk dials ~15 of them for a moment; a presence
        fetch and a sync session on each failed as it closed, ~300 in the room.)"""
        return self._passing.get(peer, -math.inf) > trio.current_time()

    async def _ensure_connected(self, peer: str, addrs: tuple[bytes, ...]) -> bool:
        if self.network.is_connected(peer):
            return True
        texts = kadaddrs.dialable([t for t in map(kadaddrs.addr_from_bytes, addrs) if t])
        now = trio.current_time()
        texts = [t for t in texts if self.backoff.allowed(t, now)][:MAX_DIAL_ADDRS]
        if not texts:
            return False
        try:
            await self.network.dial_known(peer, texts)
        except GossipchatError:
            for text in texts:
                self.backoff.failed(text, trio.current_time())
            raise
        return True

    # rooms

    async def _rendezvous(self, name: str, room: _Room, provide: bool) -> None:
        """Walk the room's key, announce ourselves if due, and dial the members found."""
        try:
            await self._rendezvous_once(name, room, provide)
        except Exception:
            log.exception("DHT rendezvous of room %s failed", name)
            self.count_fault("dht")
            room.schedule.failed(trio.current_time())

    async def _rendezvous_once(self, name: str, room: _Room, provide: bool) -> None:
        # An announcement goes to the nearest servers the walk just asked: the walk's
        # connections to them stay up for it (they were dialed twice before, and
        # hung up on twice: in a room of 30 that joins at once, ~44 hang-ups per
        # member in its first 15 s). The others are hung up on after the walk.
        held: set[str] | None = set() if provide else None
        try:
            found = await self._rendezvous_walk(room, held)
        finally:
            if held:
                await self._hang_up_all(held)
        await self._rendezvous_members(name, room, found)

    async def _rendezvous_walk(self, room: _Room, held: set[str] | None) -> list[Peer]:
        """Walk the room's key and, with `held` (a provide), announce to the nearest;
        the providers the walk met."""
        lookup = await self._walk(MessageType.GET_PROVIDERS, room.key, held=held)
        now = trio.current_time()
        if lookup.answered_ids:
            self._room_walked_at = now
        if held is not None:
            closest = lookup.closest()
            far = held - {kadaddrs.peer_text(p.id) for p in closest}
            held.difference_update(far)
            await self._hang_up_all(far)
            addrs = await self._announce(room.key, closest) if closest else None
            room.schedule.announced(now, addrs)
        return list(lookup.providers.values())

    async def _rendezvous_members(self, name: str, room: _Room, found: list[Peer]) -> None:
        """Dial members found (by the walk, or in our own provider store)."""
        now = trio.current_time()
        # The walk's answers, and the records others stored here (a server may be
        # one of the nearest itself); never our own record.
        walked = {p.id for p in found}
        found += [Peer(r.peer_id, r.addrs) for r in self.providers.get(room.key, now, K)
                  if r.peer_id != self.self_id and r.peer_id not in walked]
        self.stats.providers_found += len(found)
        await self._dial_members(name, found)
        room.schedule.walked(trio.current_time(), short=self._room_short(name))

    async def _announce(self, key: bytes, closest: list[Peer]) -> tuple[bytes, ...]:
        """Store our provider record with the closest peers; the addresses it carried."""
        me = self._own_peer()
        if self.mode == "server":
            self.providers.add(key, me.id, me.addrs, trio.current_time())
        request = Message(MessageType.ADD_PROVIDER, key, providers=(me,))
        results: list[bool] = []

        async def one(peer: Peer) -> None:
            results.append(await self._query(peer, request) is not None)

        async with trio.open_nursery() as nursery:
            for peer in closest:
                nursery.start_soon(one, peer)
        self.stats.providers_announced += sum(results)
        return me.addrs

    def _room_peers(self, name: str) -> set[str]:
        connected = set(self.network.connected_peers())
        return connected & set(self.network.topic_peers(topic_for(name)))

    def _room_short(self, name: str) -> bool:
        return len(self._room_peers(name)) < self.room_peers_min

    async def _dial_members(self, name: str, found: list[Peer]) -> None:
        wanted = self.room_peers_min - len(self._room_peers(name))
        candidates = [p for p in found
                      if not self.network.is_connected(kadaddrs.peer_text(p.id))]
        self._rng.shuffle(candidates)

        async def dial(peer: Peer) -> None:
            self.stats.dials += 1
            try:
                if not await self._ensure_connected(kadaddrs.peer_text(peer.id), peer.addrs):
                    self.stats.dials_failed += 1
            except GossipchatError:
                self.stats.dials_failed += 1

        async with trio.open_nursery() as nursery:
            for peer in candidates[: max(0, wanted)]:
                nursery.start_soon(dial, peer)

    # serving

    async def _serve(self, stream: Stream) -> None:
        peer = stream.peer_id
        if sum(self._inbound.values()) >= MAX_INBOUND:
            self.stats.rejected["streams_total"] += 1
            await stream.reset()
            return
        if self._inbound[peer] >= MAX_STREAMS_PER_PEER:
            self.stats.rejected["streams_per_peer"] += 1
            await stream.reset()
            return
        self._inbound[peer] += 1
        try:
            await self._serve_requests(stream)
        finally:
            self._inbound[peer] -= 1
            if not self._inbound[peer]:
                del self._inbound[peer]

    async def _serve_requests(self, stream: Stream) -> None:
        reader = kadwire.FrameReader(MAX_REQUEST_BYTES)
        for _ in range(MAX_REQUESTS_PER_STREAM):
            body: bytes | None = None
            with trio.move_on_after(IDLE_S) as idle:
                try:
                    body = await _read_message(stream, reader)
                except kadwire.KadOversize:
                    self.stats.rejected["oversize"] += 1
                    await stream.reset()
                    return
                except kadwire.KadWireError:
                    self.stats.rejected["malformed"] += 1
                    await stream.reset()
                    return
            if idle.cancelled_caught:
                self.stats.rejected["idle"] += 1
                await stream.reset()
                return
            if body is None:
                return
            try:
                request = kadwire.decode(body, max_size=MAX_REQUEST_BYTES)
            except kadwire.KadWireError as exc:
                self.stats.rejected["malformed"] += 1
                log.debug("kad request from %s: %s", stream.peer_id, exc)
                await stream.reset()
                return
            reply = self._answer(stream.peer_id, request, trio.current_time())
            if reply is not None:
                await stream.write(kadwire.frame(reply))
        self.stats.rejected["requests_per_stream"] += 1
        await stream.reset()

    def _answer(self, asker: str, request: Message, now: float) -> Message | None:
        """The reply to one request (None for ADD_PROVIDER and PUT_VALUE)."""
        kind = MessageType(request.type)
        self.stats.served[kind.name] += 1
        asker_id = kadaddrs.peer_bytes(asker) or b""
        if kind == MessageType.PING:
            return Message(MessageType.PING)
        if kind == MessageType.PUT_VALUE:
            self.stats.rejected["put_value"] += 1  # this node stores no values
            return None
        if kind == MessageType.ADD_PROVIDER:
            self._add_providers(asker, asker_id, request, now)
            return None
        closer = tuple(Peer(c.peer_id, c.addrs)
                       for c in self.table.closest(request.key, K, exclude=asker_id))
        if kind == MessageType.GET_PROVIDERS:
            records = self.providers.get(request.key, now, K)
            found = tuple(Peer(r.peer_id, r.addrs) for r in records)
            return Message(kind, request.key, closer=closer, providers=found)
        return Message(kind, request.key, closer=closer)

    def _add_providers(self, asker: str, asker_id: bytes, request: Message,
                       now: float) -> None:
        if not request.key or not request.providers:
            self.stats.rejected["malformed"] += 1
            return
        for provider in request.providers:
            if provider.id != asker_id:
                # Only a peer may announce itself: a record naming someone else could
                # send every joiner to dial a third party.
                self.stats.rejected["provider_not_sender"] += 1
                continue
            addrs = provider.addrs or self._peerstore_addrs(asker)
            try:
                self.providers.add(request.key, provider.id, addrs, now)
            except ProvidersFull:
                self.stats.rejected["providers_full"] += 1

    # views

    def view(self) -> dict[str, Any]:
        """The `discovery.dht` section of `status`."""
        return {
            "mode": self.mode,
            "protocol": PROTOCOL,
            "routing_table": len(self.table),
            "buckets": self.table.buckets(),
            "rooms_provided": sum(r.schedule.provided for r in self._rooms.values()),
            "providers_announced": self.stats.providers_announced,
            "provider_records": self.providers.count(),
            "provider_keys": len(self.providers.records),
            "lookups": self.stats.lookups,
            "lookups_empty": self.stats.lookups_empty,
            "queries": self.stats.queries,
            "queries_failed": self.stats.queries_failed,
            "providers_found": self.stats.providers_found,
            "dials": self.stats.dials,
            "dials_failed": self.stats.dials_failed,
            "hung_up": self.stats.hung_up,
            "refreshes_skipped": self.stats.refreshes_skipped,
            "inbound_streams": sum(self._inbound.values()),
            "served": dict(self.stats.served),
            "rejected": dict(self.stats.rejected),
        }
