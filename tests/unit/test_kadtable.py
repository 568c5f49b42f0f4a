"""Routing table, provider store and the lookup state machine, with a fake network."""

from __future__ import annotations

import hashlib
import random

from gossipchat.daemon.core.kadlookup import Lookup
from gossipchat.daemon.core.kadtable import (
    K,
    ProvidersFull,
    ProviderStore,
    RoutingTable,
    bucket_index,
    kad_id,
    refresh_needed,
)
from gossipchat.daemon.core.kadwire import Peer


def pid(n: int) -> bytes:
    return b"\x12\x20" + hashlib.sha256(n.to_bytes(4, "big")).digest()


SELF = pid(0)


def test_the_table_never_holds_us_and_refreshes_known_peers() -> None:
    table = RoutingTable(SELF)
    assert not table.add(SELF, (), 0.0)
    assert table.add(pid(1), (b"a",), 0.0)
    assert table.add(pid(1), (), 5.0)
    assert table.contacts[pid(1)].addrs == (b"a",)
    assert table.contacts[pid(1)].seen == 5.0
    assert len(table) == 1


def test_a_full_bucket_keeps_old_peers_until_they_fail() -> None:
    table = RoutingTable(SELF, k=2)
    me = kad_id(SELF)
    far = [n for n in range(1, 400) if bucket_index(me, kad_id(pid(n))) == 0][:3]
    assert table.add(pid(far[0]), (), 0.0)
    assert table.add(pid(far[1]), (), 1.0)
    assert not table.add(pid(far[2]), (), 2.0)
    table.failed(pid(far[0]))
    assert not table.add(pid(far[2]), (), 3.0)
    table.failed(pid(far[0]))
    assert table.add(pid(far[2]), (), 4.0)
    assert pid(far[0]) not in table


def test_the_table_is_bounded_by_its_buckets() -> None:
    table = RoutingTable(SELF, k=3)
    for n in range(1, 2000):
        table.add(pid(n), (), float(n))
    assert len(table) <= 3 * table.buckets()
    assert len(table) < 60


def test_closest_orders_by_xor_distance() -> None:
    table = RoutingTable(SELF)
    for n in range(1, 50):
        table.add(pid(n), (), 0.0)
    target = pid(1000)
    got = table.closest(target, 5)
    expected = sorted(table.contacts, key=lambda p: kad_id(p) ^ kad_id(target))[:5]
    assert [c.peer_id for c in got] == expected
    assert pid(3) not in [c.peer_id for c in table.closest(pid(3), 5, exclude=pid(3))]


def test_provider_records_are_bounded_refreshed_and_expire() -> None:
    store = ProviderStore(max_keys=2, max_per_key=3, max_addrs=2, ttl_s=100.0)
    for n in range(1, 5):
        store.add(b"k1", pid(n), (b"a", b"b", b"c"), float(n))
    got = store.get(b"k1", 5.0, 10)
    assert [r.peer_id for r in got] == [pid(4), pid(3), pid(2)]  # pid(1) was the oldest
    assert all(len(r.addrs) == 2 for r in got)
    store.add(b"k1", pid(2), (), 6.0)  # a refresh moves it to the front
    assert store.get(b"k1", 6.0, 1)[0].peer_id == pid(2)
    store.add(b"k2", pid(1), (), 0.0)
    try:
        store.add(b"k3", pid(1), (), 50.0)
        raise AssertionError("a third key fit in a store of two")
    except ProvidersFull:
        pass
    assert store.get(b"k1", 104.5, 10) == [store.records[b"k1"][pid(2)]]
    assert store.expire(200.0) == 4
    assert store.count() == 0
    store.add(b"k3", pid(1), (), 200.0)  # expiry made room


class FakeDht:
    """n servers that each know a random handful of others, some holding providers."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.ids = [pid(i) for i in range(1, n + 1)]
        self.tables = {}
        for peer in self.ids:
            table = RoutingTable(peer)
            for other in rng.sample(self.ids, 8):
                table.add(other, (), 0.0)
            self.tables[peer] = table
        self.providers: dict[bytes, list[bytes]] = {}
        self.down: set[bytes] = set()

    def ask(self, peer: bytes, key: bytes) -> tuple[tuple[Peer, ...], tuple[Peer, ...]]:
        closer = tuple(Peer(c.peer_id) for c in self.tables[peer].closest(key, K))
        return closer, tuple(Peer(p) for p in self.providers.get(peer, []))


def run(lookup: Lookup, dht: FakeDht) -> None:
    while not lookup.done:
        batch = lookup.next_queries()
        assert batch, "a lookup that is not done must have something to ask"
        for peer in batch:
            if peer.id in dht.down:
                lookup.failed(peer.id)
            else:
                lookup.answered(peer.id, *dht.ask(peer.id, lookup.key))


def test_a_lookup_converges_on_the_nearest_servers() -> None:
    dht = FakeDht(200, seed=1)
    key = b"room key"
    lookup = Lookup(key, SELF)
    lookup.add_candidates([Peer(p) for p in dht.ids[:3]])
    run(lookup, dht)
    true_nearest = sorted(dht.ids, key=lambda p: kad_id(p) ^ kad_id(key))[:K]
    found = [p.id for p in lookup.closest()]
    assert len(set(found) & set(true_nearest)) >= K // 2
    assert lookup.queries <= lookup.max_queries


def test_a_lookup_collects_providers_but_never_itself_and_survives_failures() -> None:
    dht = FakeDht(60, seed=2)
    key = b"k"
    nearest = sorted(dht.ids, key=lambda p: kad_id(p) ^ kad_id(key))
    for holder in nearest[:K]:
        dht.providers[holder] = [SELF, pid(9001), pid(9002)]
    dht.down = set(nearest[:5])
    lookup = Lookup(key, SELF)
    lookup.add_candidates([Peer(p) for p in dht.ids[-3:]] + [Peer(SELF)])
    run(lookup, dht)
    assert set(lookup.providers) == {pid(9001), pid(9002)}
    assert SELF not in lookup.candidates
    assert not set(p.id for p in lookup.closest()) & dht.down


def test_an_empty_lookup_is_done_at_once() -> None:
    lookup = Lookup(b"k", SELF)
    assert lookup.done
    assert lookup.next_queries() == []
    assert lookup.closest() == []


def test_a_refresh_is_left_out_while_room_walks_keep_the_table_fresh() -> None:
    never = float("-inf")
    times = {"recent_s": 300.0, "max_s": 1800.0}
    # The first refresh always runs; so does one with no room walk lately.
    assert refresh_needed(5.0, refreshed_at=never, walked_at=never, **times)
    assert refresh_needed(5.0, refreshed_at=never, walked_at=2.0, **times)
    assert refresh_needed(1000.0, refreshed_at=900.0, walked_at=700.0, **times)
    # A room's walk answered 40 s ago: it refreshed the table.
    assert not refresh_needed(1000.0, refreshed_at=900.0, walked_at=960.0, **times)
    # But our own id is looked up at least every max_s, walks or not.
    assert refresh_needed(3000.0, refreshed_at=1000.0, walked_at=2990.0, **times)
