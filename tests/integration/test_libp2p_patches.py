"""daemon/adapters/libp2p_patches.py: every patch of py-libp2p reaches only what it is
given and can be undone, and none outlives the host that needed it."""

from __future__ import annotations

import os

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.rpc_queue import RpcQueue

from gossipchat.daemon.adapters import libp2p_patches, yamux
from gossipchat.daemon.adapters.p2p import P2PNetwork
from harness.libp2p_hosts import make_node, muxed, running_node, running_pair, stock_host

FUNCTIONS = ("env_to_send_in_RPC", "maybe_consume_signed_record")


def _stock_functions() -> dict[str, object]:
    return {f"{m.__name__}.{name}": getattr(m, name)
            for m in (pubsub_module, gossipsub_module) for name in FUNCTIONS}


async def test_a_network_run_in_process_puts_py_libp2p_back_when_it_stops() -> None:
    before = _stock_functions()
    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    assert _stock_functions() == before  # building a network patches nothing global
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        during = _stock_functions()
        assert all(during[name] is not before[name] for name in before)
        assert all(getattr(during[name], "__wrapped__", None) is before[name]
                   for name in before)
        nursery.cancel_scope.cancel()
    assert _stock_functions() == before
    assert libp2p_patches.leftovers() == []


def test_nested_memos_install_once_and_the_last_one_out_restores() -> None:
    before = _stock_functions()
    a, b = stock_host(), stock_host()
    with libp2p_patches.memoised_peer_records(a):
        wrapped = _stock_functions()
        with libp2p_patches.memoised_peer_records(b), libp2p_patches.memoised_peer_records(a):
            assert _stock_functions() == wrapped  # not wrapped twice
        assert _stock_functions() == wrapped  # a is still inside
    assert _stock_functions() == before
    assert libp2p_patches.leftovers() == []


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


def test_pubsub_patches_reach_one_instance_and_undo() -> None:
    (_, _, patched), (_, _, other) = make_node(), make_node()
    stock_queues = type(patched.peer_queues)
    drops: list[int] = []
    undo_queues = libp2p_patches.deep_peer_queues(patched, 7, lambda: drops.append(1))
    undo_dead = libp2p_patches.keep_live_subscriptions(patched)
    assert type(other.peer_queues) is stock_queues
    assert "_handle_dead_peer" in vars(patched)
    assert "_handle_dead_peer" not in vars(other)

    # A queue stored from now on holds 7 RPCs, and every refusal is reported.
    queue = RpcQueue()
    peer = ID(b"\x00\x01\x02")
    patched.peer_queues[peer] = queue
    accepted = [queue.push(rpc_pb2.RPC()) for _ in range(9)]
    assert accepted.count(True) == 7
    assert len(drops) == 2

    undo_queues()
    undo_dead()
    assert type(patched.peer_queues) is dict
    assert patched.peer_queues[peer] is queue
    assert "_handle_dead_peer" not in vars(patched)


async def test_a_topic_sink_delivers_at_once_and_the_undo_restores_the_channel() -> None:
    node = _, _, pubsub = make_node()
    async with running_node(node):
        subscription = await pubsub.subscribe("t")
        stock = pubsub.subscribed_topics_send["t"]
        got: list[bytes] = []
        undo = libp2p_patches.sink_topic(pubsub, "t", lambda msg: got.append(msg.data))
        for i in range(40):  # more than py-libp2p's 32-slot channel takes
            pubsub.subscribed_topics_send["t"].send_nowait(
                rpc_pb2.Message(data=b"%d" % i))
        assert len(got) == 40
        undo()
        assert pubsub.subscribed_topics_send["t"] is stock
        await subscription.unsubscribe()


async def test_the_gossip_gate_asks_about_forwarders_only_and_the_undo_removes_it() -> None:
    (_, _, patched), (_, _, other) = make_node(), make_node()
    asked: list[ID] = []
    undo = libp2p_patches.gate_forwarded_messages(patched, lambda p: asked.append(p) or False)
    assert "push_msg" in vars(patched)
    assert "push_msg" not in vars(other)
    stranger = ID(b"\x00\x01\x02")
    await patched.push_msg(stranger, rpc_pb2.Message(data=b"x", topicIDs=["t"]))
    assert asked == [stranger]  # refused before anything else looked at it
    undo()
    assert "push_msg" not in vars(patched)


def test_stacked_push_msg_patches_undo_one_at_a_time() -> None:
    (_, _, pubsub) = make_node()
    undo_signatures = libp2p_patches.report_bad_signatures(pubsub, lambda p, m: None)
    reporting = vars(pubsub)["push_msg"]
    undo_gate = libp2p_patches.gate_forwarded_messages(pubsub, lambda p: True)
    assert vars(pubsub)["push_msg"] is not reporting
    undo_gate()
    assert vars(pubsub)["push_msg"] is reporting  # the inner patch stays
    undo_signatures()
    assert "push_msg" not in vars(pubsub)


def test_scoring_patches_reach_one_router_and_undo() -> None:
    (_, patched, _), (_, other, _) = make_node(), make_node()
    undo_prune = libp2p_patches.prune_negative_mesh_peers(patched, lambda p: 0.0)
    undo_retain = libp2p_patches.retain_negative_scores(patched, 60.0)
    assert {"mesh_heartbeat", "handle_graft"} <= set(vars(patched))
    assert "remove_peer" in vars(patched.scorer)
    assert not {"mesh_heartbeat", "handle_graft"} & set(vars(other))
    assert "remove_peer" not in vars(other.scorer)
    undo_prune()
    undo_retain()
    assert not {"mesh_heartbeat", "handle_graft"} & set(vars(patched))
    assert "remove_peer" not in vars(patched.scorer)


def test_flood_publish_reaches_one_router_and_undoes() -> None:
    (_, patched, _), (_, other, _) = make_node(), make_node()
    undo = libp2p_patches.flood_publish(patched)
    assert "_get_peers_to_send" in vars(patched)
    assert "_get_peers_to_send" not in vars(other)
    undo()
    assert "_get_peers_to_send" not in vars(patched)
