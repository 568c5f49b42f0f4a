"""The block-exchange edge: bitswap with text peer ids and the project's errors.

The node speaks peer ids as text and catches only GossipchatError; the bitswap
adapter speaks libp2p IDs and raises its own and the unixfs module's errors. This
module translates once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio
from libp2p.peer.id import ID

from ..core import unixfs
from ..errors import (
    FetchTimeout,
    GossipchatError,
    ImageMismatch,
    ImageTooLarge,
    NotFound,
    PathError,
)
from .bitswap import (
    MAX_PEER_WANTLIST,
    Bitswap,
    BitswapStoppedError,
    FetchTimeoutError,
    NotFoundError,
)
from .blockstore import BlockStore, BlockStoreError, QuotaExceededError
from .p2p import P2PNetwork

MAX_PEERS_IN_VIEW = 64  # per-peer counters in `status`, so that its size stays bounded


class BlockExchange:
    """Fetch and serve UnixFS files over bitswap on the node's host."""

    def __init__(self, network: P2PNetwork, store: BlockStore, *,
                 max_wants_per_peer: int = MAX_PEER_WANTLIST) -> None:
        self.store = store
        self.bitswap = Bitswap(network.host, store, max_wants_per_peer=max_wants_per_peer)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve bitswap until cancelled."""
        await self.bitswap.run(task_status=task_status)

    async def announce(self, cids: Iterable[bytes]) -> None:
        """Tell peers that asked earlier that these blocks are here now."""
        try:
            await self.bitswap.announce(cids)
        except BitswapStoppedError:
            return

    async def fetch(
        self, root: bytes, peers: Sequence[str], *, max_size: int, timeout_s: float,
        on_progress: Callable[[int, int], None] | None = None,
        fallback: Sequence[str] = (),
        expected_size: int | None = None,
        patience_s: float = 0.0,
    ) -> bytes:
        """The file under root, from the peers (verified, stored, served from now on).

        Fallback peers (the original poster) are asked only for blocks none of `peers`
        has, a few at a time. With `expected_size`, a DAG of another size is refused
        (`ImageMismatch`) as soon as its root arrives. Once every peer said it lacks a
        block, the fetch waits `patience_s` for one to get it before `NotFound`.
        """
        cid = unixfs.cid_to_str(root)
        try:
            return await self.bitswap.fetch(
                root, [ID.from_base58(p) for p in peers], max_size=max_size,
                timeout=timeout_s, on_progress=on_progress,
                fallback=[ID.from_base58(p) for p in fallback],
                expected_size=expected_size, patience=patience_s,
            )
        except FetchTimeoutError as exc:
            raise FetchTimeout(
                f"not found: no peer delivered {cid} within {timeout_s:g} s ({exc})"
            ) from None
        except NotFoundError as exc:
            raise NotFound(f"not found: {cid}: {exc}") from None
        except BitswapStoppedError:
            raise GossipchatError("the block exchange is stopping") from None
        except unixfs.SizeMismatchError as exc:
            raise ImageMismatch(f"{cid} is not the file the message describes: {exc}") from None
        except unixfs.FileTooLargeError as exc:
            raise ImageTooLarge(f"image too large: {cid}: {exc}") from None
        except unixfs.InvalidDagError as exc:
            raise NotFound(f"not found: {cid} is not a usable UnixFS file: {exc}") from None
        except QuotaExceededError as exc:
            raise PathError(f"block store full: {exc}") from None
        except BlockStoreError as exc:
            raise PathError(f"block store error: {exc}") from None

    def view(self) -> dict[str, Any]:
        """Counters for `status`."""
        s = self.bitswap.stats
        return {
            "blocks_sent": s.blocks_sent, "bytes_sent": s.bytes_sent,
            "blocks_received": s.blocks_received, "bytes_received": s.bytes_received,
            "duplicate_blocks": s.duplicate_blocks, "bad_blocks": s.bad_blocks,
            "peers_dropped": s.peers_dropped, "stream_faults": s.stream_faults,
            "wants_dropped": s.wants_dropped,
            "have_received": s.have_received, "dont_have_received": s.dont_have_received,
            "wants_moved_to_direct": s.wants_moved_to_direct,
            "messages_sent": s.messages_sent, "messages_received": s.messages_received,
            # Who served us and whom we served, by peer id: the counters that show
            # members serving each other, and a fetch moving off a relay.
            "peers": {
                peer: {"blocks_received": p.blocks_received, "blocks_sent": p.blocks_sent}
                for peer, p in [item for item in sorted(s.peers.items())
                                if item[1].blocks_received or item[1].blocks_sent
                                ][:MAX_PEERS_IN_VIEW]
            },
        }
