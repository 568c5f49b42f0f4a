"""Every change gossipchat makes to py-libp2p 0.8.1's own objects, in one place.

Where a defect of py-libp2p can only be worked around by reaching into the library
(replacing a function, a private attribute or a method of its objects), the change is
made here and nowhere else. Each patch:

- names the test in tests/upstream/ that shows the defect on the stock library; when
  an upgrade makes that test fail, the patch can probably go;
- can be undone: it returns its undo;
- reaches no further than the one host it is given.

GossipSub is our own (core/gossipsub, adapters/pubsub.py), so the patches of
py-libp2p's `Pubsub` and `GossipSub` are gone; the defects they worked around are
still shown, as still true upstream, in tests/upstream/pubsub_still_true/.

The patches, what each reaches, and the test that shows why (in tests/upstream/):

- `build_negotiated_muxer`: one host's upgrader;
  test_yamux_costs.py::test_muxer_opt_class_for_yamux_is_ignored.
- `no_auto_connector`: one host's swarm (`auto_connector.start`);
  test_auto_connector.py.
- `release_inbound_slots`: one host's swarm (`_inbound_limiter`,
  `_do_handle_inbound_connection`, `upgrade_inbound_raw_conn`);
  test_inbound_slots.py.
- `identify_observes_its_own_connection`: one host's identify stream handler;
  test_identify_observed_addr.py.
- `quick_stream_locks`: one host's swarm (`notify_opened_stream`) and the
  `NetStream`s it announces; test_stream_state_lock.py.
- `answer_multistream_in_one_write`: one host's swarm (its stream handler);
  test_multiselect_responder.py.
- `skip_unheard_stream_events`: one host's swarm (`_notify`);
  test_stream_notifications.py.

Not a patch but a reading aid: `live_connections` leaves out the connections the
swarm still lists while they close; test_swarm_closing_connections.py.
"""

from __future__ import annotations

import dis
import functools
import logging
from collections.abc import Callable
from typing import Any, cast

import trio
from libp2p.abc import IHost, IMuxedConn, INetConn, INetStream, INetwork, ISecureConn
from libp2p.custom_types import TProtocol
from libp2p.identity.identify import identify
from libp2p.peer.id import ID
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream

from ..core import varint
from . import negotiate
from .locks import QuickLock

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


# --------------------------------------------------------------------------------------
# Stream state locks


def quick_stream_locks(host: IHost) -> Undo:
    """Give every stream of this host a `QuickLock` as its state lock.

    py-libp2p 0.8.1's `NetStream.read` and `write` take the stream's `_state_lock`
    (a trio.Lock) around a state check on every call, so each read and each write
    costs a scheduling round before any I/O (tests/upstream/test_stream_state_lock.py):
    on the gossip path, one on the sending and one on the receiving side of every
    frame to every mesh peer. The swarm announces each new stream (inbound and
    outbound) before anyone uses it; the lock is swapped there. Set on this host's
    swarm only; the undo stops the swapping (streams already open keep theirs).
    """
    swarm = cast(Any, host.get_network())
    stock = swarm.notify_opened_stream

    async def notify_opened_stream(stream: Any) -> None:
        if isinstance(getattr(stream, "_state_lock", None), trio.Lock):
            stream._state_lock = QuickLock()
        await stock(stream)

    swarm.notify_opened_stream = notify_opened_stream

    def undo() -> None:
        if vars(swarm).get("notify_opened_stream") is notify_opened_stream:
            del swarm.notify_opened_stream

    return undo


def answer_multistream_in_one_write(host: IHost,
                                    on_fault: Callable[[str], None] | None = None) -> Undo:
    """Answer multistream-select on the streams peers open with
    `negotiate.serve_inbound` instead of the host's own handler.

    py-libp2p 0.8.1's host writes its header, then the echo of the protocol: two
    writes even to a dialer that proposed with its header, which go, js and we do
    (test_multiselect_responder.py). Every DHT query, sync session, presence fetch
    and bitswap link to us opens such a stream. The host's registered handlers are
    the ones run; a handler that fails (raises anything but a stream error) is
    reported to `on_fault` with its protocol. Set on this host's swarm only; the undo
    puts the host's back.
    """
    network = cast(Any, host.get_network())
    stock = network.common_stream_handler

    async def handle(stream: INetStream) -> None:
        await negotiate.serve_inbound(host, stream, on_fault=on_fault)

    network.set_stream_handler(handle)

    def undo() -> None:
        if network.common_stream_handler is handle:
            network.set_stream_handler(stock)

    return undo


# --------------------------------------------------------------------------------------
# Stream events nobody listens to

_STREAM_EVENTS = frozenset({"opened_stream", "closed_stream"})
# What a body of `pass`, a docstring or `return None` compiles to, in 3.11 to 3.13.
_EMPTY_BODY_OPS = frozenset({"RESUME", "RETURN_GENERATOR", "POP_TOP", "NOP", "LOAD_CONST",
                             "RETURN_VALUE", "RETURN_CONST"})


@functools.lru_cache(maxsize=256)
def does_nothing(function: Callable[..., Any]) -> bool:
    """Whether `function`'s body does nothing but return None (`pass`, a docstring,
    `return None`), read from its bytecode. Anything else, or what has no bytecode of
    its own (a builtin, a callable object), counts as doing something. Remembered per
    function: the notifees' handlers are a handful of class methods."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    for instruction in dis.get_instructions(code):
        if instruction.opname not in _EMPTY_BODY_OPS:
            return False
        if instruction.opname in ("LOAD_CONST", "RETURN_CONST") \
                and instruction.argval is not None:
            return False
    return True


def _unheard(notifee: Any, event: str) -> bool:
    method = getattr(notifee, event, None)
    return method is not None and does_nothing(getattr(method, "__func__", method))


def skip_unheard_stream_events(host: IHost) -> Undo:
    """Announce a stream's opening and closing only when some notifee listens.

    py-libp2p 0.8.1's swarm announces every stream it opens, accepts and closes to
    every notifee, each in a task of its own in a nursery of its own, and the
    notifees a daemon's host has (the swarm's tag store, identify, our network,
    GossipSub and bitswap) all ignore stream events: ten tasks and two nurseries per
    stream on each side for nothing (test_stream_notifications.py). When every notifee's
    handler for the event does nothing, the event is skipped; otherwise all are called
    as py-libp2p calls them. The resource bookkeeping `notify_closed_stream` does
    before it announces is untouched. Set on this host's swarm only.
    """
    swarm = cast(Any, host.get_network())
    stock = swarm._notify

    async def _notify(method: str, *args: Any) -> None:
        if method in _STREAM_EVENTS and all(_unheard(n, method) for n in swarm.notifees):
            return
        await stock(method, *args)

    swarm._notify = _notify

    def undo() -> None:
        if vars(swarm).get("_notify") is _notify:
            del swarm._notify

    return undo
