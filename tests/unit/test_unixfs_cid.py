"""CIDs (core/unixfs/cid.py): text forms, CIDv0, verification and bitswap prefixes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.daemon.core import unixfs, varint
from gossipchat.daemon.core.unixfs import (
    CHUNK_SIZE,
    CidError,
    cid_from_str,
    cid_to_str,
    import_file,
    verify_block,
)
from gossipchat.daemon.core.unixfs.cid import _b58encode
from tests.unit.unixfs_samples import FOREIGN_DAGS, blocks_of, pattern

# --------------------------------------------------------------------------------------
# CIDs


def test_cid_string_round_trip() -> None:
    cid = import_file(b"hello").root
    text = cid_to_str(cid)
    assert text.startswith("bafkrei")
    assert text == text.lower()
    assert cid_from_str(text) == cid
    assert cid_from_str(text.upper()) == cid  # multibase 'B' is base32 upper


def test_cidv0_string_is_accepted_and_kept_as_v0() -> None:
    root = FOREIGN_DAGS["v0-trickle"][0]
    cid = cid_from_str(root)
    assert len(cid) == 34
    assert cid_to_str(cid) == root
    v1 = unixfs.normalize_cid(cid)
    assert unixfs.parse_cid(v1).version == 1
    assert unixfs.parse_cid(v1).digest == unixfs.parse_cid(cid).digest
    assert cid_to_str(v1).startswith("bafybei")


def test_base58btc_cidv1_is_accepted() -> None:
    cid = import_file(b"hello").root
    text = "z" + _b58encode(cid)
    assert cid_from_str(text) == cid


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hello",
        "b",
        "bafkrei",
        "b!!!!",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykU",  # mixed case
        "Qm" + "0" * 44,  # '0' is not base58
        "QmP5wrKnxUpcnW7U8zt6iTiF3VNpzZNfhF29DJceVD3b7",  # too short for CIDv0
        "mAXASIA",  # base64 multibase: not accepted
        "z1",
        "b" + "a" * 1000,
    ],
)
def test_cid_from_str_rejects_garbage(garbage: str) -> None:
    with pytest.raises(CidError):
        cid_from_str(garbage)
    assert issubclass(CidError, ValueError)


def test_verify_block() -> None:
    cid = import_file(b"hello").root
    assert verify_block(cid, b"hello")
    assert verify_block(cid, memoryview(b"hello"))
    assert not verify_block(cid, b"hellO")
    sha512 = bytes((1, 0x55, 0x13, 0x40)) + hashlib.sha512(b"hello").digest()
    with pytest.raises(CidError, match="multihash"):
        verify_block(sha512, b"hello")
    cbor = bytes((1, 0x71, 0x12, 0x20)) + hashlib.sha256(b"hello").digest()
    with pytest.raises(CidError, match="codec"):
        verify_block(cbor, b"hello")
    with pytest.raises(CidError):
        verify_block(b"\x01\x55\x12\x20short", b"hello")


def test_prefix_round_trip() -> None:
    two_chunks = import_file(pattern(251, CHUNK_SIZE + 1))
    v0_root, v0_blocks = FOREIGN_DAGS["v0-trickle"]
    samples = [
        (import_file(b"hello").root, b"hello"),
        (two_chunks.root, blocks_of(two_chunks)[two_chunks.root]),
        (cid_from_str(v0_root), base64.b64decode(dict(v0_blocks)[v0_root])),
    ]
    for cid, data in samples:
        assert unixfs.cid_from_prefix(unixfs.cid_prefix(cid), data) == cid
    with pytest.raises(CidError):
        unixfs.cid_from_prefix(b"\x01\x55\x13\x40", b"x")  # sha2-512
    with pytest.raises(CidError):
        unixfs.cid_from_prefix(b"\x01\x55\x12\x20\x00", b"x")  # trailing byte


def _b32_by_the_book(body: str) -> bytes | None:
    """What cid_from_str took base32 to be before it read it with int(): the standard
    library's decoder, and the encoding of the result read back as the check."""
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except ValueError:  # binascii.Error
        return None
    return raw if base64.b32encode(raw).decode().lower().rstrip("=") == body.lower() else None


_B32_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", max_size=70)
_BODIES = (st.binary(min_size=34, max_size=40).map(
    lambda raw: base64.b32encode(raw).decode().lower().rstrip("="))
    | _B32_TEXT | st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567018=!A", max_size=70))


@given(_BODIES)
def test_base32_reads_as_the_standard_decoder_with_its_round_trip(body: str) -> None:
    """Every body, canonical or not, is accepted exactly when the standard decoder
    reads it and writes it back the same, and then gives the same bytes."""
    from gossipchat.daemon.core.unixfs.cid import _b32decode
    expected = _b32_by_the_book(body) if body == body.lower() else None
    try:
        got: bytes | None = _b32decode("b" + body, body)
    except CidError:
        got = None
    assert got == expected


def test_base32_cids_with_spare_bits_set_or_an_impossible_length_are_refused() -> None:
    text = cid_to_str(import_file(b"hello").root)
    last = "abcdefghijklmnopqrstuvwxyz234567".index(text[-1])
    spare = "abcdefghijklmnopqrstuvwxyz234567"[last | 1]  # 59 chars: 295 bits, 3 spare
    with pytest.raises(CidError, match="non-canonical"):
        cid_from_str(text[:-1] + spare)
    with pytest.raises(CidError, match="invalid base32"):
        cid_from_str(text + "a")  # 60 characters: no byte count encodes to that
    assert cid_from_str(text.upper()) == cid_from_str(text)


# --------------------------------------------------------------------------------------
# Fuzz: hostile bytes raise only CidError


@given(st.text(max_size=100))
def test_fuzz_cid_from_str(text: str) -> None:
    try:
        cid = cid_from_str(text)
    except CidError:
        return
    assert unixfs.parse_cid(cid).version in (0, 1)


@given(st.binary(max_size=80))
def test_fuzz_parse_cid_and_verify(raw: bytes) -> None:
    try:
        unixfs.parse_cid(raw)
        verify_block(raw, b"data")
    except CidError:
        return


@given(st.binary(min_size=36, max_size=36))
def test_the_short_path_for_v1_sha256_agrees_with_the_varint_reader(raw: bytes) -> None:
    """parse_cid reads a 36-byte CIDv1 of sha2-256 without its varint reader; a CID
    rebuilt from the parts it finds is the same bytes, and malformed ones still raise."""
    raw = b"\x01" + raw[1:2] + b"\x12\x20" + raw[4:] if raw[0] % 2 else raw
    try:
        info = unixfs.parse_cid(raw)
    except CidError:
        return
    rebuilt = (varint.encode(info.version) + varint.encode(info.codec)
               + varint.encode(info.hash_code) + varint.encode(len(info.digest)) + info.digest)
    assert info.version == 0 or rebuilt == raw
