"""The gossip intake writes a burst in few store transactions, and a message after a
pause at once (daemon/core/intake.py), on real daemons."""

from __future__ import annotations

from typing import Any

from harness.daemons import Cluster, DaemonProcess, pair_in_room, texts
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
