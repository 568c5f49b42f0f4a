"""libp2p_patches.memoised_peer_records: py-libp2p pubsub's per-RPC peer-record work
done once per peer, and nothing accepted that would not have been (two real GossipSub
hosts on 127.0.0.1)."""

from __future__ import annotations

import libp2p.pubsub.pubsub as pubsub_module
import pytest
from libp2p.pubsub.pb import rpc_pb2

from gossipchat.daemon.adapters.libp2p_patches import leftovers, memoised_peer_records
from harness.libp2p_hosts import connected_pair, record_checks_per_publish, stock_host

MESSAGES = 30


async def test_a_peer_record_is_verified_once_not_per_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked, has_record = await record_checks_per_publish(monkeypatch, MESSAGES,
                                                          memoised_peer_records)
    assert has_record  # b still knows a's addresses from the record it did verify
    assert checked <= 2, checked
    assert leftovers() == []  # gone with the hosts


async def test_hosts_outside_the_memo_check_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While another host is inside the memo (so py-libp2p's functions are wrapped),
    hosts outside it still parse and verify the record in every RPC."""
    with memoised_peer_records(stock_host()):
        assert leftovers()  # installed
        checked, _ = await record_checks_per_publish(monkeypatch, MESSAGES)
    assert checked >= MESSAGES, checked
    assert leftovers() == []


async def test_a_different_or_forged_record_is_still_checked() -> None:
    async with connected_pair(memoised_peer_records) as nodes:
        (host_a, _, _), (host_b, _, _) = nodes
        check = pubsub_module.maybe_consume_signed_record
        assert hasattr(check, "__wrapped__")  # the memo, not py-libp2p's own
        good = rpc_pb2.RPC(senderRecord=pubsub_module.env_to_send_in_RPC(host_a)[0])
        assert check(good, host_b, host_a.get_id())
        assert check(good, host_b, host_a.get_id())  # from the memo
        # The same record claimed by another peer: rejected, memo or not.
        assert not check(good, host_b, host_b.get_id())
        forged = bytearray(good.senderRecord)
        forged[-5] ^= 0xFF
        assert not check(rpc_pb2.RPC(senderRecord=bytes(forged)), host_b, host_a.get_id())
        assert check(rpc_pb2.RPC(), host_b, host_a.get_id())  # no record: nothing to check
