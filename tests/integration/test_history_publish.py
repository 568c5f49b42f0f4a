"""daemon/history.py's publishing of our own messages, on a real store and real networks:
a message goes to gossip straight from `post` when nothing of ours waits before it,
and otherwise through the publish task, and the two ways keep the order of posting."""

from __future__ import annotations

import os
import time
from pathlib import Path

import multiaddr
import trio
from libp2p.peer.peerinfo import PeerInfo

from gossipchat.daemon.adapters import pubsub
from gossipchat.daemon.adapters.identity import load_or_create
from gossipchat.daemon.adapters.p2p import P2PNetwork
from gossipchat.daemon.adapters.store import Store
from gossipchat.daemon.core import envelope
from gossipchat.daemon.core.rooms import topic_for
from gossipchat.daemon.history import History

ROOM = "order"
TOPIC = topic_for(ROOM)
LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


async def test_posted_messages_reach_a_peer_in_order_straight_or_queued(tmp_path: Path) -> None:
    identity = load_or_create(tmp_path)
    store = Store(tmp_path / "store.sqlite")
    a = P2PNetwork(identity.seed, LOOPBACK)
    b = P2PNetwork(os.urandom(32), LOOPBACK)
    history = History(identity, store, a, default_nick="", subscriber_buffer=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await nursery.start(history.run)
        for network in (a, b):
            await network.subscribe(TOPIC)
        await b.host.connect(PeerInfo(a.host.get_id(), a.host.get_addrs()))
        with trio.fail_after(10):
            while b.peer_id not in a.router.mesh.get(TOPIC, ()):  # noqa: ASYNC110
                await trio.sleep(0.05)
        history.join(ROOM)
        first = await b.inbound.receive()
        assert envelope.decode(first.data, now_ms=int(time.time() * 1000)).kind == "join"
        assert a.stats.published == 1  # straight from `join`: nothing was queued

        # Posted with no await in between, as a burst faster than the router: the
        # router's queue takes the first PROCESS_QUEUE of them (one more goes to the
        # router's task itself, waiting on it), and the rest wait in history's queue
        # for the publish task.
        posted = [history.post(ROOM, "text", {"text": f"m{i}"}).wire
                  for i in range(pubsub.PROCESS_QUEUE + 100)]
        straight = a.stats.published - 1
        assert pubsub.PROCESS_QUEUE <= straight <= pubsub.PROCESS_QUEUE + 1
        assert history.outbound_queued == len(posted) - straight
        # Once the router has taken a batch off its queue there is room again; one more
        # posted then must still wait behind the queued ones, not pass them.
        changes = a.pubsub._changes_send  # the router's queue
        while changes.statistics().current_buffer_used >= pubsub.PROCESS_QUEUE:
            await trio.lowlevel.checkpoint()
        assert history.outbound_queued > 0
        posted.append(history.post(ROOM, "text", {"text": "behind the queue"}).wire)
        got = []
        with trio.fail_after(30):
            while len(got) < len(posted):
                got.append((await b.inbound.receive()).data)
        assert got == posted
        assert history.outbound_queued == 0
        assert a.stats.published == 1 + len(posted)

        # And straight again once the queue is empty.
        again = history.post(ROOM, "text", {"text": "again"}).wire
        assert a.stats.published == 2 + len(posted)
        with trio.fail_after(10):
            assert (await b.inbound.receive()).data == again
        nursery.cancel_scope.cancel()
