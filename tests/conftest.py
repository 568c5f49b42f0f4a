"""Shared fixtures: a cluster of real daemons per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Real gossipchatd processes on 127.0.0.1, stopped after the test."""
    c = Cluster()
    try:
        yield c
    finally:
        c.close()
