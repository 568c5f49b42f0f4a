"""A bare py-libp2p 0.8.1 GossipSub node, the baseline the daemon is measured against.

One process per node, like one gossipchatd per node. It builds the host exactly as
daemon/adapters/p2p.py does (Ed25519 identity, Noise, yamux, TCP on 127.0.0.1 port 0)
and a GossipSub router with the same parameters, copied here on purpose: the baseline
must not move when the daemon's adapter changes without someone noticing. What it
leaves out is everything gossipchat adds: envelopes and their signatures, the SQLite
store, history sync, publish pacing, the RPC socket.

It is driven by lines on stdin and answers with lines on stdout:

    ready <peer id> <multiaddr>                      (once, at start)
    connect <multiaddr>          -> connected <peer id> | error <text>
    sub <topic>                  -> subbed <topic>
    mesh <topic>                 -> mesh <topic> <mesh peers> <topic peers>
    pub <topic> <tag>            -> (nothing; every node that hears it prints recv)
    peers                        -> peers <connected peers>
    sync                         -> synced (once every earlier line is handled)
    quit                         -> exits 0

and, whenever a message arrives on a subscribed topic (its own ones included):

    recv <time.time() at arrival> <tag>

`pub` pads the tag to PAYLOAD_BYTES so that the gossiped messages are about as large
as the daemon's signed envelopes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from harness.libp2p_hosts import stock_host

PAYLOAD_BYTES = 300  # about the size of a short text envelope of the daemon
DIAL_TIMEOUT_S = 10.0

# The same settings as daemon/adapters/p2p.py, for the same reasons (see there).
GOSSIPSUB_SETTINGS: dict[str, Any] = {
    "protocols": [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")],
    "degree": 6,
    "degree_low": 4,
    "degree_high": 12,
    "heartbeat_interval": 1,
    "heartbeat_initial_delay": 0.1,
    "adaptive_gossip_enabled": False,
    "spam_protection_enabled": False,
    "eclipse_protection_enabled": False,
    "prune_back_off": 10,
    "unsubscribe_back_off": 5,
}


def emit(line: str) -> None:
    """One line to the driver; stdout is a pipe that the driver always drains."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main() -> None:
    """Run one node until `quit` or end of stdin."""
    host = stock_host()
    router = GossipSub(**GOSSIPSUB_SETTINGS)
    pubsub = Pubsub(host, router, strict_signing=True)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with (
        host.run(listen_addrs=listen),
        trio.open_nursery() as nursery,
        background_trio_service(pubsub),
        background_trio_service(router),
    ):
        await pubsub.wait_until_ready()
        peer_id = host.get_id().to_base58()
        addr = str(host.get_addrs()[0])
        if "/p2p/" not in addr:
            addr = f"{addr}/p2p/{peer_id}"
        emit(f"ready {peer_id} {addr}")

        async def drain(topic: str) -> None:
            subscription = await pubsub.subscribe(topic)
            emit(f"subbed {topic}")
            while True:
                msg = await subscription.get()
                arrived = time.time()
                tag = bytes(msg.data).split(b" ", 1)[0].decode()
                emit(f"recv {arrived:.6f} {tag}")

        async def handle(line: str) -> bool:
            parts = line.split()
            if not parts:
                return True
            command, args = parts[0], parts[1:]
            if command == "quit":
                return False
            if command == "connect":
                try:
                    info = info_from_p2p_addr(multiaddr.Multiaddr(args[0]))
                    with trio.fail_after(DIAL_TIMEOUT_S):
                        await host.connect(info)
                    emit(f"connected {info.peer_id.to_base58()}")
                except Exception as exc:  # report any dial failure to the driver
                    emit(f"error {type(exc).__name__}: {exc}".replace("\n", " "))
            elif command == "sub":
                nursery.start_soon(drain, args[0])
            elif command == "mesh":
                topic = args[0]
                mesh = len(router.mesh.get(topic, ()))
                known = len(pubsub.peer_topics.get(topic, ()))
                emit(f"mesh {topic} {mesh} {known}")
            elif command == "pub":
                topic, tag = args[0], args[1]
                payload = (tag + " ").encode().ljust(PAYLOAD_BYTES, b".")
                await pubsub.publish(topic, payload)
            elif command == "sync":
                emit("synced")
            elif command == "peers":
                emit(f"peers {len(host.get_network().get_connections_map())}")
            else:
                emit(f"error unknown command {command}")
            return True

        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        running = True
        while running:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                if not await handle(raw.decode()):
                    running = False
                    break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
