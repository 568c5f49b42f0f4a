"""py-libp2p 0.8.1 leaves connection sockets for the garbage collector to close.

A stopped host does not close the TCP sockets of its connections itself; Python
then warns "unclosed <socket.socket ...>" when they are collected. The daemon is not
affected (its process ends), but in-process tests must allow-list the warning
(pyproject.toml, filterwarnings).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, trio
    from harness.libp2p_hosts import connected_pair

    async def main():
        async with connected_pair():
            pass

    trio.run(main)
    gc.collect()
""")


def test_stopped_hosts_leave_unclosed_sockets() -> None:
    done = subprocess.run([sys.executable, "-W", "always::ResourceWarning", "-c", SCRIPT],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "unclosed <socket.socket" in done.stderr, (
        "py-libp2p now closes its sockets: drop the filterwarnings entries")
