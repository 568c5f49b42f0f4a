"""The node's Ed25519 identity key, kept in the home.

The file holds a libp2p protobuf PrivateKey (Type Ed25519, Data = 32-byte seed plus
32-byte public key, as go-libp2p and Kubo write it), mode 0600. It is created once on
first start, so the peer id stays the same across restarts. A key that group or others
may read is put back to 0600 with a warning, as ssh warns about its keys; one whose
mode cannot be fixed is refused.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..core import peerid

KEY_FILE = "identity.key"
_PREFIX = b"\x08\x01\x12\x40"

log = logging.getLogger(__name__)


class IdentityError(Exception):
    """The key file exists but cannot be used."""


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair and the peer id derived from it."""

    seed: bytes
    public_key: bytes

    @cached_property
    def peer_id(self) -> bytes:
        """The binary libp2p peer id."""
        return peerid.from_public_key(self.public_key)

    @cached_property
    def peer_id_text(self) -> str:
        """The base58 peer id (`status` asks on every call: base58 is ~4 us)."""
        return peerid.to_text(self.peer_id)

    @cached_property
    def _key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over data (libsodium: 25 us here, OpenSSL 39 us)."""
        return self._key.sign(data).signature


def _from_seed(seed: bytes) -> Identity:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Identity(seed, public)


def load_or_create(home: Path) -> Identity:
    """Read the home's key, or make one (0600) if there is none."""
    path = home / KEY_FILE
    try:
        raw = _read_private(path)
    except FileNotFoundError:
        seed = os.urandom(32)
        identity = _from_seed(seed)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_PREFIX + seed + identity.public_key)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return identity
    if len(raw) != 68 or not raw.startswith(_PREFIX):
        raise IdentityError(f"{path} is not an Ed25519 libp2p private key")
    identity = _from_seed(raw[4:36])
    if identity.public_key != raw[36:]:
        raise IdentityError(f"{path}: public key does not match the seed")
    return identity


def _read_private(path: Path) -> bytes:
    """The key file's bytes, after making sure only its owner can read it."""
    with open(path, "rb") as fh:
        mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
        if mode & 0o077:
            try:
                os.fchmod(fh.fileno(), 0o600)
            except OSError as exc:
                raise IdentityError(
                    f"{path} has mode {mode:04o}, readable by other users, and it cannot"
                    f" be made 0600 ({exc}); fix it with chmod 600 {path}") from exc
            log.warning(
                "%s had mode %04o, readable by other users: changed it to 0600. Anyone who"
                " read it can sign as this peer; if that may have happened, move it aside"
                " and restart for a new identity", path, mode)
        return fh.read()
