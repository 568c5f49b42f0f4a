"""A peer's outbound queue: everything queued for it leaves in one RPC frame, up to
the frame size limit, as go-libp2p-pubsub merges its queued RPCs.

Rules:
- Pieces are kept encoded: subscription fields, control sub-fields (the pieces of one
  ControlMessage), and `publish` fields encoded once per message and shared by every
  peer's queue. A frame is their concatenation, so its size is known exactly.
- Messages are bounded in bytes (`max_bytes`): a message that does not fit is refused
  and counted, never silently lost; publishers wait for room first (`has_room`), so
  only forwarded gossip is ever refused, and history sync repairs that.
- Subscriptions and control go first: they are small and they shape the mesh.
- A queued message can be withdrawn by its id before it leaves (`withdraw`): the
  router does so when the peer sends us the same message first, as js-libp2p's
  gossipsub leaves out the peers that sent a copy while it validated.
- One owner: the router pushes, the peer's writer takes frames; neither blocks.
"""

from __future__ import annotations

from collections import deque

from .. import varint

__all__ = ["DEFAULT_MAX_BYTES", "MAX_FRAME", "Outbox"]

# go-libp2p-pubsub's default maximum RPC size; js accepts up to 4 MiB.
MAX_FRAME = 1 << 20
DEFAULT_MAX_BYTES = 4 << 20
_CONTROL_KEY = b"\x1a"  # field 3, length-delimited


def _field_len(payload_len: int) -> int:
    return 1 + varint.encoded_len(payload_len) + payload_len


class Outbox:
    """Encoded pieces waiting for one peer, taken as frames of at most `max_frame`."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, max_frame: int = MAX_FRAME) -> None:
        self.max_bytes = max_bytes
        self.max_frame = max_frame
        self._subs: list[bytes] = []
        self._control: list[bytes] = []
        # Queued `publish` fields as [field, id] (the id None when the pusher gave
        # none); a withdrawn one is emptied in place and skipped when frames are taken.
        self._msgs: deque[list[bytes | None]] = deque()
        self._by_id: dict[bytes, list[bytes | None]] = {}
        self._live = 0  # queued messages not withdrawn
        self.queued_bytes = 0  # bytes of queued messages
        self.refused = 0  # messages refused for want of room
        self.withdrawn = 0  # messages withdrawn before they left
        self.frames = 0

    def __bool__(self) -> bool:
        return bool(self._subs or self._control or self._live)

    def has_room(self, size: int) -> bool:
        """Whether a message field of `size` bytes fits now."""
        return self.queued_bytes + size <= self.max_bytes

    def push_subscription(self, field_bytes: bytes) -> None:
        """Queue an encoded `subscriptions` field."""
        self._subs.append(field_bytes)

    def push_control(self, piece: bytes) -> None:
        """Queue an encoded ControlMessage sub-field (ihave, iwant, graft or prune)."""
        self._control.append(piece)

    def push_message(self, field_bytes: bytes, msg_id: bytes | None = None) -> bool:
        """Queue an encoded `publish` field (under its message id, if given, for
        `withdraw`); False (and counted) if it does not fit."""
        if msg_id is not None and msg_id in self._by_id:
            return True  # queued already: it leaves once
        size = len(field_bytes)
        if size + 16 > self.max_frame or not self.has_room(size):
            self.refused += 1
            return False
        entry: list[bytes | None] = [field_bytes, msg_id]
        self._msgs.append(entry)
        if msg_id is not None:
            self._by_id[msg_id] = entry
        self._live += 1
        self.queued_bytes += size
        return True

    def withdraw(self, msg_id: bytes) -> bool:
        """Unqueue the message with this id if it has not left yet; True if it was
        queued."""
        entry = self._by_id.pop(msg_id, None)
        if entry is None:
            return False
        field_bytes = entry[0]
        assert field_bytes is not None
        entry[0] = None
        self._live -= 1
        self.queued_bytes -= len(field_bytes)
        self.withdrawn += 1
        if not self._live:
            self._msgs.clear()
        return True

    def take_frame(self) -> bytes | None:
        """The next frame (an RPC without its length prefix), or None if empty."""
        if not self:
            return None
        parts: list[bytes] = []
        size = 0
        while self._subs and size + len(self._subs[0]) <= self.max_frame:
            piece = self._subs.pop(0)
            parts.append(piece)
            size += len(piece)
        control: list[bytes] = []
        control_len = 0
        while self._control:
            piece = self._control[0]
            if size + _field_len(control_len + len(piece)) > self.max_frame:
                if not control and not parts:
                    self._control.pop(0)  # larger than any frame: never sendable
                    continue
                break
            control.append(self._control.pop(0))
            control_len += len(piece)
        if control:
            payload = b"".join(control)
            parts.append(_CONTROL_KEY + varint.encode(len(payload)) + payload)
            size += _field_len(control_len)
        msgs = self._msgs
        while msgs:
            field_bytes, msg_id = msgs[0]
            if field_bytes is None:  # withdrawn
                msgs.popleft()
                continue
            if size + len(field_bytes) > self.max_frame:
                break
            msgs.popleft()
            if msg_id is not None:
                del self._by_id[msg_id]  # one entry per id (push_message)
            parts.append(field_bytes)
            size += len(field_bytes)
            self.queued_bytes -= len(field_bytes)
            self._live -= 1
        if not parts:
            return None
        self.frames += 1
        return b"".join(parts)
