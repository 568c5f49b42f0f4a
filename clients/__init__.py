"""Clients of the daemon: `p2pctl` and the `Client` library for scripts."""

from .library import Client, ConnectionLost, DaemonNotRunning, RpcError

__all__ = ["Client", "ConnectionLost", "DaemonNotRunning", "RpcError"]
