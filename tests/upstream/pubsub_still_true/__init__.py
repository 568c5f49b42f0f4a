"""STILL TRUE UPSTREAM: defects of py-libp2p 0.8.1's own `Pubsub` and `GossipSub`.

gossipchat no longer runs py-libp2p's pubsub: daemon/core/gossipsub is our own
GossipSub v1.1 router and daemon/adapters/pubsub.py runs it, so none of these affect
the daemon any more, and the patches that worked around them
(daemon/adapters/libp2p_patches.py: deep_peer_queues, sink_topic,
keep_live_subscriptions, retry_pubsub_streams, replace_streams_of_closed_connections,
ignore_replaced_stream_failures, gate_forwarded_messages, report_bad_signatures,
prune_negative_mesh_peers, retain_negative_scores, memoised_peer_records,
flood_publish) are gone.

The tests stay: they document py-libp2p for anyone who runs its pubsub (the stock
peers our interop tests start, bench/raw_node.py), and each fails once upstream
fixes what it shows. `py_scoring.py` keeps the ScoreParams translation of
core/scoring.py that the daemon used to hand py-libp2p's scorer.
"""
