"""DCUtR's stream handler against a raw py-libp2p peer on loopback: a punch is only
answered over a relayed connection, and `hole_punching = false` does not serve the
protocol at all (test_netns_holepunch.py has the punches themselves)."""

from __future__ import annotations

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from gossipchat.daemon.core import dcutr
from harness.daemons import Cluster
from harness.libp2p_hosts import make_node, running_node
from harness.waiting import wait_for

DCUTR = TProtocol(dcutr.PROTOCOL)


async def test_a_punch_over_a_direct_connection_is_reset_and_counted(
        cluster: Cluster) -> None:
    d = cluster.start("d")
    async with running_node(make_node()) as (host, _, _):
        info = info_from_p2p_addr(multiaddr.Multiaddr(d.addr))
        await host.connect(info)
        answer = b""
        with trio.fail_after(10):
            try:
                # The daemon resets at once, often before multistream's answer reaches
                # us: then new_stream fails.
                stream = await host.new_stream(info.peer_id, [DCUTR])
                await stream.write(dcutr.frame(dcutr.HolePunch(dcutr.CONNECT, (
                    dcutr.addr_to_bytes("/ip4/198.18.0.9/tcp/4001"),))))
                answer = await stream.read(100)
            except Exception:  # the reset shows as a stream error
                pass
        assert answer == b""
        await trio.to_thread.run_sync(lambda: wait_for(
            lambda: d.call("status")["holepunch"]["failed"].get("not_relayed") == 1,
            message="the punch to be refused as not relayed"))
        view = d.call("status")["holepunch"]
        assert view["enabled"] is True
        assert view["attempts"] == 0
        assert d.call("id")["peer_id"] == d.peer_id  # still up


async def test_hole_punching_false_does_not_serve_the_protocol(cluster: Cluster) -> None:
    config = cluster.root / "off.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("hole_punching = false\n")
    d = cluster.start("d", "--config", str(config))
    assert d.call("status")["holepunch"]["enabled"] is False
    async with running_node(make_node()) as (host, _, _):
        info = info_from_p2p_addr(multiaddr.Multiaddr(d.addr))
        await host.connect(info)
        refused = False
        # py-libp2p's new_stream may hang instead of failing on a refused protocol.
        with trio.move_on_after(5):
            try:
                await host.new_stream(info.peer_id, [DCUTR])
            except Exception:  # multistream: protocol not supported
                refused = True
        assert refused
