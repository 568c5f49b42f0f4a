"""The store-health state machine, the pending buffer and the retry back-off."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.core import envelope, peerid
from gossipchat.daemon.core.store_health import Backoff, PendingEnvelopes, StoreHealth
from gossipchat.daemon.errors import StorageFull, StoreDamaged, StoreUnavailable

FULL = StorageFull("full", {"sqlite": "database or disk is full"})
DAMAGED = StoreDamaged("damaged", {"sqlite": "database disk image is malformed"})
IO = StoreUnavailable("io", {"sqlite": "disk I/O error"})


def test_failed_writes_degrade_until_a_write_succeeds() -> None:
    health = StoreHealth()
    assert health.failed(FULL, write=True, now_ms=100) is True
    assert health.failed(FULL, write=True, now_ms=200) is False  # not news
    assert health.view() == {
        "degraded": True, "reason": "database or disk is full", "damaged": False,
        "since_ms": 100, "write_errors": 2, "read_errors": 0, "recoveries": 0,
    }
    assert health.write_succeeded() is True
    assert health.write_succeeded() is False
    assert health.view()["degraded"] is False
    assert health.view()["reason"] is None
    assert health.view()["since_ms"] is None
    assert health.recoveries == 1


def test_a_read_error_is_counted_but_does_not_degrade() -> None:
    health = StoreHealth()
    assert health.failed(IO, write=False, now_ms=1) is False
    assert not health.degraded
    assert health.read_errors == 1
    assert health.reason == ""


def test_damage_stays_the_reason_until_a_restart() -> None:
    health = StoreHealth()
    assert health.failed(DAMAGED, write=False, now_ms=5) is True
    assert health.failed(DAMAGED, write=False, now_ms=6) is False
    assert health.failed(FULL, write=True, now_ms=7) is True  # writes began failing
    assert health.reason == "database disk image is malformed"
    assert health.write_succeeded() is True
    assert health.degraded
    assert health.damaged
    assert health.since_ms == 5


def _envelopes(count: int, text_bytes: int = 10) -> list[envelope.Envelope]:
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return [envelope.create(room="r", author=author, lamport=i + 1, ts_ms=1_000 + i,
                            kind="text", body={"text": "x" * text_bytes}, sign=key.sign)
            for i in range(count)]


def test_pending_keeps_order_once_each_and_counts_what_does_not_fit() -> None:
    envs = _envelopes(5)
    size = len(envs[0].wire)
    pending = PendingEnvelopes(max_bytes=3 * size)
    assert pending.hold([envs[0], envs[1], envs[0]]) == 2
    assert pending.hold([envs[2], envs[3], envs[4]]) == 1
    assert pending.envelopes() == envs[:3]
    assert pending.dropped == 2
    assert pending.bytes == 3 * size
    pending.release(envs[:2])
    assert pending.envelopes() == [envs[2]]
    assert pending.bytes == size
    pending.release(envs[2:])
    assert len(pending) == 0
    assert pending.bytes == 0
    assert pending.hold([envs[4]]) == 1


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 30.0)
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
