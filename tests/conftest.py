"""Shared fixtures: a cluster of real daemons per test, network-namespace scenarios,
and a check after every test that no py-libp2p patch outlived it."""

from __future__ import annotations

import fcntl
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

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


INTEROP = Path(__file__).resolve().parent / "interop"


@pytest.fixture(scope="session")
def interop() -> Path:
    """tests/interop, with node_modules installed from its lock file (`npm ci`) when
    missing or older than the lock file. Interop tests skip first where node or npm is
    missing."""
    lock = INTEROP / "package-lock.json"
    marker = INTEROP / "node_modules" / ".package-lock.json"
    # Other test runs may install at the same time; take turns.
    lock_path = Path(tempfile.gettempdir()) / "gossipchat-interop-npm.lock"
    with open(lock_path, "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=INTEROP, capture_output=True,
                text=True, timeout=900, check=False)
            assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return INTEROP
