"""The token bucket and the per-peer gossip verdicts (core/ratelimit.py): plain calls
with a made-up clock, no trio and no network."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core.ratelimit import (
    BAN_S,
    DISCONNECT_AFTER_S,
    GossipLimiter,
    TokenBucket,
    Verdict,
)


def test_bucket_gives_its_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert not bucket.take(0.1)
    # A long pause refills to the burst, never beyond it.
    assert sum(bucket.take(100.0) for _ in range(10)) == 5


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket.full(rate=0, burst=5, now=0.0)
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket.full(rate=1, burst=0, now=0.0)


def test_a_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket.full(rate=10, burst=1, now=5.0)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)


def _send(limiter: GossipLimiter, peer: str, per_s: float, start: float, seconds: float
          ) -> list[Verdict]:
    n = int(per_s * seconds)
    return [limiter.check(peer, start + i / per_s) for i in range(n)]


def test_honest_relay_of_a_1000_message_burst_loses_nothing() -> None:
    # The bench's burst: one author sends 1,000 messages as fast as the daemon takes
    # them (about 300 a second), and every mesh peer relays each of them to us.
    limiter = GossipLimiter(rate=500, burst=2000)
    verdicts = _send(limiter, "relay", per_s=1000, start=0.0, seconds=1.0)
    assert set(verdicts) == {Verdict.ACCEPT}
    verdicts = _send(limiter, "relay", per_s=400, start=10.0, seconds=30.0)
    assert set(verdicts) == {Verdict.ACCEPT}
    # The first second cost 1,000 tokens and gave back 500.
    assert limiter.lowest_tokens == pytest.approx(1500, abs=2)


def test_a_flood_is_dropped_then_hung_up_on_and_banned() -> None:
    limiter = GossipLimiter(rate=100, burst=200)
    verdicts = _send(limiter, "flood", per_s=1000, start=0.0, seconds=DISCONNECT_AFTER_S + 1)
    accepted = verdicts.count(Verdict.ACCEPT)
    first_drop = verdicts.index(Verdict.DROP)
    assert 200 < first_drop < 230  # the burst, and what the rate adds meanwhile
    assert verdicts.count(Verdict.DISCONNECT) == 1
    cut = verdicts.index(Verdict.DISCONNECT)
    # Hung up on once it has been over the rate for DISCONNECT_AFTER_S.
    assert cut / 1000 == pytest.approx(first_drop / 1000 + DISCONNECT_AFTER_S, abs=0.01)
    assert accepted <= 200 + 100 * (DISCONNECT_AFTER_S + 0.3)
    # Banned: everything is dropped, also well below the rate, until BAN_S is up.
    after = (len(verdicts) + 1) / 1000
    assert limiter.is_banned("flood", after)
    assert limiter.banned(after) == ["flood"]
    assert limiter.check("flood", after + 10) is Verdict.DROP
    assert not limiter.is_banned("flood", cut / 1000 + BAN_S)
    assert limiter.check("flood", cut / 1000 + BAN_S) is Verdict.ACCEPT


def test_an_overshoot_with_pauses_is_never_hung_up_on() -> None:
    limiter = GossipLimiter(rate=100, burst=100)
    now = 0.0
    for _ in range(20):
        # 2 s of twice the rate, then 2 s of silence: drops, never a disconnect.
        verdicts = _send(limiter, "bursty", per_s=200, start=now, seconds=2.0)
        assert Verdict.DISCONNECT not in verdicts
        now += 4.0


def test_peers_have_their_own_buckets() -> None:
    limiter = GossipLimiter(rate=10, burst=10)
    assert _send(limiter, "a", per_s=1000, start=0.0, seconds=0.02).count(Verdict.ACCEPT) == 10
    assert limiter.check("b", 0.02) is Verdict.ACCEPT


def test_tracked_peers_are_bounded() -> None:
    limiter = GossipLimiter(rate=10, burst=1, max_peers=3)
    for i in range(10):
        limiter.check(f"p{i}", 0.0)
    assert len(limiter._peers) == 3


def test_a_ban_from_outside_the_bucket_uses_the_same_list() -> None:
    # Peers cut for their score (core/scoring.py) are banned here too: one list.
    limiter = GossipLimiter(rate=10, burst=5)
    limiter.ban("junk", now=100.0)
    assert limiter.is_banned("junk", 100.0 + BAN_S - 1)
    assert limiter.check("junk", 101.0) is Verdict.DROP
    assert not limiter.is_banned("junk", 100.0 + BAN_S)
    limiter.ban("junk", now=200.0, ban_s=10.0)
    limiter.ban("junk", now=201.0, ban_s=1.0)  # a shorter ban never cuts a longer one
    assert limiter.banned(205.0) == ["junk"]
    assert limiter.banned(210.0) == []
