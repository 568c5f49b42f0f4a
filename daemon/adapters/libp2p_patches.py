"""Every change gossipchat makes to py-libp2p 0.8.1's own objects, in one place.

Where a defect of py-libp2p can only be worked around by reaching into the library
(replacing a function, a private attribute or a method of its objects), the change is
made here and nowhere else. Each patch:

- names the test in tests/upstream/ that shows the defect on the stock library; when
  an upgrade makes that test fail, the patch can probably go;
- can be undone: it is a context manager, or it returns its undo;
- reaches no further than what it is given. All but one change one host or one
  `Pubsub` instance. That one, `memoised_peer_records`, has to replace two module
  functions (py-libp2p's pubsub calls them by name); it is installed while at least
  one host is inside it, memoises only for the hosts inside it, and puts py-libp2p's
  functions back when the last host leaves. `leftovers()` says what is still in
  place, and tests/conftest.py checks after every test that nothing is.

The patches, what each reaches, and the test that shows why (in tests/upstream/):

- `build_negotiated_muxer`: one host's upgrader;
  test_yamux_costs.py::test_muxer_opt_class_for_yamux_is_ignored.
- `memoised_peer_records`: two pubsub module functions, for the hosts inside;
  test_pubsub_peer_records.py.
- `deep_peer_queues`: one Pubsub's `peer_queues`;
  test_gossipsub_defaults.py::test_outbound_queue_drops_past_32_without_an_error.
- `sink_topic`: one Pubsub topic's channel;
  test_gossipsub_defaults.py::test_subscription_channel_drops_past_32_in_one_rpc.
- `keep_live_subscriptions`: one Pubsub's `_handle_dead_peer`;
  test_pubsub_dead_stream_subscriptions.py.
- `retry_pubsub_streams`: one Pubsub's `_handle_new_peer`;
  test_pubsub_stream_failure.py.
- `replace_streams_of_closed_connections`: a notifee on one Pubsub's host;
  test_pubsub_connection_replaced.py.
- `ignore_replaced_stream_failures`: one Pubsub's `continuously_read_stream` and
  `write_msg`;
  test_pubsub_connection_replaced.py.
- `gate_forwarded_messages`: one Pubsub's `push_msg`;
  test_gossipsub_defaults.py::test_every_flooded_message_is_signature_checked.
- `report_bad_signatures`: one Pubsub's `push_msg`;
  test_peer_scoring.py::test_a_bad_signature_costs_the_forwarder_nothing.
- `prune_negative_mesh_peers`: one GossipSub's `mesh_heartbeat` and `handle_graft`;
  test_peer_scoring.py::test_a_negative_score_peer_stays_in_a_small_mesh.
- `retain_negative_scores`: one GossipSub scorer's `remove_peer`;
  test_peer_scoring.py::test_a_peers_score_is_forgotten_when_it_disconnects.
- `no_auto_connector`: one host's swarm (`auto_connector.start`);
  test_auto_connector.py.
- `release_inbound_slots`: one host's swarm (`_inbound_limiter`,
  `_do_handle_inbound_connection`, `upgrade_inbound_raw_conn`);
  test_inbound_slots.py.
- `identify_observes_its_own_connection`: one host's identify stream handler;
  test_identify_observed_addr.py.

Not a patch but a reading aid: `live_connections` leaves out the connections the
swarm still lists while they close; test_swarm_closing_connections.py.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any, cast

import trio
from libp2p.abc import IHost, IMuxedConn, INetConn, INetwork, INotifee, ISecureConn
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError
from libp2p.host.exceptions import StreamFailure
from libp2p.identity.identify import identify
from libp2p.io.exceptions import IncompleteReadError
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream

from ..core import varint

log = logging.getLogger(__name__)

Undo = Callable[[], None]


# --------------------------------------------------------------------------------------
# Connections that are closing


def live_connections(network: INetwork, peer: ID) -> list[INetConn]:
    """The connections to `peer` that are neither closed nor closing.

    py-libp2p's swarm keeps a connection in its table from the moment `close()` marks
    it closed until its muxer has finished closing, which under load takes over a
    second; a peer killed meanwhile still looks connected. Read connections here.
    """
    return [conn for conn in network.get_connections(peer) if _live(conn)]


def live_peers(network: INetwork) -> list[ID]:
    """The peers with at least one live connection (see `live_connections`)."""
    return [peer for peer, conns in network.get_connections_map().items()
            if any(_live(conn) for conn in conns)]


def _live(conn: INetConn) -> bool:
    muxed = conn.muxed_conn
    return not (conn.is_closed or muxed.is_closed or getattr(muxed, "_closing", False))


# --------------------------------------------------------------------------------------
# The muxer selector


class _Multistream(MuxerMultistream):
    """py-libp2p's muxer selector, but it builds the class it negotiated."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        protocol, transport_class = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        muxed = transport_class(conn, peer_id)
        return self._annotate_connection(muxed, conn, protocol)


def build_negotiated_muxer(host: IHost, protocol: str, muxer_class: type[IMuxedConn]) -> Undo:
    """Make `host` mux every connection, inbound and outbound, with `muxer_class`.

    `MuxerMultistream.new_conn` ignores the class given for `/yamux/1.0.0` in
    `muxer_opt` and always builds py-libp2p's own `Yamux`
    (tests/upstream/test_yamux_costs.py::test_muxer_opt_class_for_yamux_is_ignored),
    so the host's selector is swapped for one that builds what it negotiated. Only
    this host's upgrader changes; the undo puts its own selector back.
    """
    upgrader = cast(Any, host.get_network()).upgrader
    stock = upgrader.muxer_multistream
    upgrader.muxer_multistream = _Multistream(
        {TProtocol(protocol): muxer_class}, negotiate_timeout=stock.negotiate_timeout
    )

    def undo() -> None:
        upgrader.muxer_multistream = stock

    return undo


# --------------------------------------------------------------------------------------
# Signed peer records, once per peer rather than per RPC

SEND_TTL_S = 5.0
RECEIVE_TTL_S = 60.0
MAX_REMEMBERED = 4096  # peers per host whose last accepted record is remembered
_FUNCTIONS = ("env_to_send_in_RPC", "maybe_consume_signed_record")

_State = tuple[float, bytes]  # (expires at, record bytes)


class _HostCache:
    def __init__(self) -> None:
        self.outbound: tuple[float, tuple[bytes, bool]] | None = None
        self.inbound: OrderedDict[ID, _State] = OrderedDict()


# The hosts inside `memoised_peer_records` (how many times each), and their memos.
_hosts: Counter[IHost] = Counter()
_caches: dict[IHost, _HostCache] = {}
# (module, name) -> (py-libp2p's function, our wrapper) while installed.
_replaced: dict[tuple[ModuleType, str], tuple[Any, Any]] = {}


def _memo_send(original: Callable[[IHost], tuple[bytes, bool]]) -> Callable[..., Any]:
    def env_to_send_in_RPC(host: IHost) -> tuple[bytes, bool]:
        cache = _caches.get(host)
        if cache is None:
            return original(host)
        now = trio.current_time()
        if cache.outbound is not None and cache.outbound[0] > now:
            return cache.outbound[1][0], False
        result = original(host)
        cache.outbound = (now + SEND_TTL_S, result)
        return result

    env_to_send_in_RPC.__wrapped__ = original  # type: ignore[attr-defined]
    return env_to_send_in_RPC


def _memo_receive(original: Callable[[Any, IHost, ID], bool]) -> Callable[..., Any]:
    def maybe_consume_signed_record(msg: Any, host: IHost, peer_id: ID) -> bool:
        host_cache = _caches.get(host)
        if host_cache is None:
            return original(msg, host, peer_id)
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        cache = host_cache.inbound
        now = trio.current_time()
        known = cache.get(peer_id)
        if known is not None and known[1] == record and known[0] > now:
            return True
        accepted = original(msg, host, peer_id)
        if accepted:
            cache[peer_id] = (now + RECEIVE_TTL_S, bytes(record))
            cache.move_to_end(peer_id)
            while len(cache) > MAX_REMEMBERED:
                cache.popitem(last=False)
        else:
            cache.pop(peer_id, None)
        return accepted

    maybe_consume_signed_record.__wrapped__ = original  # type: ignore[attr-defined]
    return maybe_consume_signed_record


def _pubsub_modules() -> tuple[ModuleType, ...]:
    import libp2p.pubsub.gossipsub as gossipsub_module
    import libp2p.pubsub.pubsub as pubsub_module

    return (pubsub_module, gossipsub_module)


def _install() -> None:
    for module in _pubsub_modules():
        for name in _FUNCTIONS:
            original = getattr(module, name)
            wrap = _memo_send if name == "env_to_send_in_RPC" else _memo_receive
            wrapper = wrap(original)
            setattr(module, name, wrapper)
            _replaced[(module, name)] = (original, wrapper)


def _uninstall() -> None:
    for (module, name), (original, wrapper) in _replaced.items():
        if getattr(module, name) is wrapper:
            setattr(module, name, original)
        else:  # someone replaced ours in turn; theirs stays, and says so in leftovers()
            log.warning("%s.%s was replaced over our memo; left as it is",
                        module.__name__, name)
    _replaced.clear()


class memoised_peer_records:
    """While entered, `host`'s pubsub handles signed peer records once per peer.

    py-libp2p 0.8.1 attaches the host's signed peer record (a libp2p Envelope holding
    its addresses) to every pubsub RPC it sends, and checks the one in every RPC it
    receives (tests/upstream/test_pubsub_peer_records.py):

    - sending, `env_to_send_in_RPC(host)` calls `host.get_addrs()` (multiaddr parsing
      and base58 of the peer id) to see whether the cached record is still current,
      then serialises it again;
    - receiving, `maybe_consume_signed_record` parses the Envelope, verifies its
      Ed25519 signature and rewrites the sender's addresses in the peerstore.

    A py-spy profile of ten daemons during a 1,000-message burst put 17.5% of all
    busy samples in those two functions, more than our own decode, verify and store
    together. The records barely ever change, so for the hosts inside:

    - the record to send is rebuilt at most every `SEND_TTL_S`;
    - a record received from a peer that is byte for byte the one accepted from that
      peer within `RECEIVE_TTL_S` is taken as accepted without parsing or verifying
      it again (a different or expired one goes through py-libp2p's full check).

    The two names are replaced in py-libp2p's pubsub modules (they import them by
    name) when the first host enters and restored when the last one leaves; other
    hosts meanwhile get py-libp2p's own behaviour. Usable with `with` and `async with`.
    """

    def __init__(self, host: IHost) -> None:
        self.host = host

    def __enter__(self) -> IHost:
        if not _hosts:
            _install()
        _hosts[self.host] += 1
        _caches.setdefault(self.host, _HostCache())
        return self.host

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _hosts[self.host] -= 1
        if _hosts[self.host] <= 0:
            del _hosts[self.host]
            _caches.pop(self.host, None)
        if not _hosts:
            _uninstall()

    async def __aenter__(self) -> IHost:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


def leftovers() -> list[str]:
    """What of the process-wide patches is still in place (empty when none is)."""
    found = [f"{len(_hosts)} host(s) inside memoised_peer_records"] if _hosts else []
    for module in _pubsub_modules():
        for name in _FUNCTIONS:
            if hasattr(getattr(module, name), "__wrapped__"):
                found.append(f"{module.__name__}.{name} is wrapped")
    return found


# --------------------------------------------------------------------------------------
# Pubsub instances


class _DeepQueues(dict[ID, Any]):
    """`Pubsub.peer_queues` whose queues hold `depth` RPCs, each drop reported."""

    def __init__(self, depth: int, on_drop: Callable[[], None]) -> None:
        super().__init__()
        self._depth = depth
        self._on_drop = on_drop

    def __setitem__(self, peer: ID, queue: Any) -> None:
        queue._queue.max_size = self._depth
        push = queue.push
        on_drop = self._on_drop

        def counted_push(rpc: Any, priority: bool = False) -> bool:
            accepted = bool(push(rpc, priority))
            if not accepted:
                on_drop()
            return accepted

        queue.push = counted_push
        super().__setitem__(peer, queue)


def deep_peer_queues(pubsub: Pubsub, depth: int, on_drop: Callable[[], None]) -> Undo:
    """Give every peer queue `pubsub` makes from now on `depth` slots, not 32.

    py-libp2p drops whatever does not fit a peer's queue without a word
    (tests/upstream/test_gossipsub_defaults.py::
    test_outbound_queue_drops_past_32_without_an_error). Our own publishes are paced,
    but a forwarder relaying a burst fills them too, and each drop there costs a sync
    repair later, which is dearer than relaying. The queue is `RpcQueue()` made inside
    `Pubsub._handle_new_peer`, so its bound is set as it is stored in `peer_queues`;
    `on_drop` is called for every RPC a full queue still refuses. The undo goes back
    to a plain dict (queues made meanwhile keep their depth).
    """
    deep = _DeepQueues(depth, on_drop)
    deep.update(pubsub.peer_queues)
    pubsub.peer_queues = deep

    def undo() -> None:
        pubsub.peer_queues = dict(pubsub.peer_queues)

    return undo


class _TopicSink:
    """Stands in for py-libp2p's send side of one topic's subscription channel."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self._deliver = deliver

    def send_nowait(self, msg: Any) -> None:
        self._deliver(msg)

    async def aclose(self) -> None:
        return None  # Pubsub.unsubscribe closes it; nothing to release


def sink_topic(pubsub: Pubsub, topic: str, deliver: Callable[[Any], None]) -> Undo:
    """Hand each message of a subscribed topic to `deliver` as py-libp2p pushes it.

    py-libp2p hands a topic's messages to a 32-slot channel with send_nowait and
    drops (logging a warning) whatever does not fit until a reader task runs; one
    read of a busy connection can carry more than 32
    (tests/upstream/test_gossipsub_defaults.py::
    test_subscription_channel_drops_past_32_in_one_rpc). The channel's send side is
    replaced by a sink that calls `deliver` at once. Call after `pubsub.subscribe`;
    the undo puts py-libp2p's channel back if the topic is still subscribed.
    """
    stock = pubsub.subscribed_topics_send[topic]
    sink = _TopicSink(deliver)
    pubsub.subscribed_topics_send[topic] = cast(Any, sink)

    def undo() -> None:
        if pubsub.subscribed_topics_send.get(topic) is cast(Any, sink):
            pubsub.subscribed_topics_send[topic] = stock

    return undo


def keep_live_subscriptions(pubsub: Pubsub) -> Undo:
    """Stop a dead stale stream from erasing what a peer's live stream told us.

    py-libp2p's `Pubsub._handle_dead_peer` forgets every topic a peer subscribed to.
    It runs when any pubsub stream with the peer fails, also the one of a connection
    that was already replaced: when a peer reconnects, its hello (with its
    subscriptions) comes over the new connection and the old stream's failure, read
    later, erases them. The peer never repeats a hello on a stream that works, so it
    stays out of every topic for good: no mesh, no sync partner
    (tests/upstream/test_pubsub_dead_stream_subscriptions.py). Here the
    subscriptions survive while the peer is still connected; a peer that really went
    away loses them as before. Set on this instance only; the undo removes it.
    """
    handle_dead_peer = pubsub._handle_dead_peer

    def handle_dead_peer_keeping_live_subscriptions(peer_id: ID) -> None:
        topics = [topic for topic, peers in pubsub.peer_topics.items() if peer_id in peers]
        handle_dead_peer(peer_id)
        if not topics or not pubsub._peer_is_connected(peer_id):
            return
        for topic in topics:
            pubsub.peer_topics.setdefault(topic, set()).add(peer_id)
        pubsub._peer_subscription_count[peer_id] = len(topics)

    pubsub._handle_dead_peer = handle_dead_peer_keeping_live_subscriptions  # type: ignore[method-assign]

    def undo() -> None:
        if vars(pubsub).get("_handle_dead_peer") is handle_dead_peer_keeping_live_subscriptions:
            del pubsub._handle_dead_peer

    return undo


def retry_pubsub_streams(pubsub: Pubsub) -> Undo:
    """Keep trying to open a pubsub stream to a peer while it stays connected.

    py-libp2p retries `_handle_new_peer` on `SwarmException` and `StreamClosed` only.
    When the connection a new pubsub stream was opened on closes during negotiation
    (another connection to the peer stays), the failure is a `StreamFailure` or a
    `StreamReset`, and pubsub gives the peer up for as long as it stays connected:
    it never gets our hello, so it never learns our rooms
    (tests/upstream/test_pubsub_stream_failure.py). Here those failures are retried
    like a swarm failure: with py-libp2p's backoff (0.5 s doubling to 10 s), and
    only while the peer is connected. Set on this instance only.
    """
    handle_new_peer = pubsub._handle_new_peer

    async def handle_new_peer_retrying_stream_failures(peer_id: ID) -> None:
        try:
            await handle_new_peer(peer_id)
        except (StreamFailure, StreamError, MuxedStreamError, MuxedConnError) as error:
            raise SwarmException(f"pubsub stream to {peer_id} failed: {error!r}") from error

    pubsub._handle_new_peer = handle_new_peer_retrying_stream_failures  # type: ignore[method-assign]

    def undo() -> None:
        if vars(pubsub).get("_handle_new_peer") is handle_new_peer_retrying_stream_failures:
            del pubsub._handle_new_peer

    return undo


class _ConnectionClosedNotifee(INotifee):
    """Calls `closed(conn)` for each connection the swarm reports closed."""

    def __init__(self, closed: Callable[[INetConn], None]) -> None:
        self._closed = closed

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._closed(conn)

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: Any) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: Any) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Any) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Any) -> None:
        return None


def replace_streams_of_closed_connections(pubsub: Pubsub) -> Undo:
    """Move a peer's pubsub stream to its other connection when its own closes.

    When the connection that carries our pubsub stream to a peer closes while another
    connection to the peer stays (a relayed connection closed once a direct one
    replaced it, DCUtR), py-libp2p's swarm reports the close, pubsub's dead-peer
    queue finds the other connection and does nothing, and the reader of the peer's
    stream does not end either: our outbound stream stays registered on the dead
    connection. The next RPC to the peer is written into it and lost (only that
    failed write makes pubsub open a new stream), so a chat message sent alone never
    arrives (tests/upstream/test_pubsub_connection_replaced.py). Here, when a
    connection closes that carries our stream to a peer still connected otherwise,
    the peer is handled as dead at once: pubsub drops the stream and opens one on a
    live connection (`ignore_replaced_stream_failures` keeps a later failure of the
    old streams from dropping it again). A notifee on this pubsub's host; the undo
    removes it.
    """
    network = pubsub.host.get_network()

    def closed(conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        outbound = pubsub.peers.get(peer_id)
        if outbound is None or outbound.muxed_conn is not conn.muxed_conn \
                or not pubsub.manager.is_running:
            return
        if any(other.muxed_conn is not conn.muxed_conn
               for other in live_connections(network, peer_id)):
            log.debug("pubsub stream to %s ran on a closed connection: moving it", peer_id)
            pubsub._handle_dead_peer(peer_id)

    notifee = _ConnectionClosedNotifee(closed)
    network.register_notifee(notifee)

    def undo() -> None:
        cast(Any, network).remove_notifee(notifee)

    return undo


def ignore_replaced_stream_failures(pubsub: Pubsub) -> Undo:
    """A failure of a peer's pubsub stream that was replaced ends that stream only.

    py-libp2p handles a failed pubsub stream by handling its peer as dead, by peer
    id: when the stream failing is an old one whose connection closed (a relayed
    connection's reader fails once its relay dies; a write to it fails), it drops
    the peer's current stream on the live connection, and the next message to the
    peer is lost until pubsub opens another
    (tests/upstream/test_pubsub_connection_replaced.py). Here a read or write
    failure of a stream whose connection is not the one our current outbound stream
    to the peer runs on is not passed on. Set on this instance's
    `continuously_read_stream` and `write_msg`; the undo removes them.
    """
    def replaced(stream: Any) -> bool:
        """True for a stream of a peer whose current outbound stream is elsewhere."""
        current = pubsub.peers.get(stream.muxed_conn.peer_id)
        return current is not None and current.muxed_conn is not stream.muxed_conn

    # The reader of the peer's old inbound stream fails once its connection is gone
    # for good (a relayed one: when its relay dies), and py-libp2p then handles the
    # peer as dead by its id: it would drop the stream that replaced ours. A failure
    # of a replaced stream ends that stream only.
    stock_read = pubsub.continuously_read_stream
    stock_write = pubsub.write_msg

    async def read_unless_replaced(stream: Any) -> None:
        try:
            await stock_read(stream)
        except (StreamError, ParseError, IncompleteReadError):
            if not replaced(stream):
                raise

    async def write_unless_replaced(stream: Any, rpc_msg: Any) -> bool:
        if replaced(stream):
            return False  # its sender task ends; the current stream carries on
        return await stock_write(stream, rpc_msg)

    pubsub.continuously_read_stream = read_unless_replaced  # type: ignore[method-assign]
    pubsub.write_msg = write_unless_replaced  # type: ignore[method-assign]

    def undo() -> None:
        for name, ours in (("continuously_read_stream", read_unless_replaced),
                           ("write_msg", write_unless_replaced)):
            if vars(pubsub).get(name) is ours:
                delattr(pubsub, name)

    return undo


def gate_forwarded_messages(pubsub: Pubsub, allow: Callable[[ID], bool]) -> Undo:
    """Ask `allow(forwarder)` about each message a peer forwards, before anything else.

    py-libp2p runs `push_msg` for every message of every RPC a peer sends: a seen-cache
    lookup, then the Ed25519 signature check, then the validators. Its only per-peer
    bound is the GossipSub spam protection (10 messages a second per topic), which we
    turn off because it drops honest bursts; without it, a peer can make us check
    signatures as fast as it can send
    (tests/upstream/test_gossipsub_defaults.py::
    test_every_flooded_message_is_signature_checked). Here `push_msg` first asks
    `allow` (our own publishes are never asked) and drops the message on False. Set
    on this instance only; the undo removes it.
    """
    push_msg = pubsub.push_msg
    my_id = pubsub.my_id

    async def push_msg_if_allowed(msg_forwarder: ID, msg: Any) -> None:
        if msg_forwarder != my_id and not allow(msg_forwarder):
            return
        await push_msg(msg_forwarder, msg)

    return _wrap_push_msg(pubsub, push_msg_if_allowed)


def _wrap_push_msg(pubsub: Pubsub, ours: Callable[..., Any]) -> Undo:
    """Set `ours` as this instance's push_msg; the undo puts back what was there
    (another patch's wrapper, or py-libp2p's method)."""
    previous = vars(pubsub).get("push_msg")
    pubsub.push_msg = ours  # type: ignore[method-assign]

    def undo() -> None:
        if vars(pubsub).get("push_msg") is ours:
            if previous is None:
                del pubsub.push_msg
            else:
                pubsub.push_msg = previous  # type: ignore[method-assign]

    return undo


def report_bad_signatures(pubsub: Pubsub, on_bad: Callable[[ID, Any], None]) -> Undo:
    """Call `on_bad(forwarder, msg)` for each message whose StrictSign signature fails.

    py-libp2p's `push_msg` drops a message whose signature fails without telling the
    scorer, so a peer can forward forged messages for ever at no cost to its score:
    only a topic validator's rejection counts as an invalid message (P4)
    (tests/upstream/test_peer_scoring.py::test_a_bad_signature_costs_the_forwarder_nothing).
    py-libp2p says nothing about why it dropped a message, so here, after its
    `push_msg`, a message that is neither seen (it passed) nor in the validation cache
    (validators judged it) is checked again with py-libp2p's own signature check: a
    second Ed25519 verify only for messages py-libp2p dropped before its validators,
    never for one that passed. Set on this instance only; the undo removes it.
    """
    from libp2p.pubsub.validators import signature_validator

    push_msg = pubsub.push_msg
    my_id = pubsub.my_id

    async def push_msg_reporting_bad_signatures(msg_forwarder: ID, msg: Any) -> None:
        seen_before = pubsub._is_msg_seen(msg)
        await push_msg(msg_forwarder, msg)
        if (seen_before or msg_forwarder == my_id or not pubsub.strict_signing
                or pubsub._is_msg_seen(msg)):
            return
        if pubsub.validation_cache.get(pubsub._msg_id_constructor(msg)) is not None:
            return
        # Dropped before the signature check (py-libp2p's own order): not ours to judge.
        if pubsub.is_peer_blacklisted(msg_forwarder) or pubsub.is_peer_blacklisted(
                ID(msg.from_id)):
            return
        scorer = getattr(pubsub.router, "scorer", None)
        if scorer is not None and not scorer.allow_publish(msg_forwarder, list(msg.topicIDs)):
            return
        if not signature_validator(msg):
            on_bad(msg_forwarder, msg)

    return _wrap_push_msg(pubsub, push_msg_reporting_bad_signatures)


def flood_publish(router: Any) -> Undo:
    """Send each message we publish ourselves to every peer in its topic, not only to
    the mesh: GossipSub v1.1's flood publishing, on by default in go-libp2p-pubsub.

    py-libp2p 0.8.1 sends our own message only to the topic's mesh. The mesh loses a
    peer whenever pubsub handles it as dead, also when only its stream moved to
    another connection (DCUtR replacing a relayed connection, a redial) and the
    peer is still subscribed and connected; the next heartbeat grafts it back. A
    message published in between goes to nobody, and since the peer is grafted
    again before the heartbeat's gossip, no IHAVE tells it either: it arrives only
    with history sync, 10 s or more later
    (tests/upstream/test_flood_publish.py). Here our own messages also go to each
    GossipSub peer known to be in the topic; the stock publish loop still skips
    peers below the publish threshold and peers without a stream. Forwarded
    messages keep to the mesh. Set on this router instance only.
    """
    peers_to_send = router._get_peers_to_send

    def peers_to_send_flooding_our_own(topic_ids: Any, msg_forwarder: ID, origin: ID,
                                       msg_id: bytes | None = None) -> set[ID]:
        send_to = set(peers_to_send(topic_ids, msg_forwarder=msg_forwarder, origin=origin,
                                    msg_id=msg_id))
        pubsub = router.pubsub
        if pubsub is None or msg_forwarder != pubsub.my_id:
            return send_to
        for topic in topic_ids:
            send_to.update(peer for peer in pubsub.peer_topics.get(topic, ())
                           if peer != origin and peer in router.peer_protocol)
        return send_to

    router._get_peers_to_send = peers_to_send_flooding_our_own

    def undo() -> None:
        if vars(router).get("_get_peers_to_send") is peers_to_send_flooding_our_own:
            del router._get_peers_to_send

    return undo


def prune_negative_mesh_peers(router: Any, score: Callable[[ID], float]) -> Undo:
    """Keep peers whose `score` is below 0 out of `router`'s meshes, as GossipSub v1.1
    says (go-libp2p-pubsub prunes them at every heartbeat and refuses their GRAFT).

    py-libp2p 0.8.1 prunes by score only when a mesh holds more than D_hi peers, picks
    new mesh peers without looking at their score, and refuses a GRAFT only from a
    graylisted peer: in a chat room's small mesh a peer that sends nothing but junk
    stays in it (tests/upstream/test_peer_scoring.py::
    test_a_negative_score_peer_stays_in_a_small_mesh). Here each heartbeat first
    takes negative peers out of every mesh (a PRUNE goes to each, with the prune
    backoff so the stock selection does not pick them again), drops any the stock
    heartbeat grafted anyway, and a GRAFT from a negative peer is answered with a
    PRUNE. Set on this router instance only; the undo removes both.
    """
    mesh_heartbeat = router.mesh_heartbeat
    handle_graft = router.handle_graft

    def mesh_heartbeat_pruning_negative_peers() -> tuple[Any, Any]:
        pruned: dict[ID, list[str]] = {}
        for topic, peers in router.mesh.items():
            for peer in [p for p in peers if score(p) < 0]:
                peers.discard(peer)
                router._add_back_off(peer, topic, False)
                pruned.setdefault(peer, []).append(topic)
        to_graft, to_prune = mesh_heartbeat()
        for peer in [p for p in to_graft if score(p) < 0]:
            for topic in to_graft.pop(peer):
                router.mesh.get(topic, set()).discard(peer)
        for peer, topics in pruned.items():
            for topic in topics:
                if topic not in to_prune[peer]:
                    to_prune[peer].append(topic)
        return to_graft, to_prune

    async def handle_graft_refusing_negative_peers(graft_msg: Any, sender_peer_id: ID) -> None:
        if score(sender_peer_id) < 0:
            router._add_back_off(sender_peer_id, graft_msg.topicID, False)
            await router.emit_prune(graft_msg.topicID, sender_peer_id, False, False)
            return
        await handle_graft(graft_msg, sender_peer_id)

    router.mesh_heartbeat = mesh_heartbeat_pruning_negative_peers
    router.handle_graft = handle_graft_refusing_negative_peers

    def undo() -> None:
        for name, ours in (("mesh_heartbeat", mesh_heartbeat_pruning_negative_peers),
                           ("handle_graft", handle_graft_refusing_negative_peers)):
            if vars(router).get(name) is ours:
                delattr(router, name)

    return undo


def retain_negative_scores(router: Any, retain_s: float, max_peers: int = 4096) -> Undo:
    """Keep the score counters of a peer that leaves with a negative score for
    `retain_s`, as go-libp2p-pubsub's RetainScore does.

    py-libp2p's router drops a peer's counters the moment it disconnects, so a junk
    sender that hangs up before it is cut comes back with a clean score
    (tests/upstream/test_peer_scoring.py::
    test_a_peers_score_is_forgotten_when_it_disconnects). Here the scorer's
    `remove_peer` keeps a negative peer's counters (they go on decaying) until
    `retain_s` has passed; each later call forgets the peers whose time is up and
    that have not come back, and at most `max_peers` are kept (the oldest go first).
    A peer leaving with a score of 0 or more is forgotten at once, as before. Set on
    this router's scorer only; the undo removes it (what is retained stays).
    """
    scorer = router.scorer
    remove_peer = scorer.remove_peer
    retained: OrderedDict[ID, float] = OrderedDict()  # peer -> forget after

    def topics_of(peer: ID) -> list[str]:
        topics: set[str] = set()
        for counters in (scorer.first_message_deliveries, scorer.invalid_messages):
            topics.update(counters.get(peer, ()))
        return sorted(topics)

    def remove_peer_retaining_negative_scores(peer: ID) -> None:
        now = trio.current_time()
        for old, until in list(retained.items()):
            if old in router.peer_protocol:  # it came back: its counters are live
                del retained[old]
            elif until <= now:
                del retained[old]
                remove_peer(old)
        if scorer.score(peer, topics_of(peer)) < 0:
            retained[peer] = now + retain_s
            retained.move_to_end(peer)
            while len(retained) > max_peers:
                remove_peer(retained.popitem(last=False)[0])
            return
        remove_peer(peer)

    scorer.remove_peer = remove_peer_retaining_negative_scores

    def undo() -> None:
        if vars(scorer).get("remove_peer") is remove_peer_retaining_negative_scores:
            del scorer.remove_peer

    return undo


def _remote_ip(read_write_closer: Any) -> str | None:
    try:
        remote = read_write_closer.get_remote_address()
    except Exception:  # sockets that cannot say raise a spread of types
        return None
    if isinstance(remote, tuple) and remote and isinstance(remote[0], str):
        return remote[0]
    return None


class _ConnectionEnded(Exception):
    """An accepted connection closed: the swarm's handler may end and free its slot."""


def release_inbound_slots(host: IHost, slots: int,
                          admit: Callable[[str | None], bool] | None = None) -> Undo:
    """Free a swarm's inbound slot when its connection ends, and give it `slots` slots;
    with `admit`, ask it about each accepted socket's remote IP before the handshake.

    py-libp2p's swarm takes a slot of `_inbound_limiter` (250 by default) for each
    accepted connection and frees it when the handler returns, but the handler waits
    for the whole swarm to stop after the upgrade: every connection ever accepted
    keeps its slot and its task, so after 250 inbound connections in the life of a
    host it refuses every new one without a word (tests/upstream/test_inbound_slots.py).
    Here, for a socket the accept handler took only (hole punches that also upgrade
    inbound are left alone), the upgrade waits until the connection closes and then
    raises, so that the stock handler ends and frees its slot. The slots bound
    connections that are accepted or in their handshake at once. A socket `admit`
    refuses (given its remote IP, None when it has none) is closed before the Noise
    handshake, which costs far more. Set on this host's swarm only; the undo puts its
    methods and limiter back.
    """
    swarm = cast(Any, host.get_network())
    stock_limiter = swarm._inbound_limiter
    stock_handle = swarm._do_handle_inbound_connection
    stock_upgrade = swarm.upgrade_inbound_raw_conn
    swarm._inbound_limiter = trio.CapacityLimiter(slots)
    # The sockets the accept handler is upgrading right now, by id: the raw connection
    # the stock handler wraps around one carries it as `.stream`.
    accepting: set[int] = set()

    async def handle_inbound(read_write_closer: Any, *args: Any, **kwargs: Any) -> None:
        if admit is not None and not admit(_remote_ip(read_write_closer)):
            try:
                await read_write_closer.close()
            except Exception as exc:  # the socket may be gone already
                log.debug("closing a refused socket: %r", exc)
            return
        accepting.add(id(read_write_closer))
        try:
            await stock_handle(read_write_closer, *args, **kwargs)
        finally:
            accepting.discard(id(read_write_closer))

    async def upgrade_inbound(raw_conn: Any, maddr: Any) -> Any:
        muxed = await stock_upgrade(raw_conn, maddr)
        closed = getattr(muxed, "event_closed", None)
        if id(getattr(raw_conn, "stream", None)) not in accepting or closed is None:
            return muxed
        await closed.wait()
        raise _ConnectionEnded("the accepted connection closed")

    swarm._do_handle_inbound_connection = handle_inbound
    swarm.upgrade_inbound_raw_conn = upgrade_inbound

    def undo() -> None:
        for name, ours in (("_do_handle_inbound_connection", handle_inbound),
                           ("upgrade_inbound_raw_conn", upgrade_inbound)):
            if vars(swarm).get(name) is ours:
                delattr(swarm, name)
        if swarm._inbound_limiter.borrowed_tokens == 0:  # else its holders release it
            swarm._inbound_limiter = stock_limiter

    return undo


def no_auto_connector(host: IHost) -> Undo:
    """Keep py-libp2p's swarm from dialing peers on its own.

    Its `AutoConnector` dials every peer of the peerstore that has an address, every
    10 s while the host holds fewer than 50 connections and after each disconnect,
    until it holds 200 (tests/upstream/test_auto_connector.py). In gossipchat the
    connection manager, the redialer, mDNS and the DHT decide whom to dial, with
    their own bounds and backoff; the auto-connector would undo all of them. Call
    before the host runs: the connector then never starts. Set on this host's
    connector only; the undo removes it.
    """
    connector = cast(Any, host.get_network()).auto_connector

    async def start_nothing() -> None:
        return None

    connector.start = start_nothing

    def undo() -> None:
        if vars(connector).get("start") is start_nothing:
            del connector.start

    return undo


# --------------------------------------------------------------------------------------
# Identify's observed address


def identify_observes_its_own_connection(host: IHost) -> Undo:
    """Answer identify with the observed address of the stream's own connection.

    py-libp2p 0.8.1's handler reports, for a peer that has any relayed connection, that
    connection's circuit address as the peer's `observedAddr`, on every connection to
    it, direct ones too (`_prefer_circuit_addr`, tests/upstream/
    test_identify_observed_addr.py). Our circuits' address is
    `/p2p/<relay>/p2p-circuit/p2p/<peer>`, with no IP in front, and js-libp2p 3 fails
    the whole identify on it (`getNetConfig` throws in the address manager's
    `addObservedAddr`): so js never learned our protocols, and its DCUtR never started
    over a circuit we dialed (tests/integration/test_dcutr_interop.py). Here a direct
    connection reports the socket's remote address and a relayed one none: the field
    is optional, and a relay's circuit says nothing about the peer's own address.
    Set on this host's handler only; the undo puts py-libp2p's back.
    """
    original = identify.identify_handler_for(host, use_varint_format=True)

    async def handle_identify(stream: Any) -> None:
        observed = identify._remote_address_to_multiaddr(stream.get_remote_address())
        body = identify._mk_identify_protobuf(host, observed).SerializeToString()
        try:
            await stream.write(varint.encode(len(body)) + body)
        except Exception as exc:  # the peer went away or reset: nothing to answer
            log.debug("identify: answering %s: %s", stream.muxed_conn.peer_id, exc)
            try:
                await stream.reset()
            except Exception:  # already reset
                pass
            return
        try:
            await stream.close()
        except Exception as exc:  # closed from the other side meanwhile
            log.debug("identify: closing: %s", exc)

    host.set_stream_handler(identify.ID, handle_identify)

    def undo() -> None:
        host.set_stream_handler(identify.ID, original)

    return undo

