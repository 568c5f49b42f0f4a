"""The daemon's log levels: py-libp2p's routine churn stays out of an info log, and
all of it is there at debug."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gossipchat.daemon.main import _setup_logging

LOGGERS = ("libp2p", "libp2p.host.basic_host")


@pytest.fixture
def restored_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_info_drops_py_libp2p_churn_and_its_stream_open_reports(restored_levels: None) -> None:
    _setup_logging("info")
    assert not logging.getLogger("libp2p.network.swarm").isEnabledFor(logging.WARNING)
    assert logging.getLogger("libp2p.network.swarm").isEnabledFor(logging.ERROR)
    # basic_host's one ERROR is the seven-line "Failed to open stream" report.
    assert not logging.getLogger("libp2p.host.basic_host").isEnabledFor(logging.ERROR)


def test_debug_leaves_py_libp2p_alone(restored_levels: None) -> None:
    _setup_logging("debug")
    for name in LOGGERS:
        assert logging.getLogger(name).level == logging.NOTSET
