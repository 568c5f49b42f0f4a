"""py-libp2p 0.8.1 leaves connection sockets for the garbage collector to close.

A stopped host does not close the TCP sockets of its connections itself; Python
then warns "unclosed <socket.socket ...>" when they are collected. The daemon is not
affected (its process ends), but in-process tests must allow-list the warning.
"""

from __future__ import annotations

import gc
import warnings

from tests.upstream.libp2p_pair import connected_pair


async def test_stopped_hosts_leave_unclosed_sockets() -> None:
    async with connected_pair():
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [w for w in caught if "unclosed <socket.socket" in str(w.message)]
    assert leaks, "py-libp2p now closes its sockets: drop the filterwarnings entry"
