"""Which inbound connections to keep (core/inbound.py): plain calls, no network."""

from __future__ import annotations

from gossipchat.daemon.core.inbound import (
    REFUSED_PER_IP,
    REFUSED_TOTAL,
    InboundLimits,
    refusal,
    source_of,
)

LIMITS = InboundLimits(max_total=5, max_per_ip=2)


def test_under_both_bounds_a_connection_stays() -> None:
    assert refusal("10.0.0.1", [], LIMITS) is None
    assert refusal("10.0.0.1", ["10.0.0.1", "10.0.0.2", None], LIMITS) is None


def test_one_ip_past_its_share_is_refused() -> None:
    assert refusal("10.0.0.1", ["10.0.0.1", "10.0.0.1"], LIMITS) == REFUSED_PER_IP
    assert refusal("10.0.0.2", ["10.0.0.1", "10.0.0.1"], LIMITS) is None


def test_the_total_bound_counts_every_source_and_relayed_ones() -> None:
    assert refusal("10.0.0.9", ["10.0.0.1", "10.0.0.2", None, None, "::1"],
                   LIMITS) == REFUSED_TOTAL
    assert refusal(None, ["10.0.0.1"] * 2 + [None] * 2, LIMITS) is None


def test_ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() -> None:
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff::9")
    assert source_of("2001:db8:1:2::1") != source_of("2001:db8:1:3::1")
    assert source_of("::ffff:10.0.0.1") == "10.0.0.1"
    assert refusal("2001:db8::5", ["2001:db8::1", "2001:db8::2"], LIMITS) == REFUSED_PER_IP
    assert source_of(None) is None
    assert source_of("not-an-ip") == "not-an-ip"
