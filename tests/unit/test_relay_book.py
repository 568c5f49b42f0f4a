"""Circuit relay v2 book-keeping (daemon/core/relay.py) and relayed addresses in
presence records (daemon/core/presence.py)."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core import relay
from gossipchat.daemon.core.presence import PresenceError, announceable, check_addr
from gossipchat.daemon.core.relay import RelayBook, RelayLimits

RELAY = "12D3KooWPZoRiycrbG9ZioheXp4oWMZeWfgdv9NNK7pp46oMPpaE"
ME = "12D3KooWRBvGQjxRDsBTJecWBA65jn66ve9gMk5fJdWE58NBnTVU"


def test_reservations_are_bounded_renewals_fit_and_they_expire() -> None:
    book = RelayBook(RelayLimits(max_reservations=2, reservation_ttl_s=10))
    assert book.reserve("a", 0) == relay.OK
    assert book.reserve("b", 1) == relay.OK
    assert book.reserve("c", 2) == relay.RESOURCE_LIMIT_EXCEEDED
    assert book.reserve("a", 3) == relay.OK  # a renewal always fits
    assert book.refused["reservations"] == 1
    assert book.reservations(11.5) == 1  # b (t=1) expired, a renewed at 3
    assert book.reserve("c", 11.5) == relay.OK
    book.drop("a")
    assert not book.has_reservation("a", 12)


def test_circuits_need_the_destinations_reservation_and_are_bounded() -> None:
    book = RelayBook(RelayLimits(max_circuits=3, max_circuits_per_peer=2))
    assert book.open_circuit("x", "a", 0) == relay.NO_RESERVATION
    book.reserve("a", 0)
    book.reserve("b", 0)
    assert book.open_circuit("x", "a", 1) == relay.OK
    assert book.open_circuit("y", "a", 1) == relay.OK
    assert book.open_circuit("z", "a", 1) == relay.RESOURCE_LIMIT_EXCEEDED  # a has 2
    assert book.open_circuit("x", "b", 1) == relay.OK
    assert book.open_circuit("w", "b", 1) == relay.RESOURCE_LIMIT_EXCEEDED  # 3 in all
    book.close_circuit("x", "a", cut=True, relayed=100)
    assert book.open_circuit("w", "b", 2) == relay.OK
    assert (book.circuits, book.circuits_opened, book.circuits_cut, book.bytes_relayed) == (
        3, 4, 1, 100)
    assert book.refused == {"no_reservation": 1, "circuits": 2}


def test_presence_records_carry_relayed_addresses() -> None:
    circuit = f"/ip4/198.18.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit"
    assert check_addr(circuit) == circuit
    assert announceable([f"/ip4/192.168.1.2/tcp/1/p2p/{ME}", f"{circuit}/p2p/{ME}"]) == [
        "/ip4/192.168.1.2/tcp/1", circuit]
    for bad in (f"/ip4/198.18.0.1/tcp/4001/p2p/{RELAY}",
                "/ip4/198.18.0.1/tcp/4001/p2p/x/p2p-circuit",
                f"/ip4/0.0.0.0/tcp/4001/p2p/{RELAY}/p2p-circuit",
                f"/ip4/198.18.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{ME}"):
        with pytest.raises(PresenceError):
            check_addr(bad)


def test_crossed_circuits_keep_the_lower_peer_ids_on_both_sides() -> None:
    low, high = "12D3KooWA", "12D3KooWB"
    # Each side lists its circuits to the other as "dialed by us"; both close the same one.
    assert relay.crossed_circuits(low, high, [True, False]) == [1]  # theirs
    assert relay.crossed_circuits(high, low, [False, True]) == [1]  # ours
    assert relay.crossed_circuits(high, low, [True, False]) == [0]
    # Until the lower peer id's circuit is up, nothing is closed: the higher one's may
    # be the only connection there is.
    assert relay.crossed_circuits(low, high, [False]) == []
    assert relay.crossed_circuits(high, low, [True]) == []
    assert relay.crossed_circuits(low, high, [True]) == []
    assert relay.crossed_circuits(low, high, []) == []
    # Two of the higher one's and one of the lower one's: both of the higher go.
    assert relay.crossed_circuits(low, high, [False, True, False]) == [0, 2]
