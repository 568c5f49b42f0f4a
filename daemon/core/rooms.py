"""Room names, topics and the per-room Lamport clock.

Rules:
- A room name is 1-64 characters of [a-z0-9._-]; its gossipsub topic is
  /gossipchat/1/room/<name> (INTERFACE.md).
- Each room has a Lamport clock: a new local message takes max(seen) + 1, and every
  message seen, live or synced, advances the clock. History orders by
  (lamport, author, id), which every node computes the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InvalidRoomName

TOPIC_PREFIX = "/gossipchat/1/room/"
_ROOM_RE = re.compile(r"[a-z0-9._-]{1,64}")


def check_room_name(name: object) -> str:
    """Return the name if it is a valid room name, else raise InvalidRoomName."""
    if not isinstance(name, str) or _ROOM_RE.fullmatch(name) is None:
        raise InvalidRoomName(
            f"room name invalid: {name!r}; use 1-64 characters of a-z, 0-9, '.', '_' or '-'"
        )
    return name


def topic_for(room: str) -> str:
    """The gossipsub topic of a room."""
    return TOPIC_PREFIX + check_room_name(room)


def room_of_topic(topic: str) -> str | None:
    """The room of a gossipchat topic, or None for any other topic."""
    if not topic.startswith(TOPIC_PREFIX):
        return None
    name = topic[len(TOPIC_PREFIX) :]
    return name if _ROOM_RE.fullmatch(name) else None


@dataclass
class LamportClock:
    """A per-room logical clock; pure state, no time source."""

    value: int = 0

    def observe(self, lamport: int) -> None:
        """Advance past a counter seen on a message."""
        if lamport > self.value:
            self.value = lamport

    def tick(self) -> int:
        """The counter for a new local message."""
        self.value += 1
        return self.value


@dataclass
class Member:
    """A peer seen in a room."""

    peer_id: str
    nick: str
    last_seen_ms: int


@dataclass
class RoomState:
    """What the node knows of one room: its clock and who was seen in it."""

    name: str
    clock: LamportClock = field(default_factory=LamportClock)
    members: dict[str, Member] = field(default_factory=dict)

    def saw(self, peer_id: str, nick: str | None, now_ms: int) -> None:
        """Record that a peer was seen in the room at now_ms (never moving back)."""
        member = self.members.get(peer_id)
        if member is None:
            self.members[peer_id] = Member(peer_id, nick or "", now_ms)
            return
        if nick:
            member.nick = nick
        member.last_seen_ms = max(member.last_seen_ms, now_ms)
