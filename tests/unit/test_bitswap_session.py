"""The session's peer selection (core/bitswap/session.py), under a plain clock."""

from __future__ import annotations

from gossipchat.daemon.core.bitswap import Session, SessionLimits

CIDS = [bytes([1, i]) for i in range(8)]


def test_every_peer_is_asked_want_have_and_nobody_for_a_block_yet() -> None:
    session: Session[str] = Session(["a", "b"], fallback=["poster"])
    plan = session.plan(CIDS[:2], now=0.0)
    assert plan.want_have == {"a": CIDS[:2], "b": CIDS[:2], "poster": CIDS[:2]}
    assert plan.want_block == {}
    assert plan.stuck is None
    # Asked once: the next plan sends nothing while the answers are on their way.
    assert session.plan(CIDS[:2], now=0.1).empty


def test_a_block_goes_to_a_member_that_has_it_before_the_poster() -> None:
    session: Session[str] = Session(["a", "b"], fallback=["poster"])
    session.plan(CIDS[:1], now=0.0)
    session.have("poster", CIDS[0], True)
    session.have("b", CIDS[0], True)
    session.have("a", CIDS[0], False)
    plan = session.plan(CIDS[:1], now=0.1)
    assert plan.want_block == {"b": [CIDS[0]]}


def test_the_poster_serves_what_no_member_has_within_its_window() -> None:
    limits = SessionLimits(fallback_window=2)
    session: Session[str] = Session(["a"], fallback=["poster"], limits=limits, seed=1)
    session.plan(CIDS, now=0.0)
    for cid in CIDS:
        session.have("poster", cid, True)
        session.have("a", cid, False)
    plan = session.plan(CIDS, now=0.1)
    assert list(plan.want_block) == ["poster"]
    assert len(plan.want_block["poster"]) == 2  # its window
    first = plan.want_block["poster"][0]
    session.block(first, "poster")
    plan = session.plan([c for c in CIDS if c != first], now=0.2)
    assert len(plan.want_block["poster"]) == 1  # a slot came free


def test_sessions_take_the_posters_blocks_in_orders_of_their_own() -> None:
    orders = set()
    for seed in range(4):
        session: Session[str] = Session([], fallback=["poster"],
                                        limits=SessionLimits(fallback_window=1), seed=seed)
        # The poster alone: asked at once (see the next test).
        orders.add(session.plan(CIDS, now=0.0).want_block["poster"][0])
    assert len(orders) > 1


def test_an_author_alone_is_asked_for_blocks_without_a_want_have_round() -> None:
    """In a room of two the author is the only peer to ask: it is presumed to hold the
    whole image and asked want-block at once, within its fallback window; a DONT_HAVE
    ends that for its block."""
    session: Session[str] = Session([], fallback=["poster"], seed=1,
                                    limits=SessionLimits(window=8, fallback_window=4))
    plan = session.plan(CIDS, now=0.0)
    assert plan.want_have == {}
    asked = plan.want_block["poster"]
    assert len(asked) == 4  # fallback_window
    session.have("poster", asked[0], False)  # it lacks that one after all
    rest = session.plan(CIDS, now=0.1)
    assert asked[0] not in rest.want_block.get("poster", [])
    assert len(rest.want_block["poster"]) == 1  # the slot the DONT_HAVE freed
    for cid in CIDS:
        if cid != asked[0]:
            session.block(cid, "poster")
    assert session.plan([asked[0]], now=0.2).stuck == "poster: does not have it"
    # A member in the session: everyone is asked want-have first, the author too.
    with_member: Session[str] = Session(["a"], fallback=["poster"])
    plan = with_member.plan(CIDS[:2], now=0.0)
    assert plan.want_have == {"a": CIDS[:2], "poster": CIDS[:2]}
    assert plan.want_block == {}


def test_a_member_that_gains_a_block_is_asked_for_it_instead_of_the_poster() -> None:
    session: Session[str] = Session(["a"], fallback=["poster"],
                                    limits=SessionLimits(fallback_window=1), seed=3)
    session.plan(CIDS[:2], now=0.0)
    for cid in CIDS[:2]:
        session.have("poster", cid, True)
        session.have("a", cid, False)  # a keeps our want-have
    asked = session.plan(CIDS[:2], now=0.1).want_block["poster"]
    other = next(c for c in CIDS[:2] if c not in asked)
    session.have("a", other, True)  # a got it meanwhile, and says so
    assert session.plan(CIDS[:2], now=0.2).want_block == {"a": [other]}


def test_direct_holders_rank_above_relayed_ones_and_relays_get_a_small_window() -> None:
    limits = SessionLimits(relayed_window=2)
    session: Session[str] = Session(["relayed", "direct"], limits=limits)
    session.set_direct("relayed", False)
    session.plan(CIDS, now=0.0)
    for cid in CIDS:
        session.have("relayed", cid, True)
    plan = session.plan(CIDS, now=0.1)
    assert list(plan.want_block) == ["relayed"]
    assert len(plan.want_block["relayed"]) == 2
    session.have("direct", CIDS[7], True)
    plan = session.plan(CIDS, now=0.2)
    assert plan.want_block.get("direct") == [CIDS[7]]


def test_a_direct_holder_takes_over_blocks_asked_of_a_relayed_peer() -> None:
    session: Session[str] = Session(["relayed", "direct"])
    session.set_direct("relayed", False)
    session.plan(CIDS[:2], now=0.0)
    for cid in CIDS[:2]:
        session.have("relayed", cid, True)
        session.have("direct", cid, False)
    asked = session.plan(CIDS[:2], now=0.1).want_block["relayed"]
    assert sorted(asked) == CIDS[:2]
    for cid in CIDS[:2]:
        session.have("direct", cid, True)  # the direct member got the image
    plan = session.plan(CIDS[:2], now=0.2)
    # One at a time here: with two peers holding two blocks, each peer's share is one.
    assert list(plan.cancel) == ["relayed"]
    moved = plan.cancel["relayed"]
    assert len(moved) == 1
    assert plan.want_block == {"direct": moved}
    session.block(moved[0], "direct")
    rest = [cid for cid in CIDS[:2] if cid != moved[0]]
    plan = session.plan(rest, now=0.3)
    assert plan.cancel == {"relayed": rest}
    assert plan.want_block == {"direct": rest}
    assert session.served() == {"direct": 1}


def test_the_only_live_peer_is_asked_for_blocks_without_a_want_have_round() -> None:
    """A fetch with one peer to ask learns nothing from want-have that want-block (with
    send-dont-have) does not tell it too, a round trip later: the peer is asked for
    blocks at once, within its window. A DONT_HAVE ends that for its block; once a
    second peer is live, every peer is asked want-have first again."""
    session: Session[str] = Session(["a", "b"], limits=SessionLimits(window=4), seed=1)
    session.peer_gone("b", "its bitswap failed", now=0.0)
    plan = session.plan(CIDS, now=0.0)
    assert plan.want_have == {}
    asked = plan.want_block["a"]
    assert len(asked) == 4  # its window
    session.have("a", asked[0], False)
    rest = session.plan(CIDS, now=0.1)
    assert asked[0] not in rest.want_block.get("a", [])
    assert len(rest.want_block["a"]) == 1  # the slot the DONT_HAVE freed

    two: Session[str] = Session(["a", "b"], limits=SessionLimits(rejoin_settle_s=0.0))
    two.peer_gone("b", "disconnected", now=0.0, returns=True)
    assert two.plan(CIDS[:1], now=0.0).want_block == {"a": [CIDS[0]]}
    assert two.rejoin("b", now=1.0)
    plan = two.plan(CIDS[:2], now=1.0)
    assert plan.want_have == {"a": [CIDS[1]], "b": CIDS[:2]}
    assert plan.want_block == {}


def test_peers_that_owed_the_fetch_nothing_are_named_idle() -> None:
    """`Plan.idle`: the peers asked now that had no block in flight and no want-have
    open before the plan. The fetch waits on their wants alone, so the adapter sends
    them without lingering for more news (the leaves, once the root has arrived)."""
    alone: Session[str] = Session(["a"], limits=SessionLimits(window=2), seed=1)
    plan = alone.plan(CIDS[:1], now=0.0)
    assert plan.want_block == {"a": [CIDS[0]]}
    assert plan.idle == {"a"}
    alone.block(CIDS[0], "a")
    plan = alone.plan(CIDS[1:], now=0.1)  # the root's children
    assert len(plan.want_block["a"]) == 2
    assert plan.idle == {"a"}
    alone.block(plan.want_block["a"][0], "a")
    rest = [c for c in CIDS[1:] if c != plan.want_block["a"][0]]
    more = alone.plan(rest, now=0.2)
    assert len(more.want_block["a"]) == 1  # the freed slot, while a block is in flight
    assert more.idle == set()

    room: Session[str] = Session(["a", "b"], fallback=["poster"], seed=1)
    first = room.plan(CIDS[:2], now=0.0)
    assert first.idle == {"a", "b", "poster"}
    room.have("b", CIDS[0], True)  # b answered one want-have; a and the poster none
    second = room.plan(CIDS[:3], now=0.1)
    assert second.want_block == {"b": [CIDS[0]]}
    assert second.idle == set()  # each still owed an answer to a want-have


def test_stuck_once_every_peer_said_dont_have_unless_patient() -> None:
    impatient: Session[str] = Session(["a"])
    impatient.plan(CIDS[:1], now=0.0)
    impatient.have("a", CIDS[0], False)
    assert impatient.plan(CIDS[:1], now=0.1).stuck == "a: does not have it"

    patient: Session[str] = Session(["a"], limits=SessionLimits(patience=2.0))
    patient.plan(CIDS[:1], now=0.0)
    patient.have("a", CIDS[0], False)
    assert patient.plan(CIDS[:1], now=0.1).stuck is None
    assert patient.plan(CIDS[:1], now=1.0).stuck is None
    patient.have("a", CIDS[0], True)  # it got the block: no longer waiting
    assert patient.plan(CIDS[:1], now=3.0).want_block == {"a": [CIDS[0]]}


def test_no_peers_is_stuck_at_once() -> None:
    session: Session[str] = Session([])
    assert session.plan(CIDS[:1], now=0.0).stuck == "no peers"


def test_a_gone_peer_may_come_back_within_rejoin_s() -> None:
    limits = SessionLimits(rejoin_s=10.0, rejoin_settle_s=0.5)
    session: Session[str] = Session(["a"], limits=limits)
    assert session.plan(CIDS[:1], now=0.0).want_block == {"a": [CIDS[0]]}  # alone
    session.peer_gone("a", "disconnected", now=1.0, returns=True)
    assert session.plan(CIDS[:1], now=2.0).stuck is None  # it may come back
    assert not session.rejoin("a", now=1.2)  # the connection that just failed
    assert session.rejoin("a", now=3.0)
    plan = session.plan(CIDS[:1], now=3.0)
    # Its wantlist died with the connection: asked again, for the block (it is alone).
    assert plan.want_have == {}
    assert plan.want_block == {"a": [CIDS[0]]}
    session.peer_gone("a", "disconnected", now=4.0, returns=True)
    assert session.plan(CIDS[:1], now=20.0).stuck == "a: disconnected"


def test_a_stalled_block_is_asked_of_one_more_peer() -> None:
    session: Session[str] = Session(["a", "b"], limits=SessionLimits(stall=5.0))
    session.plan(CIDS[:1], now=0.0)
    session.have("a", CIDS[0], True)
    session.have("b", CIDS[0], True)
    first = session.plan(CIDS[:1], now=0.1).want_block
    assert len(first) == 1
    assert session.plan(CIDS[:1], now=1.0).empty
    again = session.plan(CIDS[:1], now=5.2).want_block
    assert len(again) == 1
    assert set(again) != set(first)


def test_legacy_peers_are_asked_for_blocks_without_want_have() -> None:
    session: Session[str] = Session(["old"])
    session.set_legacy("old")
    plan = session.plan(CIDS[:1], now=0.0)
    assert plan.want_have == {}
    assert plan.want_block == {"old": [CIDS[0]]}


def test_members_fetching_a_block_too_split_what_only_the_poster_has() -> None:
    """Each of two members takes from the poster the blocks rendezvous hashing gives it,
    and waits `defer` seconds for the other's HAVE before taking the rest itself."""
    taken: dict[str, set[bytes]] = {}
    for me, other in (("m1", "m2"), ("m2", "m1")):
        session: Session[str] = Session([other], fallback=["poster"], me=me,
                                        limits=SessionLimits(fallback_window=8, defer=1.0))
        session.plan(CIDS, now=0.0)
        for cid in CIDS:
            session.have("poster", cid, True)
            session.have(other, cid, False)
            session.wanted_by(other, cid, True)  # the other member fetches it too
        taken[me] = set(session.plan(CIDS, now=0.1).want_block.get("poster", []))
        late = session.plan(CIDS, now=1.2).want_block.get("poster", [])
        assert set(late) == set(CIDS) - taken[me]  # nobody said HAVE in time
    assert taken["m1"].isdisjoint(taken["m2"])
    assert taken["m1"] | taken["m2"] == set(CIDS)


def test_a_still_connected_peer_whose_bitswap_failed_will_not_come_back() -> None:
    session: Session[str] = Session(["a"])
    session.plan(CIDS[:1], now=0.0)
    session.peer_gone("a", "cannot open a bitswap stream", now=0.0)
    assert not session.rejoin("a", now=5.0)  # connected, but it never went away
    assert session.plan(CIDS[:1], now=0.1).stuck == "a: cannot open a bitswap stream"


def test_a_relays_byte_limit_caps_the_blocks_in_flight_over_it() -> None:
    session: Session[str] = Session(["relayed"], limits=SessionLimits(relayed_window=2))
    session.set_direct("relayed", False, window=1)  # a circuit of little more than a block
    assert len(session.plan(CIDS, now=0.0).want_block["relayed"]) == 1  # alone: asked
    for cid in CIDS:
        session.have("relayed", cid, True)
    assert session.plan(CIDS, now=0.1).want_block == {}  # its window is full
