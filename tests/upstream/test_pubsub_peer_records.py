"""py-libp2p 0.8.1 pubsub signs and checks its peer record in every RPC.

Why daemon/adapters/peer_records.py memoises both ends. The test restores
py-libp2p's own functions for its duration, in case the memo was installed by an
earlier test in this process.
"""

from __future__ import annotations

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import libp2p.pubsub.utils as pubsub_utils
import pytest
import trio

from tests.upstream.libp2p_pair import connected_pair, wait_for_mesh

MESSAGES = 30


def _unwrap(module: object, name: str) -> object:
    function = getattr(module, name)
    return getattr(function, "__wrapped__", function)


async def test_every_received_rpc_has_its_peer_record_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in (pubsub_module, gossipsub_module):
        for name in ("env_to_send_in_RPC", "maybe_consume_signed_record"):
            monkeypatch.setattr(module, name, _unwrap(module, name))
    checked = 0
    original = pubsub_utils.consume_envelope

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal checked
        checked += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    async with connected_pair() as nodes:
        (_, router_a, pub_a), (host_b, _, pub_b) = nodes
        sub_b = await pub_b.subscribe("t")
        await pub_a.subscribe("t")
        await pub_a.wait_for_subscription(host_b.get_id(), "t", timeout=10)
        await wait_for_mesh(router_a, "t", host_b.get_id())
        checked = 0
        with trio.fail_after(20):
            for i in range(MESSAGES):
                await pub_a.publish("t", f"m{i}".encode())
                await sub_b.get()
    print(f"{MESSAGES} messages: {checked} peer records parsed and verified")
    # One full Envelope parse + Ed25519 verify per message, at least.
    assert checked >= MESSAGES
