"""Peer ids in text form, as RPC callers and peer records hand them in: PeerIdError only."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gossipchat.daemon.core import envelope, peerid
from gossipchat.daemon.core.peerid import PeerIdError
from tests.fuzz.helpers import corpus, fuzz_settings, mutated

AUTHORS = tuple(envelope.decode(w, now_ms=2**52).author_text for w in corpus("envelope"))

# Regression input (issue 9): base58 decoding is quadratic; is_valid_text of 100,000
# characters took 14.6 s on the event loop (node._check_peer runs it on RPC input).
LONG = "z" * 100_000


@fuzz_settings()
@given(st.text(max_size=80) | st.sampled_from(AUTHORS)
       | mutated([a.encode() for a in AUTHORS]).map(lambda b: b.decode("latin-1")))
@example(LONG)
def test_text_peer_ids_raise_only_peer_id_error(text: str) -> None:
    try:
        raw = peerid.from_text(text)
    except PeerIdError:
        assert not peerid.is_valid_text(text)
        return
    assert peerid.to_text(raw) == text
    assert len(peerid.public_key(raw)) == 32


def test_long_text_is_refused_before_decoding() -> None:
    with pytest.raises(PeerIdError, match="characters"):
        peerid.from_text(LONG)
    assert all(len(author) <= peerid.MAX_TEXT_LEN for author in AUTHORS)
