"""Shared fixtures: a cluster of real daemons per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from harness.daemons import Cluster
from harness.netns import Network, Scenario, network
from harness.netns import unavailable as netns_unavailable


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Real gossipchatd processes on 127.0.0.1, stopped after the test."""
    with Cluster() as c:
        yield c


@pytest.fixture
def netns_available() -> None:
    """Skip, with the reason, where network namespaces are unavailable (not root, no ip)."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def netns(netns_available: None) -> Iterator[Callable[[Scenario], Network]]:
    """Build network-namespace scenarios (harness/netns.py); all are torn down at the end."""
    with ExitStack() as stack:
        yield lambda scenario: stack.enter_context(network(scenario))
