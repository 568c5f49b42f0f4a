// A bare js-libp2p GossipSub node: the bench's js-libp2p baseline (bench/raw_cluster.py
// drives it exactly as it drives bench/raw_node.py, the py-libp2p one).
//
//   node bench_gossip_node.mjs
//
// js-libp2p 3.3 with @libp2p/gossipsub 17.1 (TCP, Noise, yamux, identify), Ed25519
// identity, listening on 127.0.0.1 port 0; one process per node, like one gossipchatd.
// The router gets the daemon's parameters where js has the same knob (D 6/4/12, a 1 s
// heartbeat, 10 s prune and 5 s unsubscribe backoff, StrictSign), and:
//   - floodPublish on (js's default): the daemon sends its own messages to every
//     topic peer too (libp2p_patches.flood_publish, GossipSub v1.1); the raw
//     py-libp2p baseline cannot (0.8.1 has no flood publishing);
//   - no IP colocation penalty: on loopback every peer is 127.0.0.1 (the daemon turns
//     its eclipse protection off for the same reason);
//   - emitSelf on: py-libp2p hands a node its own messages, and the bench's self
//     latency reads them;
//   - the connection manager lets 127.0.0.1 dial as often as it likes (its default
//     refuses a host's 6th inbound connection within a second).
// The protocol versions are js's own (/meshsub/1.2.0 between js nodes).
//
// Driven by lines on stdin, answered by lines on stdout (bench/raw_node.py's protocol):
//   ready <peer id> <multiaddr>                 (once, at start)
//   connect <multiaddr>    -> connected <peer id> | error <text>
//   sub <topic>            -> subbed <topic>
//   mesh <topic>           -> mesh <topic> <mesh peers> <topic peers>
//   pub <topic> <tag>      -> (nothing; every node that hears it prints recv)
//   peers                  -> peers <connected peers>
//   sync                   -> synced (once every earlier line is handled)
//   quit                   -> exits 0
// and for every message on a subscribed topic (its own ones included):
//   recv <wall-clock seconds at arrival, 6 decimals> <tag>
// `pub` pads the tag to PAYLOAD_BYTES, as raw_node.py does. Lines are handled one at
// a time, in order, so `synced` means every earlier publish has returned.

// js-libp2p 3 uses Promise.withResolvers (Node 22+); this tree runs Node 20.
Promise.withResolvers ??= function withResolvers () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const { createInterface } = await import('node:readline')
const { performance } = await import('node:perf_hooks')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { gossipsub } = await import('@libp2p/gossipsub')
const { identify } = await import('@libp2p/identify')
const { tcp } = await import('@libp2p/tcp')
const { multiaddr } = await import('@multiformats/multiaddr')
const { createLibp2p } = await import('libp2p')

const PAYLOAD_BYTES = 300 // as bench/raw_node.py: about a short text envelope
const DIAL_TIMEOUT_MS = 10000

// Lines go out together once per turn of the event loop: stdout is a pipe, which
// Node writes synchronously on Linux, and a write per message of a burst would cost
// the node more than the gossip. Arrival stamps are taken before, so batching moves
// no figure; the order of the lines is kept.
let pending = []

function flush () {
  if (pending.length === 0) return
  const text = pending.join('\n') + '\n'
  pending = []
  process.stdout.write(text)
}

function emit (line) {
  pending.push(line)
  if (pending.length === 1) setImmediate(flush)
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionManager: { allow: ['/ip4/127.0.0.1'] },
  services: {
    identify: identify(),
    pubsub: gossipsub({
      D: 6,
      Dlo: 4,
      Dhi: 12,
      heartbeatInterval: 1000,
      pruneBackoff: 10000,
      unsubcribeBackoff: 5000,
      floodPublish: true,
      emitSelf: true,
      allowPublishToZeroTopicPeers: true,
      globalSignaturePolicy: 'StrictSign',
      scoreParams: { IPColocationFactorWeight: 0 }
    })
  }
})
await node.start()
const pubsub = node.services.pubsub

pubsub.addEventListener('message', (evt) => {
  const arrived = (performance.timeOrigin + performance.now()) / 1000
  const data = Buffer.from(evt.detail.data)
  const space = data.indexOf(0x20)
  const tag = data.subarray(0, space < 0 ? data.length : space).toString()
  emit(`recv ${arrived.toFixed(6)} ${tag}`)
})

function payload (tag) {
  const bytes = Buffer.alloc(Math.max(PAYLOAD_BYTES, tag.length + 1), '.')
  bytes.write(tag + ' ')
  return bytes
}

async function handle (command, args) {
  if (command === 'connect') {
    try {
      const conn = await node.dial(multiaddr(args[0]), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
      emit(`connected ${conn.remotePeer.toString()}`)
    } catch (err) {
      emit(`error ${err.name}: ${err.message}`.replace(/\n/g, ' '))
    }
  } else if (command === 'sub') {
    pubsub.subscribe(args[0])
    emit(`subbed ${args[0]}`)
  } else if (command === 'mesh') {
    const topic = args[0]
    emit(`mesh ${topic} ${pubsub.getMeshPeers(topic).length} ${pubsub.getSubscribers(topic).length}`)
  } else if (command === 'pub') {
    await pubsub.publish(args[0], payload(args[1]))
  } else if (command === 'sync') {
    emit('synced')
  } else if (command === 'peers') {
    emit(`peers ${node.getPeers().length}`)
  } else {
    emit(`error unknown command ${command}`)
  }
}

const tcpAddr = node.getMultiaddrs()[0]
emit(`ready ${node.peerId.toString()} ${tcpAddr.toString()}`)

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const [command, ...args] = line.trim().split(/\s+/)
  if (!command) continue
  if (command === 'quit') break
  try {
    await handle(command, args)
  } catch (err) {
    emit(`error ${err.name}: ${err.message}`.replace(/\n/g, ' '))
  }
}
flush()
await node.stop()
process.exit(0)
