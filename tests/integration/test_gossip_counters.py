"""Gossip on real daemons as `status` counts it: the intake writes a burst in few
store transactions and a message after a pause at once (daemon/core/intake.py);
frames and the copies a mesh delivers twice are counted."""

from __future__ import annotations

from typing import Any

from harness.daemons import Cluster, DaemonProcess, pair_in_room, texts, triangle_in_room
from harness.waiting import wait_for

ROOM = "intake"


def intake(daemon: DaemonProcess) -> dict[str, Any]:
    gossip = daemon.call("status")["gossip"]
    return {"batches": gossip["intake_batches"], "lingered": gossip["intake_lingered"]}


def test_a_burst_is_written_in_few_transactions_and_a_lone_message_at_once(
        cluster: Cluster) -> None:
    a, b = pair_in_room(cluster, ROOM)
    a.call("send", room=ROOM, text="hello")
    wait_for(lambda: texts(b, ROOM) == ["hello"], message="the first message at b")
    lone = intake(b)
    assert lone["lingered"] == 0, lone  # nothing was flowing: written at once

    count = 300
    with a.client() as client:
        for i in range(count):
            client.send(ROOM, f"burst {i}")
    wait_for(lambda: len(texts(b, ROOM)) == count + 1, timeout=60,
             message=f"{count} burst messages at b")
    after = intake(b)
    batches = after["batches"] - lone["batches"]
    # One transaction per message (or two) without the wait; several per one with it.
    print(f"{count} messages in {batches} intake batches")
    assert batches <= count // 3, after
    assert after["lingered"] > lone["lingered"]
    assert texts(b, ROOM) == ["hello", *(f"burst {i}" for i in range(count))]


def test_a_triangle_counts_frames_and_the_copies_it_drops_or_withholds(
        cluster: Cluster) -> None:
    """In a room of three, each message reaches b and c from a, and b and c forward it
    to each other unless the other's copy came first. Each copy b or c forwards is
    dropped by its receiver or, if the receiver's own copy reached it before ours
    left, withheld by its sender: one or two a message. The daemons publish on their
    own too (presence announcements on the room's presence topic), and each such
    message crosses the triangle the same way, so the upper bound counts every
    message published in the room, by all three."""
    a, b, c = triangle_in_room(cluster, ROOM)
    keys = ("copies_dropped", "copies_withheld", "frames_in", "frames_out", "published")
    before = {d.name: d.call("status")["gossip"] for d in (a, b, c)}
    count = 20
    with a.client() as client:
        for i in range(count):
            client.send(ROOM, f"m{i}")
    for daemon in (b, c):
        wait_for(lambda d=daemon: len(texts(d, ROOM)) == count, message="every message")
    after = {d.name: d.call("status")["gossip"] for d in (a, b, c)}
    gained = {name: {key: after[name][key] - before[name][key] for key in keys}
              for name in after}
    print(gained)

    def crossing(*daemons: DaemonProcess) -> int:
        return sum(gained[d.name]["copies_dropped"] + gained[d.name]["copies_withheld"]
                   for d in daemons)

    published = sum(gained[d.name]["published"] for d in (a, b, c))
    assert gained[a.name]["published"] >= count, gained
    assert crossing(b, c) >= count, gained
    assert crossing(a, b, c) <= 2 * published, gained
    assert gained[b.name]["copies_dropped"] + gained[c.name]["copies_dropped"] >= count
    assert gained[a.name]["frames_out"] > 0
    assert gained[b.name]["frames_in"] > 0
    assert gained[c.name]["frames_in"] > 0
