"""The errors of the UnixFS modules, and whose fault each one is.

A `BlockError` is the sending peer's fault (ask another); an `InvalidDagError` is the
content's (every peer serves the same bytes for a CID, so the fetch fails).
"""

from __future__ import annotations

__all__ = [
    "BlockError",
    "CidError",
    "FileTooLargeError",
    "InvalidDagError",
    "NotAFileError",
    "SizeMismatchError",
    "UnixfsError",
]


class UnixfsError(Exception):
    """Base of every error this module raises."""


class CidError(UnixfsError, ValueError):
    """A CID (string or bytes) is malformed or uses an unsupported codec or hash."""


class BlockError(UnixfsError):
    """A block does not match the CID it was offered under.

    The peer that sent it is at fault: drop it and ask another.
    """


class InvalidDagError(BlockError):
    """A block matches its CID but the DAG it belongs to is broken or unacceptable.

    Every peer would serve the same bytes for that CID, so the content named by the
    root is at fault, not the peer: the fetch fails.
    """


class FileTooLargeError(InvalidDagError):
    """The DAG declares more bytes than the caller allowed (`max_size`)."""


class SizeMismatchError(InvalidDagError):
    """The DAG's root declares another file size than the caller was told to expect."""


class NotAFileError(InvalidDagError):
    """The DAG is valid UnixFS but not a file (a directory, symlink, ...)."""
