// A standard Kademlia DHT peer for interop tests: @libp2p/kad-dht in server mode on
// js-libp2p (TCP, Noise, yamux, identify, ping), protocol /ipfs/kad/1.0.0, listening
// on 127.0.0.1 only. Addresses are kept as they are (passthroughMapper): everything
// here is on loopback.
//
//   node kad_peer.mjs
//       print {"multiaddr","peer"}, then read commands, one a line, on stdin:
//         dial MULTIADDR      dial it; prints {"dialed"}
//         table               prints {"table": [peer ids in the routing table]}
//         provide CID         provide CID on the DHT; prints {"provided"}
//         find CID [MS]       findProviders; prints {"providers": [peer ids]}
//       and stop when stdin closes.
// Every output is one JSON line on stdout; errors go to stderr, and a failed command
// prints {"error"}.

// js-libp2p 3 uses Promise.withResolvers (Node 22+); this tree runs Node 20.
Promise.withResolvers ??= function withResolvers () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const { createInterface } = await import('node:readline')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { ping } = await import('@libp2p/ping')
const { tcp } = await import('@libp2p/tcp')
const { multiaddr } = await import('@multiformats/multiaddr')
const { createLibp2p } = await import('libp2p')
const { CID } = await import('multiformats/cid')

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: '/ipfs/kad/1.0.0',
      clientMode: false,
      peerInfoMapper: passthroughMapper,
      allowQueryWithZeroPeers: true
    })
  }
})
await node.start()
out({ multiaddr: node.getMultiaddrs()[0].toString(), peer: node.peerId.toString() })

async function run (words) {
  const [command, arg, ms] = words
  if (command === 'dial') {
    await node.dial(multiaddr(arg))
    out({ dialed: arg })
  } else if (command === 'table') {
    const peers = []
    for (const peer of node.services.dht.routingTable.kb.toIterable()) {
      peers.push(peer.peerId.toString())
    }
    out({ table: peers })
  } else if (command === 'provide') {
    await node.contentRouting.provide(CID.parse(arg), { signal: AbortSignal.timeout(20000) })
    out({ provided: arg })
  } else if (command === 'find') {
    const providers = []
    const signal = AbortSignal.timeout(Number(ms ?? 10000))
    try {
      for await (const provider of node.contentRouting.findProviders(CID.parse(arg), { signal })) {
        providers.push(provider.id.toString())
      }
    } catch (err) {
      if (!signal.aborted) throw err
    }
    out({ providers })
  } else {
    throw new Error(`unknown command ${command}`)
  }
}

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  try {
    await run(line.trim().split(/\s+/))
  } catch (err) {
    process.stderr.write(`${err.stack ?? err}\n`)
    out({ error: String(err.message ?? err) })
  }
}
await node.stop()
process.exit(0)
