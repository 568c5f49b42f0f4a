"""Clients of the daemon: `p2pctl`, the `Client` library and `AsyncClient` for scripts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .library import Client, ConnectionLost, DaemonNotRunning, RpcError

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = ["AsyncClient", "Client", "ConnectionLost", "DaemonNotRunning", "RpcError"]


def __getattr__(name: str) -> Any:
    # AnyIO is imported only by scripts that ask for AsyncClient: p2pctl starts fast.
    if name == "AsyncClient":
        from .aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
