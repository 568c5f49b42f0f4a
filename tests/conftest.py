"""Shared fixtures: a cluster of real daemons per test, network-namespace scenarios,
and a check after every test that no py-libp2p patch outlived it."""

from __future__ import annotations

import sys
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


@pytest.fixture(autouse=True)
def _no_libp2p_patch_outlives_its_test() -> Iterator[None]:
    """After each test, py-libp2p's own module functions are back in place.

    The process-wide patch of daemon/adapters/libp2p_patches.py lasts only while a
    host is inside it; a test that leaves it behind would change what later tests in
    this process measure (tests/upstream/ among them). Checked only once the patch
    module has been imported, so tests that never touch libp2p pay nothing.
    """
    yield
    patches = sys.modules.get("gossipchat.daemon.adapters.libp2p_patches")
    if patches is not None:
        assert patches.leftovers() == [], "a py-libp2p patch outlived its test"
