"""AutoNAT v1 policy (daemon/core/autonat.py): dial-back candidates, rate limits, verdict."""

from __future__ import annotations

from gossipchat.daemon.core import autonat as policy
from gossipchat.daemon.core.autonat import RateLimiter, Reachability, dialback_candidates

PEER = "12D3KooWQDUCFhF2j1Vb4tsSx45jbBdxXV8eLuPDoaVzykfVvPn6"


def test_only_addresses_on_the_observed_ip_are_dialed_then_the_observed_one() -> None:
    claimed = ["/ip4/192.168.1.2/tcp/4001", f"/ip4/198.18.0.2/tcp/4001/p2p/{PEER}",
               "/ip4/198.18.0.9/tcp/4001", "/ip4/127.0.0.1/tcp/4001",
               f"/ip4/198.18.0.2/tcp/4002/p2p/{PEER}/p2p-circuit", "/ip4/198.18.0.2/udp/1",
               "/dns4/example.com/tcp/1", "garbage", "/ip4/198.18.0.2/tcp/0"]
    assert dialback_candidates(claimed, "198.18.0.2", 40000) == [
        "/ip4/198.18.0.2/tcp/4001", "/ip4/198.18.0.2/tcp/40000"]
    # The third-party address 198.18.0.9 never makes it, whatever is claimed.
    assert dialback_candidates(["/ip4/198.18.0.9/tcp/1"], "198.18.0.2") == []
    assert dialback_candidates(claimed, None, 40000) == []


def test_ipv4_mapped_observations_match_and_the_list_is_bounded() -> None:
    claimed = [f"/ip4/198.18.0.2/tcp/{4000 + i}" for i in range(10)]
    out = dialback_candidates(claimed, "::ffff:198.18.0.2", 5000)
    assert out == claimed[:policy.MAX_DIALBACK_ADDRS]
    assert dialback_candidates(["/ip6/2001:db8::1/tcp/1"], "2001:db8:0::1") == [
        "/ip6/2001:db8::1/tcp/1"]


def test_rate_limits_per_peer_and_in_total_over_a_sliding_window() -> None:
    limiter = RateLimiter(per_peer=2, total=3, window_s=10)
    assert [limiter.allow("a", 0), limiter.allow("a", 1), limiter.allow("a", 2)] == [
        True, True, False]
    assert limiter.allow("b", 3)
    assert not limiter.allow("c", 4)  # three in the window already
    assert limiter.allow("c", 10.5)  # a's first expired
    assert not limiter.allow("a", 10.6)  # a's second (t=1) is still in the window
    assert limiter.allow("a", 11.0)


def test_the_verdict_is_the_majority_of_live_ok_and_dial_error_answers() -> None:
    r = Reachability(ttl_s=100)
    assert r.verdict(0) == policy.UNKNOWN
    assert r.record("s1", policy.E_DIAL_REFUSED, 1) == policy.UNKNOWN  # says nothing
    assert r.record("s2", policy.E_DIAL_ERROR, 2) == policy.PRIVATE
    assert r.first_verdict_s == 2
    assert r.record("s3", policy.OK, 3) == policy.UNKNOWN  # a tie
    assert r.record("s4", policy.OK, 4) == policy.PUBLIC
    assert r.record("s2", policy.OK, 5) == policy.PUBLIC  # s2's latest answer counts
    assert r.counts(5) == (3, 0, 1)
    assert r.verdict(102) == policy.PUBLIC  # s1 (t=1) expired; three OKs live
    assert r.verdict(106) == policy.UNKNOWN  # all expired
    r.failed()
    assert r.view(5)["no_answer"] == 1
    r.reset(6)
    assert r.verdict(6) == policy.UNKNOWN
