"""jsonrpcserver 5.0.9's async dispatch is asyncio-only; rpc/dispatch.py replaces it.

The check runs in a fresh interpreter: how the failure reads depends on what asyncio
state the process already has (after an asyncio.run elsewhere in the test session it
is "no current event loop" instead), and the coroutine it leaves unawaited would warn
later in whichever test the garbage collector happens to run in.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import json, trio
from jsonrpcserver import Success, async_dispatch, method

@method(name="ping_upstream_check")
async def _ping():
    return Success("pong")

async def main():
    return await async_dispatch('{"jsonrpc":"2.0","method":"ping_upstream_check","id":1}')

print(trio.run(main))
"""


def test_async_dispatch_fails_under_trio() -> None:
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", PROGRAM],
                          capture_output=True, text=True, timeout=60, check=True)
    answer = json.loads(done.stdout)
    # It awaits asyncio.gather, which trio refuses; the library turns that into a
    # "Server error" answer to every request.
    assert answer["error"]["code"] == -32000
    assert "unrecognized yield message" in answer["error"]["data"]
    assert "result" not in answer
