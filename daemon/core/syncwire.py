"""Frames of the history sync protocol /gossipchat/sync/1.0.0, sans-IO.

One session reconciles one room between an initiator and a responder:

    initiator                                responder
    Hello(room, since[, until])   ->
                                  <-         Welcome(since) | Refuse(reason)
    Reconcile(bytes)              ->                           (reconcile.Initiator)
                                  <-         Reconcile(bytes)  (reconcile.Responder)
    ... until the initiator's reconciler is done ...
    Push(envelopes it has, the responder lacks)  ->            (repeated, bounded)
    Want(ids it lacks)            ->
                                  <-         Envelopes(wire bytes, last) ...  (until last)
    Done                          ->

Rules:
- Both sides reconcile only messages with ts >= since, where since is the later of the
  two sides' window starts (each window is its newest `depth` messages), so windows of
  different depth never show up as a difference.
- A Hello may carry a third field, until: then both sides also leave out messages with
  ts >= until. Routine re-syncs set it a few seconds back, so that messages still on
  their way through gossip are neither pushed nor fetched a second time.
- Every frame is a varint length and canonical CBOR `[type, ...fields]`; a frame over
  MAX_FRAME_BYTES is refused before it is read. Envelopes inside are verified by the
  receiver like any live message.
- Untrusted input raises SyncWireError and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from . import plaincbor, varint
from .envelope import MAX_ENVELOPE_BYTES
from .reconcile import DEFAULT_FRAME_SIZE_LIMIT

PROTOCOL = "/gossipchat/sync/1.0.0"
# Big enough for a batch of envelopes; reconcile frames stay under 60 KB.
MAX_FRAME_BYTES = 1024 * 1024
MAX_IDS_PER_WANT = 2048
MAX_ENVELOPES_PER_FRAME = 512
# The largest valid frame, [6, [id, ...]], has MAX_IDS_PER_WANT + 3 CBOR items.
MAX_FRAME_ITEMS = MAX_IDS_PER_WANT + 8
ENVELOPE_BATCH_BYTES = 512 * 1024


class SyncWireError(ValueError):
    """A frame that is malformed, oversized or out of place."""


@dataclass(frozen=True)
class Hello:
    """Open a session for a room; since = the initiator's window start (ms); until,
    when not 0, leaves messages with ts >= until out of the session on both sides."""

    room: str
    since: int
    until: int = 0


@dataclass(frozen=True)
class Welcome:
    """Accept; since = the window both sides reconcile."""

    since: int


@dataclass(frozen=True)
class Refuse:
    """Decline the session (for example: not in that room)."""

    reason: str


@dataclass(frozen=True)
class Reconcile:
    """One reconcile.Initiator or reconcile.Responder message."""

    data: bytes


@dataclass(frozen=True)
class Push:
    """Envelopes the initiator holds and the responder lacks."""

    envelopes: tuple[bytes, ...]


@dataclass(frozen=True)
class Want:
    """Ids the initiator lacks; answered by one Envelopes frame."""

    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class Envelopes:
    """Part of the answer to a Want (unknown ids are left out); `last` ends it."""

    envelopes: tuple[bytes, ...]
    last: bool = True


@dataclass(frozen=True)
class Done:
    """The initiator has nothing more to say."""


Frame = Hello | Welcome | Refuse | Reconcile | Push | Want | Envelopes | Done

_TAGS: dict[type, int] = {
    Hello: 1, Welcome: 2, Refuse: 3, Reconcile: 4, Push: 5, Want: 6, Envelopes: 7, Done: 8,
}


def encode(frame: Frame) -> bytes:
    """Length-prefixed bytes of a frame."""
    tag = _TAGS[type(frame)]
    fields: list[object]
    match frame:
        case Hello(room, since, until):
            # Without an upper bound the frame is the 1.0 one, which every peer reads.
            fields = [room, since, until] if until else [room, since]
        case Welcome(since):
            fields = [since]
        case Refuse(reason):
            fields = [reason]
        case Reconcile(data):
            fields = [data]
        case Push(envelopes):
            fields = [list(envelopes)]
        case Envelopes(envelopes, last):
            fields = [list(envelopes), last]
        case Want(ids):
            fields = [list(ids)]
        case Done():
            fields = []
    body = cbor2.dumps([tag, *fields], canonical=True)
    if len(body) > MAX_FRAME_BYTES:
        raise SyncWireError(f"frame of {len(body)} bytes over {MAX_FRAME_BYTES}")
    return varint.encode(len(body)) + body


def read_length(prefix: bytes) -> int | None:
    """The frame length from a varint prefix, None if more bytes are needed."""
    try:
        # The frame limit needs three bytes; a prefix longer than five is garbage.
        found = varint.decode_prefix(prefix, 0, minimal=True, max_len=5)
    except varint.VarintError as exc:
        raise SyncWireError(f"bad length prefix: {exc}") from None
    if found is None:
        return None
    value = found[0]
    if value > MAX_FRAME_BYTES:
        raise SyncWireError(f"frame of {value} bytes over {MAX_FRAME_BYTES}")
    return value


def _bytes_list(value: object, *, max_items: int, max_each: int, exact: int | None = None
                ) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > max_items:
        raise SyncWireError(f"expected a list of at most {max_items} byte strings")
    for item in value:
        if not isinstance(item, bytes) or len(item) > max_each:
            raise SyncWireError("list item is not a byte string within limits")
        if exact is not None and len(item) != exact:
            raise SyncWireError(f"id of {len(item)} bytes, expected {exact}")
    return tuple(value)


def _int(value: object) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise SyncWireError("expected a non-negative integer")
    return value


def decode(body: bytes) -> Frame:
    """Parse one frame body (without its length prefix)."""
    try:
        # Plain values only, and no more of them than a frame can hold: tags cost
        # quadratic time, tiny items 64 times their size in memory (plaincbor).
        items = plaincbor.loads(body, max_items=MAX_FRAME_ITEMS)
    # Untrusted bytes: cbor2 raises a spread of exception types on garbage.
    except Exception as exc:
        raise SyncWireError(f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(items, list) or not items or type(items[0]) is not int:
        raise SyncWireError("a frame is a CBOR array starting with its type")
    tag, fields = items[0], items[1:]
    # Field counts each type allows (Hello: with or without until).
    arity = {1: (2, 3), 2: (1,), 3: (1,), 4: (1,), 5: (1,), 6: (1,), 7: (2,), 8: (0,)}
    if len(fields) not in arity.get(tag, ()):
        raise SyncWireError(f"unknown frame type {tag} or wrong field count")
    match tag:
        case 1:
            room = fields[0]
            if not isinstance(room, str) or not 1 <= len(room) <= 64:
                raise SyncWireError("hello: bad room")
            until = _int(fields[2]) if len(fields) == 3 else 0
            if len(fields) == 3 and not until:
                raise SyncWireError("hello: until 0 is sent as no field")
            return Hello(room, _int(fields[1]), until)
        case 2:
            return Welcome(_int(fields[0]))
        case 3:
            if not isinstance(fields[0], str):
                raise SyncWireError("refuse: reason is not text")
            return Refuse(fields[0][:200])
        case 4:
            if not isinstance(fields[0], bytes) or len(fields[0]) > DEFAULT_FRAME_SIZE_LIMIT:
                raise SyncWireError("reconcile: payload missing or too large")
            return Reconcile(fields[0])
        case 5:
            return Push(_bytes_list(fields[0], max_items=MAX_ENVELOPES_PER_FRAME,
                                    max_each=MAX_ENVELOPE_BYTES))
        case 6:
            return Want(_bytes_list(fields[0], max_items=MAX_IDS_PER_WANT, max_each=32,
                                    exact=32))
        case 7:
            if type(fields[1]) is not bool:
                raise SyncWireError("envelopes: last is not a boolean")
            return Envelopes(_bytes_list(fields[0], max_items=MAX_ENVELOPES_PER_FRAME,
                                         max_each=MAX_ENVELOPE_BYTES), fields[1])
    return Done()


def batches(wires: list[bytes]) -> list[tuple[bytes, ...]]:
    """Split envelopes into frame-sized groups, in order."""
    out: list[tuple[bytes, ...]] = []
    current: list[bytes] = []
    size = 0
    for wire in wires:
        if current and (size + len(wire) > ENVELOPE_BATCH_BYTES
                        or len(current) >= MAX_ENVELOPES_PER_FRAME):
            out.append(tuple(current))
            current, size = [], 0
        current.append(wire)
        size += len(wire)
    if current:
        out.append(tuple(current))
    return out
