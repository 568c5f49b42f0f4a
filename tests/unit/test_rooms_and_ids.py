"""Room names, topics, the Lamport clock and Ed25519 peer ids."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core import peerid
from gossipchat.daemon.core.rooms import (
    LamportClock,
    RoomState,
    check_room_name,
    room_of_topic,
    topic_for,
)
from gossipchat.daemon.errors import InvalidRoomName


@pytest.mark.parametrize("name", ["a", "lobby", "a.b_c-d", "0" * 64, "x-1.2"])
def test_valid_room_names(name: str) -> None:
    assert check_room_name(name) == name
    assert topic_for(name) == f"/gossipchat/1/room/{name}"
    assert room_of_topic(topic_for(name)) == name


@pytest.mark.parametrize("name", ["", "A", "a b", "a/b", "0" * 65, "é", None, 5, "a\n"])
def test_invalid_room_names(name: object) -> None:
    with pytest.raises(InvalidRoomName) as err:
        check_room_name(name)
    assert "room name invalid" in str(err.value)


def test_foreign_topics_are_not_rooms() -> None:
    assert room_of_topic("/other/topic") is None
    assert room_of_topic("/gossipchat/1/room/BAD") is None


def test_lamport_clock() -> None:
    clock = LamportClock()
    assert clock.tick() == 1
    clock.observe(10)
    assert clock.tick() == 11
    clock.observe(3)
    assert clock.tick() == 12


def test_room_state_never_moves_last_seen_back() -> None:
    state = RoomState("r")
    state.saw("p", "nick", 100)
    state.saw("p", None, 50)
    assert state.members["p"].last_seen_ms == 100
    assert state.members["p"].nick == "nick"


def test_peer_id_round_trip() -> None:
    raw = peerid.from_public_key(bytes(range(32)))
    text = peerid.to_text(raw)
    assert text.startswith("12D3KooW")
    assert peerid.from_text(text) == raw
    assert peerid.public_key(raw) == bytes(range(32))


@pytest.mark.parametrize("text", ["", "nope", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
                                  "12D3KooW!!"])
def test_bad_peer_ids(text: str) -> None:
    assert not peerid.is_valid_text(text)
    with pytest.raises(peerid.PeerIdError):
        peerid.from_text(text)
