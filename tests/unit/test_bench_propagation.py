"""bench/propagation.py's bookkeeping: hop distances and latencies split by them."""

from __future__ import annotations

import time

from bench.propagation import (
    PropagationConfig,
    RoundResult,
    _paced_round,
    by_hop_summary,
    hop_distances,
)


def test_hop_distances_are_the_shortest_paths_and_none_when_cut_off() -> None:
    # 0 - 1 - 2 - 3, a shortcut 0 - 2, and 4 on its own.
    distances = hop_distances(5, [(0, 1), (1, 2), (2, 3), (0, 2)])
    assert distances[0] == [0, 1, 1, 2, None]
    assert distances[3] == [2, 2, 1, 0, None]
    assert distances[4] == [None, None, None, None, 0]


def test_a_round_files_each_latency_under_its_hop_distance() -> None:
    # A path 0 - 1 - 2: each message reaches a receiver 5 ms per hop after it was sent.
    hops = hop_distances(3, [(0, 1), (1, 2)])
    sent_at: dict[str, tuple[int, float]] = {}

    def send(i: int, tag: str) -> None:
        sent_at[tag] = (i, time.time())

    def arrived(j: int, tag: str) -> float | None:
        sender, at = sent_at[tag]
        distance = hops[sender][j]
        assert distance is not None
        return at + 0.005 * distance

    cfg = PropagationConfig(daemons=3, messages=3, rounds=1, rate_msg_s=200.0, grace_s=1.0)
    result = _paced_round(3, cfg, 0, send, arrived, hops)
    assert result.expected == 6
    assert result.late_or_lost == 0
    # Senders 0, 1, 2: 1 and 2 hops from 0, 1 and 1 from 1, 2 and 1 from 2.
    assert sorted(result.by_hop) == [1, 2]
    assert len(result.by_hop[1]) == 4
    assert len(result.by_hop[2]) == 2
    assert all(4.0 < x < 7.0 for x in result.by_hop[1])
    assert all(9.0 < x < 12.0 for x in result.by_hop[2])

    pooled = by_hop_summary([result, RoundResult(by_hop={3: [30.0]})])
    assert list(pooled) == ["1", "2", "3"]
    assert pooled["1"]["pairs"] == 4
    assert pooled["3"] == {"pairs": 1, "p50_ms": 30.0, "p90_ms": 30.0}
