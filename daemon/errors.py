"""The project's own error types, one JSON-RPC application code each.

Library exceptions (trio's, libp2p's, sqlite3's) are translated into these at the
adapter's edge, so the RPC server maps exactly one family of errors. Codes count down
from -32001 and are part of the contract with scripts: never renumber one.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GossipchatError(Exception):
    """Base of every error a caller of the node API can act on."""

    code = -32000

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ProtocolError(Exception):
    """A peer broke a wire protocol (yamux, bitswap): the peer's fault, never a caller's.

    Handled where the stream or connection is (reset it, count it); it has no RPC code
    because no caller ever sees it.
    """


class InvalidRoomName(GossipchatError):
    """A room name outside 1-64 characters of [a-z0-9._-]."""

    code = -32001


class NotInRoom(GossipchatError):
    """An operation on a room this node has not joined."""

    code = -32002


class MessageTooLarge(GossipchatError):
    """A text or envelope over the size limits."""

    code = -32003


class InvalidArgument(GossipchatError):
    """A parameter with the right type but an unusable value."""

    code = -32004


class PeerUnreachable(GossipchatError):
    """A dial that failed or timed out."""

    code = -32005


class NotFound(GossipchatError):
    """An unknown message id, CID or subscription."""

    code = -32006


class ImageError(ValueError):
    """Bytes refused as an image: the base `core/imaging` raises, mixed into the
    RPC errors below (it has no code of its own). ``reason`` is a stable tag."""

    reason: ClassVar[str] = "invalid_image"


class ImageTooLarge(GossipchatError, ImageError):
    """An image over the byte or pixel limits ("image too large: N bytes, limit M")."""

    code = -32007
    reason: ClassVar[str] = "too_large"


class NotAnImage(GossipchatError, ImageError):
    """Bytes that do not decode as an allowed image format ("not an image: ...")."""

    code = -32008
    reason: ClassVar[str] = "not_an_image"


class PeerBlocked(GossipchatError):
    """An attempt to reach a peer on the block list."""

    code = -32009


class ShuttingDown(GossipchatError):
    """A call that arrived while the node stops."""

    code = -32010


class PathError(GossipchatError):
    """A file path that cannot be read or written as asked."""

    code = -32011


class FetchTimeout(GossipchatError):
    """No peer delivered the content before the deadline."""

    code = -32012


class StoreUnavailable(GossipchatError):
    """The SQLite store cannot be read or written (damaged, I/O error); nothing was changed."""

    code = -32013


class StorageFull(StoreUnavailable):
    """The disk holding the store is full; nothing was written. Frees up by itself."""

    code = -32014


class StoreDamaged(StoreUnavailable):
    """SQLite found a damaged page in the store ("database disk image is malformed")."""

    code = -32015


class ImageMismatch(GossipchatError, ImageError):
    """Content behind a CID that is not what the image message says it is."""

    code = -32016
    reason: ClassVar[str] = "claim_mismatch"


class LimitReached(GossipchatError):
    """A request that would pass one of the daemon's resource limits (docs/limits.md)."""

    code = -32020


class ResponseTooLarge(GossipchatError):
    """An answer larger than one response may hold; ask for less, or page."""

    code = -32021
