"""Shared fixtures: a cluster of real daemons per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.harness import Cluster
from tests.netns import Network, Scenario, network
from tests.netns import unavailable as netns_unavailable


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Real gossipchatd processes on 127.0.0.1, stopped after the test."""
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def netns_available() -> None:
    """Skip, with the reason, where network namespaces are unavailable (not root, no ip)."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def netns(netns_available: None) -> Iterator[Callable[[Scenario], Network]]:
    """Build network-namespace scenarios (tests/netns.py); all are torn down at the end."""
    with ExitStack() as stack:
        yield lambda scenario: stack.enter_context(network(scenario))
