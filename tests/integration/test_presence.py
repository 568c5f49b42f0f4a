"""Presence and the connection manager on real daemons (127.0.0.1).

- Bridge death: a - b - c in a line; b is killed -9 and stays down; a and c chat on
  both ways with no `connect` from anyone.
- `members` comes from presence: online and last_seen, this node included, and no
  presence record ever shows in `history`.
- A new member gets the directory from the first peer it meets.
"""

from __future__ import annotations

import time

from harness.daemons import Cluster, DaemonProcess, connect, sees, texts, wait_mesh
from harness.waiting import wait_for

ROOM = "line"


def _members(d: DaemonProcess, room: str) -> dict[str, dict]:
    return {m["peer_id"]: m for m in d.call("members", room=room)}


def test_a_line_of_three_keeps_chatting_after_its_middle_is_killed(cluster: Cluster) -> None:
    a, b, c = (cluster.start(n) for n in "abc")
    connect(a, b)  # b dialed a
    connect(b, c)  # c dialed b
    started = time.monotonic()
    for d in (a, b, c):
        d.call("join", room=ROOM)
    wait_mesh(b, ROOM, 2)
    a.call("send", room=ROOM, text="from a")
    c.call("send", room=ROOM, text="from c")
    wait_for(lambda: "from a" in texts(c, ROOM), message="c to hear a through b")
    wait_for(lambda: "from c" in texts(a, ROOM), message="a to hear c through b")
    # The ends learn of each other from presence and the manager joins them.
    wait_for(lambda: sees(a, c), timeout=30, message="the manager to connect a and c")
    joined_s = time.monotonic() - started
    assert a.peer_id in _members(c, ROOM)
    assert c.peer_id in _members(a, ROOM)

    b.kill()
    killed = time.monotonic()
    a.call("send", room=ROOM, text="a after the kill")
    c.call("send", room=ROOM, text="c after the kill")
    wait_for(lambda: "a after the kill" in texts(c, ROOM), timeout=30,
             message="c to hear a without b")
    wait_for(lambda: "c after the kill" in texts(a, ROOM), timeout=30,
             message="a to hear c without b")
    healed_s = time.monotonic() - killed
    for d in (a, c):
        assert d.call("status")["connections"]["connected"] >= 1
    print(f"a-c connected {joined_s:.2f} s after the joins; "
          f"both ways delivered {healed_s:.2f} s after kill -9 of b")


def test_a_lost_connection_is_replaced_within_seconds(cluster: Cluster) -> None:
    """The same line, but each node keeps only one room peer (room_peers_min = 1), so
    a and c are not connected when b dies: the manager must dial to heal the room."""
    for name in "abc":
        home = cluster.home(name)
        home.mkdir(parents=True, mode=0o700)
        # DHT walks would link a and c as well (Kademlia dials the servers it meets).
        (home / "config.toml").write_text("room_peers_min = 1\ndht = \"off\"\n")
    a, b, c = (cluster.start(n) for n in "abc")
    connect(a, b)
    connect(b, c)
    for d in (a, b, c):
        d.call("join", room=ROOM)
    wait_for(lambda: len(_members(a, ROOM)) == 3 and len(_members(c, ROOM)) == 3,
             timeout=30, message="a and c to know all three")
    a.call("send", room=ROOM, text="before")
    wait_for(lambda: "before" in texts(c, ROOM), message="c to hear a through b")
    assert not sees(a, c)

    b.kill()
    killed = time.monotonic()
    wait_for(lambda: sees(a, c), timeout=30, message="the manager to connect a and c")
    connected_s = time.monotonic() - killed
    a.call("send", room=ROOM, text="a after the kill")
    c.call("send", room=ROOM, text="c after the kill")
    wait_for(lambda: "a after the kill" in texts(c, ROOM), timeout=30,
             message="c to hear a without b")
    wait_for(lambda: "c after the kill" in texts(a, ROOM), timeout=30,
             message="a to hear c without b")
    healed_s = time.monotonic() - killed
    assert not sees(a, b)
    print(f"a-c connected {connected_s:.2f} s after kill -9 of b; "
          f"both ways delivered {healed_s:.2f} s after it")


def test_members_come_from_presence_with_online_and_last_seen(cluster: Cluster) -> None:
    # Announce every 2 s, so that "offline" (not heard for 3 intervals) comes in 6 s.
    for name in ("x", "y", "z"):
        home = cluster.home(name)
        home.mkdir(parents=True, mode=0o700)
        (home / "config.toml").write_text("presence_interval_s = 2.0\n")
    x, y, z = (cluster.start(n) for n in "xyz")
    connect(y, x)
    connect(y, z)
    x.call("nick", name="xavier")
    for d in (x, y, z):
        d.call("join", room="den")

    def all_online() -> bool:
        members = _members(y, "den")
        return all(members.get(d.peer_id, {}).get("online") for d in (x, y, z))

    wait_for(all_online, timeout=30, message="y to list x, y and z online")
    members = _members(y, "den")
    assert members[x.peer_id]["nick"] == "xavier"
    assert set(members) == {x.peer_id, y.peer_id, z.peer_id}
    assert list(members) == sorted(members)
    assert all(set(m) == {"peer_id", "nick", "last_seen", "online"} for m in members.values())
    # Presence is not history: nothing but the messages of the room is stored or listed.
    assert y.call("history", room="den") == []
    assert y.call("status")["presence"]["rooms"]["den"]["members"] == 3
    out = y.cli("members", "den").stdout
    assert out.count("online") == 3, out
    assert "xavier" in out
    assert "den: 3 of 3 members online" in y.cli("status").stdout

    x.kill()
    gone = wait_for(lambda: (m := _members(y, "den")[x.peer_id]) and not m["online"] and m,
                    timeout=30, message="y to show x offline")
    assert gone["last_seen"] > 0
    assert _members(y, "den")[z.peer_id]["online"]
    assert y.cli("members", "den").stdout.count("online") == 2
    # The directory is kept in the store: a restart still lists x, offline.
    assert y.terminate() == 0
    y = cluster.start("y")
    listed = _members(y, "den")
    # A repeated record refreshes last seen in the store at most once a minute.
    assert gone["last_seen"] - 60_000 <= listed[x.peer_id]["last_seen"] <= gone["last_seen"]
    assert not listed[x.peer_id]["online"]


def test_a_new_member_gets_the_directory_from_the_first_peer_it_meets(
        cluster: Cluster) -> None:
    a, b, c = (cluster.start(n) for n in "abc")
    connect(a, b)
    connect(a, c)
    for d in (a, b, c):
        d.call("join", room="hall")
    wait_for(lambda: len(_members(a, "hall")) == 3, timeout=30,
             message="a to know b and c")
    d = cluster.start("d")
    connect(a, d)
    d.call("join", room="hall")
    wait_for(lambda: len(_members(d, "hall")) == 4, timeout=20,
             message="d to know all four")
    assert d.call("status")["presence"]["fetches"] >= 1
    # And the manager connects d to the other members it now knows.
    wait_for(lambda: sees(d, b) and sees(d, c), timeout=30,
             message="d connected to b and c")
    assert not [e for e in d.call("status")["rejected"]]
