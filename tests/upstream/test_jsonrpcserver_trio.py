"""jsonrpcserver 5.0.9's async dispatch is asyncio-only; rpc/dispatch.py replaces it."""

from __future__ import annotations

import trio
from jsonrpcserver import Success, async_dispatch, method


@method(name="ping_upstream_check")
async def _ping() -> object:
    return Success("pong")


def test_async_dispatch_fails_under_trio() -> None:
    async def main() -> str:
        return str(await async_dispatch(
            '{"jsonrpc":"2.0","method":"ping_upstream_check","id":1}'))

    # It awaits asyncio.gather, which trio refuses; the library turns that into a
    # "Server error" answer to every request.
    answer = trio.run(main)
    assert '"code": -32000' in answer
    assert "unrecognized yield message" in answer
