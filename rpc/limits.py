"""Bounds on what one RPC client can make the daemon hold or do.

Every bound but the nesting depth is a config key (deploy/config.toml); docs/limits.md
gives each one with the reasoning, and `status.limits` counts the times each was hit.
"""

from __future__ import annotations

from dataclasses import dataclass

# JSON nested deeper than this is refused: no request of the table needs more than 4
# levels, and json's C parser recurses once per level.
MAX_DEPTH = 32


@dataclass(frozen=True)
class RpcLimits:
    """The RPC bounds in force; the defaults are the config defaults."""

    max_line_bytes: int = 48 * 1024 * 1024
    max_batch: int = 1000
    max_response_bytes: int = 8 * 1024 * 1024
    max_connections: int = 64
    max_subscriptions: int = 32
