"""Where the daemon's home and socket are, as INTERFACE.md fixes it.

Shared by the daemon and the clients, so both sides find the same socket.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """$GOSSIPCHAT_HOME, else $XDG_DATA_HOME/gossipchat, else ~/.local/share/gossipchat."""
    env = os.environ.get("GOSSIPCHAT_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "gossipchat"
    return Path.home() / ".local" / "share" / "gossipchat"


def socket_path(rpc: str | None = None, home: str | None = None) -> Path:
    """--rpc, else --home, else $GOSSIPCHAT_RPC, else $GOSSIPCHAT_HOME, else the default."""
    if rpc:
        return Path(rpc)
    if home:
        return Path(home) / "rpc.sock"
    env_rpc = os.environ.get("GOSSIPCHAT_RPC")
    if env_rpc:
        return Path(env_rpc)
    return default_home() / "rpc.sock"
