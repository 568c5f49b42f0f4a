// A standard GossipSub v1.1 peer for room interop tests: @libp2p/gossipsub on js-libp2p
// (TCP, Noise, yamux, identify, ping), StrictSign (the default), listening on
// 127.0.0.1 only. It relays whatever its router accepts: no topic validator.
//
//   node gossip_peer.mjs
//       print {"multiaddr","peer"}, then read commands, one a line, on stdin:
//         dial MULTIADDR      dial it; prints {"dialed"}
//         sub TOPIC           subscribe; prints {"subscribed"}
//         pub TOPIC HEX       publish the bytes; prints {"recipients": n}
//         got TOPIC           prints {"messages": [{"data": hex, "from": peer id}]}, every
//                             message heard on TOPIC so far, in arrival order
//         mesh TOPIC          prints {"mesh": [peer ids]} and {"subscribers": [...]}
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
const { gossipsub } = await import('@libp2p/gossipsub')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { tcp } = await import('@libp2p/tcp')
const { multiaddr } = await import('@multiformats/multiaddr')
const { createLibp2p } = await import('libp2p')

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
    // Publishing to a room whose mesh is still forming is fine: the tests wait on
    // what arrives, not on the first publish.
    pubsub: gossipsub({ allowPublishToZeroTopicPeers: true })
  }
})
await node.start()
out({ multiaddr: node.getMultiaddrs()[0].toString(), peer: node.peerId.toString() })

const heard = new Map()
node.services.pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  const list = heard.get(msg.topic) ?? []
  list.push({ data: Buffer.from(msg.data).toString('hex'), from: msg.from?.toString() ?? null })
  heard.set(msg.topic, list)
})

async function run (words) {
  const [command, arg, hex] = words
  const pubsub = node.services.pubsub
  if (command === 'dial') {
    await node.dial(multiaddr(arg))
    out({ dialed: arg })
  } else if (command === 'sub') {
    pubsub.subscribe(arg)
    out({ subscribed: arg })
  } else if (command === 'pub') {
    const result = await pubsub.publish(arg, Buffer.from(hex, 'hex'))
    out({ recipients: result.recipients.length })
  } else if (command === 'got') {
    out({ messages: heard.get(arg) ?? [] })
  } else if (command === 'mesh') {
    out({
      mesh: pubsub.getMeshPeers(arg),
      subscribers: pubsub.getSubscribers(arg).map((p) => p.toString())
    })
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
