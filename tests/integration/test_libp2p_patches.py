"""daemon/adapters/libp2p_patches.py: every patch of py-libp2p reaches only what it is
given and can be undone, and running a network patches nothing process-wide."""

from __future__ import annotations

import os

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import multiaddr
import pytest
import trio
from libp2p.abc import INetStream, INetwork
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.identity.identify.identify import ID as identify_id
from libp2p.network.stream.exceptions import StreamReset
from libp2p.peer.peerinfo import PeerInfo

from gossipchat.daemon.adapters import libp2p_patches, yamux
from gossipchat.daemon.adapters.locks import QuickLock
from gossipchat.daemon.adapters.p2p import P2PNetwork, new_libp2p_host
from harness.libp2p_hosts import SilentNotifee, muxed, one_stream, running_pair, stock_host
from harness.scheduling import TaskSpawns, steps_of

SINK = TProtocol("/gossipchat-test/sink/1.0.0")
ECHOLESS = TProtocol("/gossipchat-test/keep/1.0.0")
NOTIFY_TASK = "Swarm._notify.<locals>._call"


def _module_functions() -> dict[str, object]:
    return {f"{m.__name__}.{name}": value for m in (pubsub_module, gossipsub_module)
            for name, value in vars(m).items() if callable(value)}


async def test_a_network_run_in_process_leaves_py_libp2p_pubsub_as_it_is() -> None:
    before = _module_functions()
    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        assert _module_functions() == before
        nursery.cancel_scope.cancel()
    assert _module_functions() == before


async def test_a_running_networks_notifees_all_ignore_stream_events() -> None:
    """What makes skip_unheard_stream_events pay on a daemon's host: a notifee that
    listens to stream events brings the tasks back for every stream."""
    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        notifees = network.host.get_network().notifees
        assert len(notifees) >= 4  # tag store, identify, the network's, GossipSub's
        for notifee in notifees:
            assert libp2p_patches.does_nothing(type(notifee).opened_stream), notifee
            assert libp2p_patches.does_nothing(type(notifee).closed_stream), notifee
        nursery.cancel_scope.cancel()


async def test_a_failing_handler_on_a_networks_host_is_counted_as_a_stream_fault() -> None:
    """A handler registered on the host itself (as gossip and bitswap are), not
    through P2PNetwork.set_stream_handler, that raises: its stream is reset and the
    fault shows in the network's stream_faults (status.faults), by protocol."""
    async def broken(stream: INetStream) -> None:
        raise ValueError("a bug")

    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        network.host.set_stream_handler(SINK, broken)
        dialer = stock_host()
        async with dialer.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            await dialer.connect(PeerInfo(network.host.get_id(), network.host.get_addrs()))
            async def open_and_read() -> None:
                stream = await dialer.new_stream(network.host.get_id(), [SINK])
                await stream.read(1)

            # The reset may come before py-libp2p's dialer read the echo.
            with trio.fail_after(10), pytest.raises((StreamFailure, StreamReset)):
                await open_and_read()
        assert network.stats.stream_faults == {str(SINK): 1}
        nursery.cancel_scope.cancel()


async def test_the_negotiated_muxer_is_built_and_the_undo_restores_the_stock_one() -> None:
    a, b = stock_host(), stock_host()
    upgrader = a.get_network().upgrader  # type: ignore[attr-defined]
    stock = upgrader.muxer_multistream
    undo = libp2p_patches.build_negotiated_muxer(a, yamux.PROTOCOL_ID, yamux.Yamux)
    assert upgrader.muxer_multistream is not stock
    async with running_pair(a, b):
        assert type(muxed(a, b)) is yamux.Yamux  # b runs py-libp2p's; a builds ours
        assert type(muxed(b, a)) is not yamux.Yamux
    undo()
    assert upgrader.muxer_multistream is stock


async def _sink(stream: object) -> None:
    await trio.sleep_forever()


async def test_quick_stream_locks_reach_this_hosts_streams_until_undone() -> None:
    a, b = stock_host(), stock_host()
    undo = libp2p_patches.quick_stream_locks(b)
    async with running_pair(a, b):
        a.set_stream_handler(SINK, _sink)  # type: ignore[arg-type]
        ours = await b.new_stream(a.get_id(), [SINK])
        theirs = await a.new_stream(b.get_id(), [identify_id])
        assert type(ours._state_lock) is QuickLock  # type: ignore[attr-defined]
        assert type(theirs._state_lock) is trio.Lock  # type: ignore[attr-defined]
        # Free, it is taken without a scheduling round: a write through the stream
        # costs what its muxed stream's write costs (the stock lock adds one).
        assert await steps_of(ours.write(b"x")) == await steps_of(ours.muxed_stream.write(b"x"))
        undo()
        later = await b.new_stream(a.get_id(), [SINK])
        assert type(later._state_lock) is trio.Lock  # type: ignore[attr-defined]


async def test_a_daemon_hosts_stream_writes_and_buffered_reads_never_yield() -> None:
    """Our yamux and the quick state lock together: a small write is queued for the
    connection's writing task and a read of bytes already there returns, neither
    going through the scheduler (the gossip path does one of each per frame)."""
    async with running_pair(new_libp2p_host(create_new_key_pair()),
                            new_libp2p_host(create_new_key_pair())) as (a, b):
        a.set_stream_handler(SINK, _sink)  # type: ignore[arg-type]
        arrived: list[INetStream] = []
        got = trio.Event()

        async def keep(stream: INetStream) -> None:
            arrived.append(stream)
            got.set()
            await trio.sleep_forever()

        a.set_stream_handler(ECHOLESS, keep)
        stream = await b.new_stream(a.get_id(), [ECHOLESS])
        assert await steps_of(stream.write(b"hello")) == 0
        with trio.fail_after(10):
            await got.wait()
            while True:  # until the bytes sit in the far stream's buffer
                if arrived[0].muxed_stream._offset < len(  # type: ignore[attr-defined]
                        arrived[0].muxed_stream._buffer):  # type: ignore[attr-defined]
                    break
                await trio.sleep(0.01)
        assert await steps_of(arrived[0].read(5)) == 0


async def test_a_quick_lock_excludes_and_queues_in_order() -> None:
    lock = QuickLock()
    order: list[str] = []

    async def hold(name: str, started: trio.Event) -> None:
        async with lock:
            started.set()
            order.append(f"{name} in")
            await trio.sleep(0.05)
            order.append(f"{name} out")

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            started = trio.Event()
            nursery.start_soon(hold, name, started)
            if name == "a":
                await started.wait()
            else:
                await trio.sleep(0.01)  # b queues before c
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert not lock.locked()


class _Listening(SilentNotifee):
    """Hears stream openings."""

    def __init__(self) -> None:
        self.opened: list[INetStream] = []

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        self.opened.append(stream)


async def test_stream_events_no_notifee_hears_spawn_nothing_and_heard_ones_are_announced(
) -> None:
    async with running_pair(new_libp2p_host(create_new_key_pair()),
                            new_libp2p_host(create_new_key_pair())) as (a, b):
        notifees = a.get_network().notifees
        assert len(notifees) >= 2  # the swarm's tag store and identify, at least
        assert all(libp2p_patches.does_nothing(type(n).opened_stream) for n in notifees)
        with TaskSpawns() as spawns:
            await one_stream(a, b)
        assert spawns.named(NOTIFY_TASK) == 0
        # One notifee that listens: the event goes to every notifee, as py-libp2p sends it.
        listening = _Listening()
        b.get_network().register_notifee(listening)
        with TaskSpawns() as spawns:
            await one_stream(a, b)
        assert len(listening.opened) == 1
        assert spawns.named(NOTIFY_TASK) == len(b.get_network().notifees)  # b's opening


async def test_skipping_unheard_stream_events_is_undone() -> None:
    a, b = stock_host(), stock_host()
    undo = libp2p_patches.skip_unheard_stream_events(b)
    async with running_pair(a, b):
        with TaskSpawns() as spawns:
            await one_stream(a, b)
        assert spawns.named(NOTIFY_TASK) == 2 * len(a.get_network().notifees)  # a's alone
        undo()
        with TaskSpawns() as spawns:
            await one_stream(a, b)
        assert spawns.named(NOTIFY_TASK) == 4 * len(a.get_network().notifees)


class _Bodies:
    def empty(self) -> None:
        pass

    def documented(self) -> None:
        """Nothing."""

    def returns_none(self) -> None:
        return None

    def ellipsis(self) -> None:
        ...

    async def awaits(self) -> None:
        await trio.lowlevel.checkpoint()

    def returns_one(self) -> int:
        return 1

    def stores(self) -> None:
        self.x = 1


def test_does_nothing_reads_empty_bodies_only() -> None:
    assert libp2p_patches.does_nothing(_Bodies.empty)
    assert libp2p_patches.does_nothing(_Bodies.documented)
    assert libp2p_patches.does_nothing(_Bodies.returns_none)
    assert libp2p_patches.does_nothing(_Bodies.ellipsis)
    assert libp2p_patches.does_nothing(SilentNotifee.opened_stream)
    assert not libp2p_patches.does_nothing(_Bodies.awaits)
    assert not libp2p_patches.does_nothing(_Bodies.returns_one)
    assert not libp2p_patches.does_nothing(_Bodies.stores)
    assert not libp2p_patches.does_nothing(len)  # no bytecode of its own
