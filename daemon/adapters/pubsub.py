"""The trio adapter of our GossipSub router (core/gossipsub): streams, peers, timers.

- `/meshsub/1.1.0` and `/meshsub/1.0.0` streams: each peer writes on a stream it
  opened and reads the streams the other side opened, as go, js and py-libp2p do.
  Frames are uvarint length-prefixed RPCs.
- One task owns the router: `_process` runs every change (a frame read, a publish, a
  subscription, a peer up or down, a heartbeat) in arrival order, from a bounded
  channel; a slow router makes readers wait, which pushes back on the peers' streams.
- The router's task runs every change already waiting (up to PROCESS_BATCH) in one
  step, then hands each peer with frames queued everything in its outbox in one write
  of whole frames, each up to the frame size limit (one Noise message and one syscall
  for a burst, not one per message). It writes itself where our yamux takes the
  bytes without a wait (`YamuxStream.write_nowait`), so a forwarded message reaches
  the socket in the step that validated it.
- One writer task per peer opens our stream to it and writes whatever could not go
  at once: a full send window or buffer, a write already in progress, another muxer.
- Publishing waits while a target's queue has no room (bounded), instead of dropping.
- A peer is up from its first connection (or first inbound pubsub stream) until its
  last connection closes. If our stream dies while another connection lives (the
  connection it ran on was replaced, e.g. by DCUtR or a simultaneous dial), the writer
  opens a new one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from ..core import ticks, varint
from ..core.gossipsub.outbox import Outbox
from ..core.gossipsub.router import Delivery, Router, TopicValidator
from . import libp2p_patches, negotiate, timers
from .yamux import Sink, YamuxStream, feed_sink

log = logging.getLogger(__name__)

PROTOCOLS = (TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0"))
HEARTBEAT_S = 1.0
# Frames we accept: go sends at most 1 MiB, js up to 4 MiB.
MAX_INBOUND_FRAME = 4 << 20
READ_CHUNK = 1 << 16
# Changes waiting for the router; readers wait when it is full.
PROCESS_QUEUE = 256
# Changes the router's task runs in one step, before it hands peers their frames.
PROCESS_BATCH = 32
OPEN_RETRY_S = 0.5
OPEN_RETRY_MAX_S = 10.0
# How long a publish waits for room in a peer's queue before it goes anyway (the full
# queue then refuses it, counted; history sync repairs that peer).
PUBLISH_WAIT_S = 2.0
# Writes replayed on a new stream when the old one died under them (see _Link).
RESEND_S = 2.0
RESEND_MAX_BYTES = 1 << 20
# Inbound pubsub streams one peer may hold at once: one, and one more while a
# replaced connection's stream is still ending. A new one past that resets the
# oldest (go keeps only the newest).
INBOUND_STREAMS_PER_PEER = 2


class _Link:
    """Our side of one peer: its writer's wake-up and the stream it writes on."""

    def __init__(self, peer: ID, text: str) -> None:
        self.peer = peer
        self.text = text
        self.wake = trio.Event()
        self.stream: INetStream | None = None
        self.scope = trio.CancelScope()
        # Frames whose write failed, or that were written within RESEND_S before the
        # stream died (a write into a connection that is closing "succeeds" and is
        # lost): the next stream sends them first; copies that did get through are
        # duplicates the peer's seen cache drops.
        self.unsent = b""
        self.unsent_frames = 0  # frames in `unsent` taken from the outbox, for frames_out
        self.busy = False  # the writer is in a write: nobody else writes meanwhile
        self.recent: deque[tuple[float, bytes]] = deque()
        self.recent_bytes = 0


class _Notifee(INotifee):
    def __init__(self, service: PubSub) -> None:
        self._service = service

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._service.connection_changed(conn.muxed_conn.peer_id, outbound=not _inbound(conn))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._service.connection_changed(conn.muxed_conn.peer_id, outbound=False)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


def _inbound(conn: INetConn) -> bool:
    return getattr(getattr(conn, "direction", None), "name", "") == "INBOUND"


class PubSub:
    """Runs a `Router` over a py-libp2p host's streams; owned by its `run` task."""

    def __init__(self, host: IHost, router: Router, *,
                 deliver: Callable[[Delivery], None],
                 blocked: Callable[[str], bool] = lambda peer: False,
                 on_refused: Callable[[str], None] = lambda why: None,
                 on_bug: Callable[[str], None] = lambda where: None,
                 protocols: Sequence[TProtocol] = PROTOCOLS) -> None:
        self.host = host
        self.router = router
        self._deliver = deliver
        self._blocked = blocked
        self._on_refused = on_refused
        self._on_bug = on_bug
        self._protocols = list(protocols)
        self._links: dict[str, _Link] = {}
        self._inbound: dict[str, list[INetStream]] = {}  # oldest first
        self._changes_send, self._changes = trio.open_memory_channel[Callable[[], None]](
            PROCESS_QUEUE)
        self._room = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.publish_waits = 0
        self.frames_in = 0
        self.frames_out = 0
        # Frame batches written from the router's task, and by the peers' writers.
        self.router_writes = 0
        self.writer_writes = 0
        self.links_swept = 0  # peers found connected with no link (_sweep_links)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the pubsub protocols until cancelled."""
        network = self.host.get_network()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for protocol in self._protocols:
                self.host.set_stream_handler(protocol, self._serve_inbound)
            network.register_notifee(_Notifee(self))
            nursery.start_soon(self._process)
            nursery.start_soon(self._heartbeats)
            for peer in libp2p_patches.live_peers(network):
                self.connection_changed(peer, outbound=True)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # the router's task

    async def _process(self) -> None:
        router = self.router
        receive = self._changes
        while True:
            try:
                change = await receive.receive()
            except trio.EndOfChannel:
                return
            # Whatever else is waiting (the rest of a burst) runs in the same step,
            # up to PROCESS_BATCH changes, so that each peer's frames leave together.
            left = PROCESS_BATCH
            while True:
                try:
                    change()
                except Exception:
                    # A bug of ours that one peer's frame triggers loses that frame,
                    # never the router: the task goes on with the next change.
                    log.exception("the gossip router failed on a change")
                    self._on_bug("gossip router")
                left -= 1
                if not left:
                    break
                try:
                    change = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for peer in router.dirty:
                link = self._links.get(peer)
                if link is not None and not self._flush_now(link):
                    link.wake.set()
            router.dirty.clear()

    def _flush_now(self, link: _Link) -> bool:
        """Write the peer's outbox from the router's task if that needs no wait; False
        leaves it (and anything taken but not written, in `unsent`) to its writer.

        Saves the writer's two scheduling rounds on each frame batch to each peer:
        a forwarded message reaches the socket in the step that validated it."""
        stream = link.stream
        muxed = getattr(stream, "muxed_stream", None)
        if link.busy or link.unsent or not isinstance(muxed, YamuxStream):
            return False
        box = self.router.outbox(link.text)
        if box is None:
            return False
        data, frames = _frames_of(box)
        if not data:
            return True
        if not muxed.write_nowait(data):
            link.unsent, link.unsent_frames = data, frames
            return False
        self.router_writes += 1
        self._sent(link, data, frames)
        return True

    def _change(self, change: Callable[[], None]) -> None:
        """Queue a change without waiting (from callbacks that must not block)."""
        try:
            self._changes_send.send_nowait(change)
        except trio.WouldBlock:
            if self._nursery is not None:
                self._nursery.start_soon(self._changes_send.send, change)

    async def _heartbeats(self) -> None:
        while True:
            await timers.sleep_until(ticks.next_at(trio.current_time(), HEARTBEAT_S))
            self._sweep_links()
            await self._changes_send.send(self._heartbeat)

    def _sweep_links(self) -> None:
        """Give every connected peer a link, once a heartbeat.

        Connection notifications can race a writer: a peer's new connection is
        announced while its old link still stands (nothing to do), then the old
        link's writer, finding no live connection for a moment, takes the link down.
        Nothing announces the peer again, and it would stay connected with no link:
        none of our topics sent, none of its frames read (in the bench's 20-daemon
        room, 11-15 pairs after 30 s).
        """
        network = self.host.get_network()
        for peer in libp2p_patches.live_peers(network):
            text = peer.to_base58()
            if text in self._links or self._blocked(text):
                continue
            conns = libp2p_patches.live_connections(network, peer)
            log.info("pubsub: %s is connected with no link: bringing it up", text)
            self.links_swept += 1
            self._link_up(peer, text, outbound=any(not _inbound(c) for c in conns))

    def _heartbeat(self) -> None:
        self.router.heartbeat(trio.current_time())
        self.router.px_offers.clear()  # PX: we dial only peers our own discovery finds

    # what the rest of the daemon asks

    async def subscribe(self, topic: str, validate: TopicValidator | None) -> None:
        """Join a topic, with its validator."""
        def join() -> None:
            if validate is not None:
                self.router.validators[topic] = validate
            self.router.join(topic, trio.current_time())
        await self._changes_send.send(join)

    async def unsubscribe(self, topic: str) -> None:
        """Leave a topic."""
        await self._changes_send.send(lambda: self.router.leave(topic, trio.current_time()))

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish, first waiting (bounded) while a target's queue has no room."""
        size = len(data) + 256  # from, seqno, topic, signature, key and framing
        if not self.router.has_room(topic, size):
            self.publish_waits += 1
            with trio.move_on_after(PUBLISH_WAIT_S):
                while not self.router.has_room(topic, size):
                    await self._room.wait()

        def publish() -> None:
            self.router.publish(topic, data, trio.current_time())
        await self._changes_send.send(publish)

    def topic_peers(self, topic: str) -> list[str]:
        """Peers that announced `topic`."""
        return list(self.router.topic_peers.get(topic, ()))

    # peers

    def connection_changed(self, peer: ID, *, outbound: bool) -> None:
        """A connection to `peer` opened or closed: bring its link up or down."""
        text = peer.to_base58()
        live = bool(libp2p_patches.live_connections(self.host.get_network(), peer))
        if live and text not in self._links and not self._blocked(text):
            self._link_up(peer, text, outbound=outbound)
        elif not live and text in self._links:
            self._link_down(text)

    def _link_up(self, peer: ID, text: str, *, outbound: bool) -> _Link | None:
        if self._nursery is None:
            return None
        link = self._links[text] = _Link(peer, text)
        peer_bytes = peer.to_bytes()
        self._change(lambda: self.router.add_peer(text, peer_bytes, outbound=outbound))
        self._nursery.start_soon(self._writer, link)
        return link

    def _link_down(self, text: str) -> None:
        link = self._links.pop(text, None)
        if link is None:
            return
        link.scope.cancel()
        self._change(lambda: self.router.remove_peer(text, trio.current_time()))

    async def _writer(self, link: _Link) -> None:
        """Open our stream to the peer, then write whatever its outbox holds."""
        with link.scope:
            try:
                await self._write_loop(link)
            finally:
                stream, link.stream = link.stream, None
                if stream is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await _reset_quietly(stream)
                if self._links.get(link.text) is link:
                    self._link_down(link.text)

    async def _write_loop(self, link: _Link) -> None:
        failures = 0
        reopened = False
        while True:
            try:
                link.stream = await negotiate.open_stream(self.host, link.peer, self._protocols)
            except Exception as exc:  # the swarm and multiselect raise a spread of types
                failures += 1
                log.debug("pubsub stream to %s: %s", link.text, exc)
                if "not supported" in str(exc):
                    return  # it does not speak pubsub (a DHT or bitswap-only peer)
                if not libp2p_patches.live_connections(self.host.get_network(), link.peer):
                    return
                # While it stays connected, keep trying: py-libp2p raises for a stream
                # whose connection closed mid-negotiation though another one lives
                # (tests/upstream/pubsub_still_true/test_pubsub_stream_failure.py).
                await trio.sleep(min(OPEN_RETRY_S * failures, OPEN_RETRY_MAX_S))
                continue
            if reopened:
                # Our old stream died: the peer may have dropped us meanwhile.
                self._change(lambda: self.router.greet(link.text))
            reopened = True
            failures = 0
            link.wake.set()  # whatever queued while the stream opened
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_outbound, link.stream, nursery.cancel_scope)
                await self._drain(link, link.stream)
                nursery.cancel_scope.cancel()
            link.stream = None
            if not libp2p_patches.live_connections(self.host.get_network(), link.peer):
                return
            now = trio.current_time()
            link.unsent = b"".join([d for at, d in link.recent if at >= now - RESEND_S]
                                   + [link.unsent])
            link.recent.clear()
            link.recent_bytes = 0
            log.debug("pubsub stream to %s died with the peer still connected: reopening",
                      link.text)

    async def _watch_outbound(self, stream: INetStream, scope: trio.CancelScope) -> None:
        """Peers never write on the stream we opened: a read returns when it dies."""
        try:
            while await stream.read(READ_CHUNK):
                pass
        except Exception as exc:  # a reset or closed stream raises a spread of types
            log.debug("outbound pubsub stream ended: %s", exc)
        scope.cancel()

    async def _drain(self, link: _Link, stream: INetStream) -> None:
        while True:
            await link.wake.wait()
            link.wake = trio.Event()
            box = self.router.outbox(link.text)
            if box is None:
                return
            data, frames = _frames_of(box)
            if link.unsent:
                data, frames = link.unsent + data, link.unsent_frames + frames
            if not data:
                continue
            link.unsent, link.unsent_frames = data, frames
            link.busy = True
            try:
                await stream.write(data)
            except Exception as exc:  # a dead stream raises a spread of types
                log.debug("write to %s failed: %s", link.text, exc)
                return
            finally:
                link.busy = False
            link.unsent, link.unsent_frames = b"", 0
            self.writer_writes += 1
            self._sent(link, data, frames)

    def _sent(self, link: _Link, data: bytes, frames: int) -> None:
        """Bookkeeping after a write: room for waiting publishers, resend memory."""
        self._room.set()
        self._room = trio.Event()
        self.frames_out += frames
        now = trio.current_time()
        link.recent.append((now, data))
        link.recent_bytes += len(data)
        while link.recent and (link.recent[0][0] < now - RESEND_S
                               or link.recent_bytes > RESEND_MAX_BYTES):
            link.recent_bytes -= len(link.recent.popleft()[1])

    async def _serve_inbound(self, stream: INetStream) -> None:
        """A stream the peer opened: read its frames into the router."""
        peer = stream.muxed_conn.peer_id
        text = peer.to_base58()
        if self._blocked(text):
            await _reset_quietly(stream)
            return
        if text not in self._links:
            self._link_up(peer, text, outbound=False)
        else:
            # A new stream from a peer we knew: it may have dropped us for a moment
            # (all its connections to us closed) and forgotten our topics.
            self._change(lambda: self.router.greet(text))
        held = self._inbound.setdefault(text, [])
        if len(held) >= INBOUND_STREAMS_PER_PEER and self._nursery is not None:
            # The newest stream wins, as in go-libp2p-pubsub: an old one may sit on a
            # connection that is dying, and refusing the new one instead kept the
            # peer's writer failing (in the bench's 20-daemon room, 280 refusals a
            # daemon and pairs that never learnt each other's topics).
            self._on_refused("meshsub streams per peer")
            self._nursery.start_soon(_reset_quietly, held.pop(0))
        held.append(stream)
        try:
            await self._read_frames(stream, text)
        finally:
            held = self._inbound.get(text, [])
            if stream in held:
                held.remove(stream)
            if not held:
                self._inbound.pop(text, None)

    async def _read_frames(self, stream: INetStream, text: str) -> None:
        frames = _FrameSplitter(self, text)
        # Our yamux stream hands its bytes to the splitter from the connection's
        # reading task (YamuxStream.sink), which queues each whole frame for the
        # router at once: no wake-up of this task per frame. This task reads only
        # while the router's queue is full (then the peer feels it, as the rules
        # say), and py-libp2p's NetStream.read, with its lock and two layers of calls
        # a read, is not in the way: its state is only for its own reads and writes,
        # and this stream has none.
        muxed = getattr(stream, "muxed_stream", None)

        async def catch_up() -> bool:
            while frames.backlog:
                await self._changes_send.send(frames.backlog.popleft())
            return frames.error is None and frames.failure is None

        try:
            if isinstance(muxed, YamuxStream):
                await feed_sink(muxed, frames.take, catch_up, READ_CHUNK)
            else:
                while await catch_up():
                    chunk = await stream.read(READ_CHUNK)
                    if not chunk:
                        return
                    frames.take(chunk)
        except Exception as exc:  # a reset or closed stream raises a spread of types
            log.debug("pubsub stream from %s ended: %s", text, exc)
            return
        if frames.failure is not None:
            # A bug of ours met while cutting frames (in the connection's reading task,
            # when sunk): it ends this stream, never the connection or the router.
            log.error("pubsub stream from %s failed; resetting it", text,
                      exc_info=frames.failure)
            self._on_bug("pubsub stream")
            await _reset_quietly(stream)
            return
        if frames.error is None:
            return  # the stream ended
        if frames.error is _STOPPED:
            return  # shutting down: the peer did nothing wrong
        log.info("%s: %s: resetting its pubsub stream", text, frames.error)
        self._on_refused("meshsub frame")
        await _reset_quietly(stream)

    def _frame(self, peer: str, frame: bytes) -> None:
        for delivery in self.router.handle_rpc(peer, frame, trio.current_time()):
            self._deliver(delivery)


_STOPPED = "the router has stopped"  # a _FrameSplitter's error when we shut down


class _FrameSplitter(Sink[Callable[[], None]]):
    """A peer's inbound pubsub bytes, cut into frames queued for the router."""

    def __init__(self, service: PubSub, text: str) -> None:
        super().__init__()
        self._service = service
        self._text = text
        self._buf = bytearray()
        self.error: str | None = None  # why the stream must be reset

    def _take(self, data: bytes | memoryview) -> bool:
        """Queue every whole frame in what arrived; False once one had to wait for
        room in the router's queue (it is in `backlog`) or the stream broke the rules.
        (A bug met here is `failure`, see `yamux.Sink`.)"""
        service = self._service
        buf = self._buf
        buf += data
        pos = 0
        while self.error is None:
            try:
                head = varint.decode_prefix(buf, pos)
            except varint.VarintError:
                self.error = "a bad frame length"
                break
            if head is None:
                break
            length, start = head
            if length > MAX_INBOUND_FRAME:
                self.error = f"a {length}-byte frame"
                break
            if len(buf) < start + length:
                break
            frame = bytes(buf[start:start + length])
            pos = start + length
            service.frames_in += 1
            change = lambda frame=frame, text=self._text: service._frame(text, frame)  # noqa: E731
            if not self._queue(service._changes_send.send_nowait, change):
                self.error = _STOPPED
        if pos:
            del buf[:pos]
        return not self.backlog and self.error is None


def _frames_of(box: Outbox) -> tuple[bytes, int]:
    """Everything an outbox holds as length-prefixed frames, and how many."""
    chunks: list[bytes] = []
    while (frame := box.take_frame()) is not None:
        chunks.append(varint.encode(len(frame)))
        chunks.append(frame)
    return b"".join(chunks), len(chunks) // 2


async def _reset_quietly(stream: INetStream) -> None:
    try:
        await stream.reset()
    except Exception as exc:  # resetting a dead stream raises a spread of types
        log.debug("reset of a pubsub stream: %s", exc)
