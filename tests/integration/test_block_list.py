"""The block list on real daemons: a blocked peer's connections close as they come up
(counted in `status.connections.refused.blocked`), whoever dialed, and after an unblock
the peer's next connection stays and carries the room again."""

from __future__ import annotations

from gossipchat.clients import RpcError
from harness.daemons import Cluster, DaemonProcess, connect, sees, texts, wait_mesh
from harness.waiting import wait_for

ROOM = "den"


def _refused_blocked(daemon: DaemonProcess) -> int:
    refused: dict[str, int] = daemon.call("status")["connections"]["refused"]
    return refused.get("blocked", 0)


def test_a_blocked_peer_is_refused_as_it_connects_and_welcome_after_unblock(
        cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    for d in (a, b):
        d.call("join", room=ROOM)
    wait_mesh(a, ROOM, 1)
    a.call("block", peer=b.peer_id)
    # Read before b notices and redials (its first redial waits 0.4-0.6 s).
    assert _refused_blocked(a) == 0  # the block itself hangs up; nothing came up yet
    wait_for(lambda: not sees(b, a), message="b to lose its connection to a")

    # b does not know it is blocked: its dials (its own redials, and this one) get a
    # connection that a closes as soon as it comes up.
    try:
        b.call("connect", addr=a.addr)
    except RpcError:
        pass  # closed before b's dial finished: refused all the same
    wait_for(lambda: _refused_blocked(a) >= 1, message="a to refuse b's connection")
    wait_for(lambda: not sees(a, b) and not sees(b, a),
             message="the refused connection to be gone on both sides")
    b.call("send", room=ROOM, text="while blocked")

    a.call("unblock", peer=b.peer_id)
    refused = _refused_blocked(a)
    b.call("connect", addr=a.addr)
    wait_mesh(a, ROOM, 1)
    b.call("send", room=ROOM, text="after unblock")
    wait_for(lambda: {"while blocked", "after unblock"} <= set(texts(a, ROOM)),
             message="both of b's messages at a (the first by sync)")
    assert sees(a, b)
    assert _refused_blocked(a) == refused  # the connection after the unblock was kept
