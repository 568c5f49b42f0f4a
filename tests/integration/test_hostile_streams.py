"""A hostile raw py-libp2p peer that opens streams and never finishes a frame, claims
huge frames, and replays a message hundreds of times, against a real daemon that an
honest daemon chats with all along (issue 9 §5).

What must hold: the honest pair keeps chatting, the history holds exactly what was
said, the daemon's memory stays bounded, and every hostile stream is cut or capped.
"""

from __future__ import annotations

import time

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.peerinfo import info_from_p2p_addr

from gossipchat.daemon.core import syncwire
from harness.daemons import Cluster, DaemonProcess, connect, texts, wait_mesh
from harness.libp2p_hosts import make_node, running_node
from harness.waiting import wait_for

SYNC = TProtocol(syncwire.PROTOCOL)
BITSWAP = TProtocol("/ipfs/bitswap/1.2.0")
ROOM = "den"
STREAMS = 64  # the daemon's max_streams_per_connection here
TOPIC = f"/gossipchat/1/room/{ROOM}"


async def _chat(a: DaemonProcess, b: DaemonProcess, text: str) -> None:
    await trio.to_thread.run_sync(lambda: a.call("send", room=ROOM, text=text))
    await trio.to_thread.run_sync(
        lambda: wait_for(lambda: text in texts(b, ROOM), message=f"{text!r} reached {b.name}"))


async def test_slow_loris_oversize_and_replay_leave_honest_chat_untouched(
        cluster: Cluster) -> None:
    home = cluster.home("d")
    home.mkdir(parents=True, mode=0o700)
    # The muxer's bound is the one under test here, not the per-protocol one
    # (test_peer_limits.py). It is set below py-libp2p's own cap on the streams a
    # host opens (about 256), or the hostile host would stop itself first.
    (home / "config.toml").write_text(
        f"max_streams_per_connection = {STREAMS}\nmax_streams_per_protocol = {STREAMS}\n")
    d = cluster.start("d")
    honest = cluster.start("honest")
    for daemon in (d, honest):
        daemon.call("join", room=ROOM)
    connect(honest, d)
    wait_mesh(d, ROOM, 1)
    rss_before = d.rss_kib()
    held: list = []
    async with running_node(make_node()) as (host, _, pubsub):
        info = info_from_p2p_addr(multiaddr.Multiaddr(d.addr))
        await host.connect(info)

        # Slow loris: streams that start a frame and never finish it. The daemon's
        # muxer holds at most max_streams_per_connection of them; the rest are refused.
        # (Sync streams: the sync server waits FRAME_TIMEOUT_S for a frame to finish.)
        refused = 0
        for _ in range(STREAMS + 8):
            # A refused stream is reset before its protocol is negotiated: py-libp2p's
            # new_stream raises StreamFailure (or, on older paths, never returns, so
            # a time-out counts too).
            with trio.move_on_after(3) as timed_out:
                try:
                    stream = await host.new_stream(info.peer_id, [SYNC])
                    await stream.write(b"\x85")  # the first byte of a multi-byte varint
                    held.append(stream)
                except (StreamError, StreamFailure):
                    refused += 1
            refused += timed_out.cancelled_caught
        # Our own pubsub and identify streams hold a place or two as well.
        assert 8 <= refused <= 12, refused
        await _chat(honest, d, "through the loris")
        await _chat(d, honest, "and back")

        # Frames that claim more than any frame may hold: cut at once, nothing read.
        for protocol, claim in ((SYNC, syncwire.MAX_FRAME_BYTES * 64),
                                (BITSWAP, 1 << 40)):
            for stream in held[:8]:
                await stream.reset()
            del held[:8]
            stream = await host.new_stream(info.peer_id, [protocol])
            prefix = bytearray()
            value = claim
            while True:
                byte, value = value & 0x7F, value >> 7
                prefix.append(byte | (0x80 if value else 0))
                if not value:
                    break
            await stream.write(bytes(prefix) + b"\0" * 1024)
            with trio.fail_after(20):
                try:
                    while await stream.read(65536):
                        pass
                except StreamError:
                    pass  # reset by the daemon: what we expect

        # Replays: one honest message hundreds of times over gossip is stored once.
        # (Spaced out: py-libp2p's own outbound queue drops past 32 RPCs.)
        await pubsub.subscribe(TOPIC)
        await pubsub.wait_for_subscription(info.peer_id, TOPIC, timeout=20)
        said = await trio.to_thread.run_sync(
            lambda: honest.call("send", room=ROOM, text="say it once"))
        wire = await trio.to_thread.run_sync(lambda: _wire_of(d, said["id"]))
        for _ in range(300):
            await pubsub.publish(TOPIC, wire)
            await trio.sleep(0.01)
        await _chat(honest, d, "after the replays")

        for stream in held:
            await stream.reset()
    status = d.call("status")
    assert status["faults"] == {}
    assert status["connections"]["streams_refused"]["per_connection"] >= 8
    assert status["limits"]["streams_per_connection"] >= 8
    assert status["received_duplicate"] >= 100
    assert texts(d, ROOM).count("say it once") == 1
    assert texts(d, ROOM) == texts(honest, ROOM)
    assert d.call("id")["peer_id"] == d.peer_id
    # The streams are gone and so is what they held.
    rss_after = d.rss_kib()
    print(f"RSS before {rss_before} KiB, after {rss_after} KiB")
    assert rss_after < rss_before + 64 * 1024


def _wire_of(daemon: DaemonProcess, message_id: str) -> bytes:
    """The signed bytes of a stored message, as a peer would relay them."""
    import sqlite3

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with sqlite3.connect(daemon.home / "store.sqlite") as db:
            row = db.execute("SELECT wire FROM messages WHERE id = ?",
                             (bytes.fromhex(message_id),)).fetchone()
        if row:
            return bytes(row[0])
        time.sleep(0.05)
    raise AssertionError(f"{message_id} never stored on {daemon.name}")
