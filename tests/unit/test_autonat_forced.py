"""Config `reachability` = public|private fixes AutoNAT's verdict (go-libp2p's
ForceReachabilityPublic/Private): relays serve on it, relay clients reserve on it."""

from __future__ import annotations

from typing import Any

import pytest

from gossipchat.daemon.adapters.autonat import AutoNAT
from gossipchat.daemon.core import autonat as policy

NO_NETWORK: Any = object()  # the verdict never touches the network


@pytest.mark.parametrize("forced", [policy.PUBLIC, policy.PRIVATE])
def test_a_forced_verdict_holds_whatever_servers_answer(forced: str) -> None:
    autonat = AutoNAT(NO_NETWORK, forced=forced)
    assert autonat.verdict() == forced
    for i in range(3):
        autonat.reachability.record(f"server{i}", policy.E_DIAL_ERROR
                                    if forced == policy.PUBLIC else policy.OK, 0.0, None)
    assert autonat.verdict() == forced
    assert autonat.view()["forced"] == forced


def test_unforced_autonat_starts_unknown() -> None:
    autonat = AutoNAT(NO_NETWORK)
    assert autonat.verdict() == policy.UNKNOWN
    assert autonat.view()["forced"] is None


def test_only_public_or_private_can_be_forced() -> None:
    with pytest.raises(ValueError, match="public or private"):
        AutoNAT(NO_NETWORK, forced="unknown")
