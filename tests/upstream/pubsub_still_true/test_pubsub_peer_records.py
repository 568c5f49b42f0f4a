"""py-libp2p 0.8.1 pubsub signs and checks its peer record in every RPC.

Why daemon/adapters/libp2p_patches.py used to memoise both ends (`memoised_peer_records`);
our router sends no peer records (they are optional in the spec).
That memo is in place only while a host is inside it, so this test first checks that
py-libp2p's own functions are the ones in place.
"""

from __future__ import annotations

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import pytest

from harness.libp2p_hosts import record_checks_per_publish

MESSAGES = 30


async def test_every_received_rpc_has_its_peer_record_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in (pubsub_module, gossipsub_module):
        for name in ("env_to_send_in_RPC", "maybe_consume_signed_record"):
            assert not hasattr(getattr(module, name), "__wrapped__"), f"{name} is patched"
    checked, _ = await record_checks_per_publish(monkeypatch, MESSAGES)
    print(f"{MESSAGES} messages: {checked} peer records parsed and verified")
    # One full Envelope parse + Ed25519 verify per message, at least.
    assert checked >= MESSAGES
