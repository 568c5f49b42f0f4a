"""Our own GossipSub v1.1 router, sans-IO, in the shape of go-libp2p-pubsub: one concern
per module.

- `rpc`: the pubsub rpc.proto codec, exact and field by field.
- `signing`: StrictSign, one signature check per message.
- `mcache`, `seen`, `backoff`: the message cache, the seen cache, PRUNE backoff.
- `score`: peer scores with core/scoring.py's chat parameters.
- `outbox`: a peer's queue, drained into single frames up to the size limit.
- `router`: meshes, fanout, gossip, GRAFT/PRUNE/PX, validation and forwarding.

No trio and no libp2p here; daemon/adapters/pubsub.py runs it.
"""
