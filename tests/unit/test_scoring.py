"""Chat peer-score parameters (core/scoring.py): the numbers and what they imply,
worked through the score model with plain arithmetic, no libp2p and no network."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gossipchat.daemon.core import envelope, presence, scoring
from gossipchat.daemon.core.scoring import (
    DEFAULT,
    ChatScoring,
    Counter,
    Validation,
    decay_for,
    judge,
    summarise,
    to_disconnect,
)

ROOM = "/gossipchat/1/room/den"


def test_decay_halves_a_counter_every_half_life() -> None:
    factor = decay_for(600.0)
    assert factor ** 600 == pytest.approx(0.5)
    assert decay_for(60.0, heartbeat_s=2.0) ** 30 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive"):
        decay_for(0.0)


def test_thresholds_are_ordered_and_checked() -> None:
    d = DEFAULT
    assert 0 > d.gossip_threshold > d.publish_threshold >= d.graylist_threshold \
        > d.disconnect_threshold
    assert DEFAULT.problems() == []
    with pytest.raises(ValueError, match="thresholds"):
        ChatScoring(graylist_threshold=-10.0)
    with pytest.raises(ValueError, match="thresholds"):
        ChatScoring(gossip_threshold=-80.0)
    with pytest.raises(ValueError, match="capped"):
        ChatScoring(invalid=Counter(20.0, 10.0, 0.99))


def test_invalid_messages_cost_more_than_a_room_can_earn() -> None:
    # One invalid message wipes out a full room's credit: a peer never buys the
    # right to send junk by relaying well first.
    assert DEFAULT.invalid.weight >= DEFAULT.max_credit
    assert DEFAULT.max_credit == 20.0
    # From a full room's credit: 2 invalid messages take it out of the mesh, 6 onto
    # the graylist (below which the daemon hears nothing from it), 22 to the
    # disconnect threshold.
    assert DEFAULT.invalid_to_cross(0.0) == 2
    assert DEFAULT.invalid_to_cross(DEFAULT.graylist_threshold) == 6
    assert DEFAULT.invalid_to_cross(DEFAULT.disconnect_threshold) == 22
    # A new peer: its first invalid message takes it out of the mesh; five and the
    # daemon stops hearing it.
    assert DEFAULT.invalid_to_cross(0.0, credit=0.0) == 1
    assert DEFAULT.invalid_to_cross(DEFAULT.graylist_threshold, credit=0.0) == 5


def test_the_model_adds_rooms_and_subtracts_junk_and_behaviour() -> None:
    d = DEFAULT
    assert d.score({ROOM: 5}, {}) == 5.0
    assert d.score({ROOM: 500}, {}) == 20.0  # capped
    assert d.score({ROOM: 500, "other": 3}, {}) == 23.0
    assert d.score({ROOM: 500}, {ROOM: 1}) == 0.0
    assert d.score({}, {ROOM: 3}) == -60.0
    assert d.score({ROOM: 10}, {}, behaviour=2.5) == 7.5


def test_an_honest_burst_cannot_reach_the_graylist() -> None:
    # What an honest relay can be charged with in a burst: py-libp2p's own IWANT and
    # IHAVE spam penalties (5 each, for more than 10 a second) and, for our rate
    # limit, the drops of a peer that overshoots the 2,000-message burst by 1,000.
    honest = 5.0 + 5.0 + 1000 * DEFAULT.over_rate_penalty
    assert DEFAULT.score({ROOM: 0}, {}, behaviour=honest) > DEFAULT.graylist_threshold


def test_a_graylisted_peer_that_sends_on_reaches_the_disconnect_threshold() -> None:
    gap = DEFAULT.graylist_threshold - DEFAULT.disconnect_threshold
    messages = gap / DEFAULT.graylisted_message_penalty
    assert 50 <= messages <= 100
    # P5 decays with a half-life of a minute: at one message a second a graylisted
    # peer still gets there (the balance is penalty / (1 - decay), about 346).
    steady = DEFAULT.graylisted_message_penalty / (1 - DEFAULT.behaviour_decay)
    assert DEFAULT.graylist_threshold - steady < DEFAULT.disconnect_threshold


@pytest.mark.parametrize(("codec", "error"), [(envelope, "EnvelopeError"),
                                               (presence, "PresenceError")])
def test_every_refusal_reason_of_the_codecs_is_sorted(codec: Any, error: str) -> None:
    source = Path(codec.__file__).read_text()
    reasons = set(re.findall(error + r'\(\s*"([a-z_]+)"', source))
    assert reasons >= {"undecodable", "bad_signature", "too_large"}
    unsorted = reasons - scoring.REJECT_REASONS - scoring.IGNORE_REASONS
    assert not unsorted, f"decide whether these cost the forwarder: {unsorted}"
    assert not scoring.REJECT_REASONS & scoring.IGNORE_REASONS


@pytest.mark.parametrize(("reason", "outcome"), [
    (None, Validation.ACCEPT),
    ("bad_signature", Validation.REJECT),
    ("room_mismatch", Validation.REJECT),
    ("too_large", Validation.REJECT),
    ("undecodable", Validation.REJECT),
    ("not_origin", Validation.REJECT),  # a presence record its member did not send
    ("unknown_kind", Validation.IGNORE),  # a newer version's kind
    ("bad_addr", Validation.IGNORE),  # a newer version's kind of address
    ("future", Validation.IGNORE),  # a clock an hour ahead
    ("something_new", Validation.IGNORE),  # unknown: nobody pays for it
])
def test_judge(reason: str | None, outcome: Validation) -> None:
    assert judge(reason) is outcome


def test_summary_and_disconnect_list() -> None:
    scores = {"a": 12.0, "b": -5.0, "c": -90.0, "d": -401.0, "e": -1000.0}
    summary = summarise(scores)
    assert (summary.peers, summary.lowest, summary.below_zero, summary.graylisted) == \
        (5, -1000.0, 4, 3)
    assert summarise({}).lowest is None
    assert to_disconnect(scores) == ["d", "e"]
    assert to_disconnect(scores, exempt=["e"]) == ["d"]
