"""The room's DHT key is Kubo's pubsub rendezvous key for the room's topic, and the
schedule of a room's walks."""

from __future__ import annotations

import hashlib
import itertools
import random

from gossipchat.daemon.core.rendezvous import (
    FIND_FIRST_S,
    FIND_MAX_S,
    FIND_RESET_S,
    PROVIDE_S,
    REPROVIDE_ON_CHANGE_S,
    RoomSchedule,
    cid_text,
    namespace_multihash,
    room_key,
)
from gossipchat.daemon.core.rooms import topic_for


def test_the_key_is_the_sha256_multihash_of_floodsub_and_the_topic() -> None:
    key = room_key(topic_for("x"))
    assert key == b"\x12\x20" + hashlib.sha256(b"floodsub:/gossipchat/1/room/x").digest()
    assert key == namespace_multihash("floodsub:/gossipchat/1/room/x")
    assert room_key(topic_for("y")) != key


def test_the_cid_is_v1_raw_in_base32() -> None:
    # The CIDv1 (raw) of sha2-256("hello"), as `ipfs block put --cid-codec raw` prints it
    # for the bytes "hello".
    assert cid_text(namespace_multihash("hello")) == (
        "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq")
    assert cid_text(room_key(topic_for("x"))).startswith("bafkrei")


ADDRS = (b"addr-1",)


def walks(schedule: RoomSchedule, start: float, end: float, *, short: bool,
          addrs: tuple[bytes, ...] = ADDRS, step: float = 1.0) -> list[tuple[float, bool]]:
    """Tick the schedule once per step, each walk ending at once: (when, announced)."""
    out = []
    now = start
    while now < end:
        provide = schedule.due(now, short=short, own_addrs=addrs)
        if provide is not None:
            out.append((now, provide))
            if provide:
                schedule.announced(now, addrs)
            schedule.walked(now, short=short)
        now += step
    return out


def test_a_room_is_walked_and_announced_at_join() -> None:
    schedule = RoomSchedule(random.Random(1))
    assert schedule.due(100.0, short=True, own_addrs=ADDRS) is True
    assert schedule.busy
    assert schedule.due(101.0, short=True, own_addrs=ADDRS) is None  # one walk at a time
    schedule.announced(101.0, ADDRS)
    schedule.walked(101.0, short=False)
    assert schedule.provided
    assert not schedule.busy


def test_a_room_with_enough_members_is_walked_only_to_announce() -> None:
    schedule = RoomSchedule(random.Random(2))
    first = walks(schedule, 0.0, 1.0, short=True)
    assert first == [(0.0, True)]
    later = walks(schedule, 1.0, 3 * PROVIDE_S, short=False)
    assert len(later) == 2, later  # 3 x PROVIDE_S, +-20% each
    assert all(announce for _, announce in later), later
    gaps = [b - a for (a, _), (b, _) in zip([(0.0, True), *later], later, strict=False)]
    assert all(0.8 * PROVIDE_S <= g <= 1.2 * PROVIDE_S + 1 for g in gaps), gaps


def test_a_short_room_walks_again_after_two_seconds_doubling_to_a_minute() -> None:
    schedule = RoomSchedule(random.Random(3))
    found = [when for when, announce in walks(schedule, 0.0, 200.0, short=True)
             if not announce]
    gaps = [b - a for a, b in zip([0.0, *found], found, strict=False)]
    assert gaps[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0], gaps
    assert set(gaps[5:]) == {FIND_MAX_S}


def test_a_room_that_falls_short_walks_at_once_unless_it_only_just_had_enough() -> None:
    schedule = RoomSchedule(random.Random(4))
    walks(schedule, 0.0, 40.0, short=True)  # walked at 0, 2, 6, 14, 30: next in 32 s
    assert schedule.find_delay == FIND_MAX_S
    walks(schedule, 40.0, 50.0, short=False)  # enough, but not for long
    assert walks(schedule, 50.0, 61.0, short=True) == []  # the 32 s still stand
    assert walks(schedule, 61.0, 63.0, short=True) == [(62.0, False)]
    # Enough members for FIND_RESET_S: the next shortfall is looked into at once.
    walks(schedule, 63.0, 63.0 + FIND_RESET_S + 60, short=False)
    start = 63.0 + FIND_RESET_S + 60
    found = walks(schedule, start, start + 7, short=True)
    assert [w for w, announce in found if not announce] == [start, start + FIND_FIRST_S,
                                                           start + 3 * FIND_FIRST_S]


def test_new_addresses_are_announced_again_but_not_within_ten_seconds() -> None:
    schedule = RoomSchedule(random.Random(5))
    walks(schedule, 0.0, 1.0, short=False)
    moved = (b"addr-2",)
    again = walks(schedule, 1.0, 30.0, short=False, addrs=moved)
    assert again == [(REPROVIDE_ON_CHANGE_S, True)]
    assert schedule.provided_addrs == moved


def test_a_walk_that_meets_no_server_announces_again_doubling_to_a_minute() -> None:
    schedule = RoomSchedule(random.Random(6))
    tries = []
    now = 0.0
    while now < 300.0:
        if schedule.due(now, short=False, own_addrs=ADDRS):
            tries.append(now)
            schedule.announced(now, None)
            schedule.walked(now, short=False)
        now += 1.0
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[:5] == [2.0, 4.0, 8.0, 16.0, 32.0], gaps
    assert set(gaps[5:]) == {FIND_MAX_S}, gaps
    assert not schedule.provided


def test_a_walk_that_failed_is_not_retried_for_a_minute() -> None:
    schedule = RoomSchedule(random.Random(7))
    assert schedule.due(0.0, short=True, own_addrs=ADDRS) is True
    schedule.failed(0.5)
    assert not schedule.busy
    assert walks(schedule, 1.0, 60.5, short=True, step=0.5) == []
    assert walks(schedule, 60.5, 61.0, short=True, step=0.5) == [(60.5, True)]
