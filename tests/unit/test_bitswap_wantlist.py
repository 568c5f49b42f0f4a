"""The engine's wants across sessions and peers (core/bitswap/wantlist.py) and the
server's per-peer ledger (core/bitswap/ledger.py)."""

from __future__ import annotations

from gossipchat.daemon.core.bitswap import (
    BlockIn,
    CoWant,
    GotBlock,
    Have,
    Outcome,
    PeerGone,
    PeerLedger,
    Presence,
    WantEntry,
    WantList,
    hold_back,
)

CID, DIGEST = b"cid-1", b"digest-1"
CID2, DIGEST2 = b"cid-2", b"digest-2"


def test_a_peer_is_asked_once_and_a_second_session_hears_its_answer() -> None:
    wants: WantList[str] = WantList()
    out: Outcome[str] = Outcome()
    wants.want_have(1, "a", [(CID, DIGEST)], out)
    assert out.send == {"a": [WantEntry(CID, want_have=True, send_dont_have=True)]}
    out = Outcome()
    wants.want_have(2, "a", [(CID, DIGEST)], out)
    assert out.send == {}  # the answer to the first ask reaches both
    assert wants.presence("a", DIGEST, False, out)
    assert out.tell == [(1, Have(CID, "a", False)), (2, Have(CID, "a", False))]
    out = Outcome()
    wants.want_have(3, "a", [(CID, DIGEST)], out)
    assert out.tell == [(3, Have(CID, "a", False))]


def test_want_block_upgrades_a_want_have_and_the_block_cancels_elsewhere() -> None:
    wants: WantList[str] = WantList()
    out: Outcome[str] = Outcome()
    wants.want_have(1, "a", [(CID, DIGEST)], out)
    wants.want_have(1, "b", [(CID, DIGEST)], out)
    wants.presence("a", DIGEST, True, out)
    out = Outcome()
    wants.want_block(1, "a", [(CID, DIGEST)], out)
    assert out.send == {"a": [WantEntry(CID, send_dont_have=True)]}
    out = Outcome()
    assert wants.block("a", DIGEST, b"data", out) == BlockIn.WANTED
    assert out.tell == [(1, GotBlock(CID, b"data", "a"))]
    # b was only asked want-have: its cancel may wait for other news (lazy).
    assert out.send == {}
    assert out.lazy == {"b": [WantEntry(CID, cancel=True)]}
    assert wants.block("b", DIGEST, b"data", Outcome()) == BlockIn.DUPLICATE
    assert wants.block("b", b"never", b"x", Outcome()) == BlockIn.UNWANTED


def test_a_peer_asked_for_the_block_itself_is_cancelled_at_once() -> None:
    """It may be sending the block already: its cancel is not lazy."""
    wants: WantList[str] = WantList()
    out: Outcome[str] = Outcome()
    for peer in ("a", "b", "c"):
        wants.want_have(1, peer, [(CID, DIGEST)], out)
        wants.presence(peer, DIGEST, peer != "c", out)
    wants.want_block(1, "a", [(CID, DIGEST)], out)
    wants.want_block(1, "b", [(CID, DIGEST)], out)  # a stalled ask, asked again
    out = Outcome()
    assert wants.block("a", DIGEST, b"data", out) == BlockIn.WANTED
    assert out.send == {"b": [WantEntry(CID, cancel=True)]}
    assert out.lazy == {"c": [WantEntry(CID, cancel=True)]}  # said DONT_HAVE, kept it


def test_presences_we_never_asked_for_count_for_nothing() -> None:
    wants: WantList[str] = WantList()
    out: Outcome[str] = Outcome()
    wants.want_have(1, "a", [(CID, DIGEST)], out)
    assert not wants.presence("b", DIGEST, True, out)
    assert not wants.presence("a", DIGEST2, True, out)


def test_closing_the_last_session_cancels_at_every_holder() -> None:
    wants: WantList[str] = WantList()
    out: Outcome[str] = Outcome()
    wants.want_have(1, "a", [(CID, DIGEST)], out)
    wants.want_block(2, "b", [(CID, DIGEST)], out)
    out = Outcome()
    wants.close_session(1, out)
    assert out.send == {}
    wants.close_session(2, out)
    assert out.send == {"a": [WantEntry(CID, cancel=True)], "b": [WantEntry(CID, cancel=True)]}
    assert len(wants) == 0


def test_a_gone_peer_is_told_to_the_sessions_that_asked_it() -> None:
    wants: WantList[str] = WantList()
    out: Outcome[str] = Outcome()
    wants.want_have(1, "a", [(CID, DIGEST)], out)
    wants.want_have(2, "b", [(CID2, DIGEST2)], out)
    out = Outcome()
    wants.peer_gone("a", "disconnected", out)
    assert out.tell == [(1, PeerGone("a", "disconnected"))]


def test_the_ledger_answers_want_have_want_block_and_dont_have() -> None:
    held = {CID: 10}
    ledger = PeerLedger(max_wants=10)
    ledger.apply([WantEntry(CID, want_have=True), WantEntry(CID2, send_dont_have=True)],
                 full=False)
    composed = ledger.compose(held.get, max_block=100, target=1000, used=0, v12=True)
    assert composed.presences == [Presence(CID, True), Presence(CID2, False)]
    assert composed.blocks == []
    assert len(ledger) == 1  # the DONT_HAVE keeps the want
    assert not ledger.has_work
    held[CID2] = 20  # the block reaches us: the peer gets it now
    ledger.blocks_arrived([CID2], alias=lambda cid: None)
    composed = ledger.compose(held.get, max_block=100, target=1000, used=0, v12=True)
    assert [cid for cid, _ in composed.blocks] == [CID2]
    assert len(ledger) == 0


def test_the_ledger_is_bounded_and_cancels_and_full_lists_replace() -> None:
    ledger = PeerLedger(max_wants=1)
    assert ledger.apply([WantEntry(CID), WantEntry(CID2)], full=False) == 1
    assert CID in ledger
    ledger.apply([WantEntry(CID, cancel=True)], full=False)
    assert len(ledger) == 0
    ledger.apply([WantEntry(CID2)], full=False)
    ledger.apply([WantEntry(CID)], full=True)
    assert CID in ledger
    assert CID2 not in ledger


def test_one_block_per_message_at_target_zero() -> None:
    held = {CID: 10, CID2: 10}
    ledger = PeerLedger(max_wants=10)
    ledger.apply([WantEntry(CID), WantEntry(CID2)], full=False)
    first = ledger.compose(held.get, max_block=100, target=0, used=0, v12=True)
    second = ledger.compose(held.get, max_block=100, target=0, used=0, v12=True)
    assert [c for c, _ in first.blocks] == [CID]
    assert [c for c, _ in second.blocks] == [CID2]


def test_peers_that_want_a_block_too_are_told_to_the_sessions_that_want_it() -> None:
    wants: WantList[str] = WantList()
    out: Outcome[str] = Outcome()
    wants.peer_wants("early", DIGEST, True, out)  # asked before we wanted it
    assert out.tell == []
    wants.want_have(1, "a", [(CID, DIGEST)], out)
    assert out.tell == [(1, CoWant(CID, "early", True))]
    out = Outcome()
    wants.peer_wants("late", DIGEST, True, out)
    wants.peer_wants("late", DIGEST, True, out)  # told once
    wants.peer_wants("early", DIGEST, False, out)
    assert out.tell == [(1, CoWant(CID, "late", True)), (1, CoWant(CID, "early", False))]


def test_the_ledger_holds_back_a_block_until_released_and_a_cancel_drops_it() -> None:
    held = {CID: 10, CID2: 10}
    ledger = PeerLedger(max_wants=10)
    ledger.apply([WantEntry(CID), WantEntry(CID2)], full=False)
    composed = ledger.compose(held.get, max_block=100, target=1000, used=0, v12=True,
                              hold=lambda cid: cid == CID)
    assert [c for c, _ in composed.blocks] == [CID2]
    assert ledger.has_held
    assert not ledger.has_work
    ledger.release_held()
    composed = ledger.compose(held.get, max_block=100, target=1000, used=0, v12=True)
    assert [c for c, _ in composed.blocks] == [CID]  # held, not forgotten
    ledger.apply([WantEntry(CID2)], full=False)
    ledger.compose(held.get, max_block=100, target=1000, used=0, v12=True,
                   hold=lambda cid: True)
    ledger.apply([WantEntry(CID2, cancel=True)], full=False)  # got it elsewhere
    ledger.release_held()
    assert ledger.compose(held.get, max_block=100, target=1000, used=0, v12=True).blocks == []


def test_a_block_is_held_back_only_from_a_source_for_a_connected_recent_taker() -> None:
    def held(last: tuple[float, str] | None, *, now: float = 10.0,
             connected: bool = True, fetched: bool = False) -> bool:
        return hold_back(last, "b", now, 2.0, connected=lambda peer: connected,
                         fetched_lately=lambda: fetched)

    assert held((9.0, "a"))  # a took it a second ago: b waits for a to pass it on
    assert not held(None)  # never sent
    assert not held((9.0, "b"))  # b itself asks again: a repeat goes out
    assert not held((8.0, "a"))  # the hold is over (2 s)
    assert held((8.01, "a"))
    assert not held((9.0, "a"), connected=False)  # a left: it passes nothing on
    assert not held((9.0, "a"), fetched=True)  # we fetched it: passing on, never held
