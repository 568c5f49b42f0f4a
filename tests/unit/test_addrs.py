"""The advertised address list: unspecified listeners expanded, loopback last."""

from __future__ import annotations

from gossipchat.daemon.core.addrs import advertised_addrs, expand_unspecified

IFACES = ["127.0.0.1", "198.18.0.7", "10.1.2.3", "::1", "fe80::1c2d:3eff:fe4f:5a6b",
          "2001:db8::7"]


def test_ip4_wildcard_becomes_every_ip4_interface_loopback_last() -> None:
    assert expand_unspecified(["/ip4/0.0.0.0/tcp/4001"], IFACES) == [
        "/ip4/198.18.0.7/tcp/4001", "/ip4/10.1.2.3/tcp/4001", "/ip4/127.0.0.1/tcp/4001",
    ]


def test_ip6_wildcard_skips_link_local() -> None:
    assert expand_unspecified(["/ip6/::/tcp/4001"], IFACES) == [
        "/ip6/2001:db8::7/tcp/4001", "/ip6/::1/tcp/4001",
    ]


def test_routable_then_lan_then_loopback_keeping_listen_order_within_each() -> None:
    got = expand_unspecified(["/ip4/0.0.0.0/tcp/1", "/ip6/::/tcp/2"], IFACES)
    assert got == [
        "/ip4/198.18.0.7/tcp/1", "/ip6/2001:db8::7/tcp/2", "/ip4/10.1.2.3/tcp/1",
        "/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/2",
    ]


def test_every_lan_range_ranks_below_routable_addresses() -> None:
    lan = ["10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "fd12::1"]
    got = expand_unspecified(["/ip4/0.0.0.0/tcp/1", "/ip6/::/tcp/1"], [*lan, "203.0.113.9"])
    assert got[0] == "/ip4/203.0.113.9/tcp/1"
    assert len(got) == 6


def test_specific_listeners_pass_unchanged_and_suffixes_are_kept() -> None:
    listen = ["/ip4/127.0.0.1/tcp/5", "/ip4/198.18.0.7/tcp/6", "/ip4/0.0.0.0/tcp/7/ws",
              "/dns4/example.org/tcp/8"]
    assert expand_unspecified(listen, ["198.18.0.9"]) == [
        "/ip4/198.18.0.7/tcp/6", "/ip4/198.18.0.9/tcp/7/ws", "/dns4/example.org/tcp/8",
        "/ip4/127.0.0.1/tcp/5",
    ]


def test_no_interface_of_the_family_leaves_nothing_to_dial() -> None:
    assert expand_unspecified(["/ip6/::/tcp/4001"], ["127.0.0.1"]) == []
    assert expand_unspecified(["/ip4/0.0.0.0/tcp/4001"], []) == []


def test_duplicates_are_dropped() -> None:
    listen = ["/ip4/0.0.0.0/tcp/9", "/ip4/198.18.0.7/tcp/9"]
    assert expand_unspecified(listen, ["198.18.0.7", "198.18.0.7"]) == [
        "/ip4/198.18.0.7/tcp/9"]


def test_garbage_interface_ips_are_ignored() -> None:
    assert expand_unspecified(["/ip4/0.0.0.0/tcp/9"], ["eth0", "", "198.18.0.2"]) == [
        "/ip4/198.18.0.2/tcp/9"]


def test_observed_addresses_go_after_routable_before_lan_addresses() -> None:
    got = advertised_addrs(["/ip4/0.0.0.0/tcp/4001"],
                           ["127.0.0.1", "192.168.1.20", "198.18.0.7"],
                           ["/ip4/198.19.5.5/tcp/4001"])
    assert got == ["/ip4/198.18.0.7/tcp/4001", "/ip4/198.19.5.5/tcp/4001",
                   "/ip4/192.168.1.20/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]


def test_observed_address_already_known_is_not_repeated() -> None:
    got = advertised_addrs(["/ip4/0.0.0.0/tcp/4001"], ["198.18.0.7"],
                           ["/ip4/198.18.0.7/tcp/4001"])
    assert got == ["/ip4/198.18.0.7/tcp/4001"]


def test_unusable_observations_are_refused() -> None:
    observed = ["/ip4/0.0.0.0/tcp/1", "/ip4/127.0.0.1/tcp/1", "/ip6/fe80::1/tcp/1",
                "/ip4/224.0.0.251/tcp/1", "/dns4/x/tcp/1", "/ip4/not-an-ip/tcp/1"]
    assert advertised_addrs(["/ip4/198.18.0.7/tcp/1"], [], observed) == [
        "/ip4/198.18.0.7/tcp/1"]
