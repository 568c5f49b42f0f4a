// Circuit relay v2 peers for interop tests, on js-libp2p with @libp2p/circuit-relay-v2
// (TCP, Noise, yamux, identify, ping), listening on 127.0.0.1 only.
//
//   node relay_peer.mjs relay [TTL_S] [DATA_LIMIT]
//       a relay server (circuitRelayServer). Its default circuit limit (2 min,
//       128 KiB) is raised to 10 min and 64 MiB so that a chat's sync and presence
//       traffic fits in one test; the limit is still sent in every STATUS/STOP.
//       Reservations last TTL_S seconds (default, or "-": js's 2 hours); DATA_LIMIT
//       bytes per circuit direction instead of 64 MiB.
//   node relay_peer.mjs client [LISTEN...]
//       a relay client (circuitRelayTransport): each LISTEN such as
//       <relay addr>/p2p-circuit reserves a slot on that relay at start.
//
// Both answer ECHO (/gossipchat-test/echo/1.0.0, limited connections too) and print
// {"multiaddr","peer"} (the first TCP address), then read commands, one a
// line, on stdin:
//   addrs               prints {"addrs": [all our multiaddrs]}
//   reservations        prints {"reservations": [peer ids holding a slot here]} (relay)
//   dial MULTIADDR      dial it; prints {"dialed", "remote", "limited"}
//   echo PEER BYTES     send BYTES random bytes on an echo stream over our relayed
//                       connection to PEER, read them back; prints {"echoed", "ms"}
//                       (over that connection: js-libp2p's own dial by peer id
//                       would open a direct connection instead of using a limited one)
//   conns PEER          prints {"conns": [remote addrs of our connections to PEER]}
// and stop when stdin closes. Every output is one JSON line on stdout; errors go to
// stderr, and a failed command prints {"error"}.

// js-libp2p 3 uses Promise.withResolvers (Node 22+); this tree runs Node 20.
Promise.withResolvers ??= function withResolvers () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const { createInterface } = await import('node:readline')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { circuitRelayServer, circuitRelayTransport } = await import('@libp2p/circuit-relay-v2')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { tcp } = await import('@libp2p/tcp')
const { multiaddr } = await import('@multiformats/multiaddr')
const { randomBytes } = await import('node:crypto')
const { createLibp2p } = await import('libp2p')

const ECHO = '/gossipchat-test/echo/1.0.0'

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const [role, ...args] = process.argv.slice(2)
if (role !== 'relay' && role !== 'client') {
  throw new Error('usage: relay_peer.mjs relay [TTL_S] | client [LISTEN...]')
}
const extraListen = role === 'client' ? args : []

const services = { identify: identify(), ping: ping() }
if (role === 'relay') {
  services.relay = circuitRelayServer({
    reservations: {
      defaultDurationLimit: 10 * 60 * 1000,
      defaultDataLimit: BigInt(args[1] ?? 64 * 1024 * 1024),
      ...(args[0] != null && args[0] !== '-' ? { reservationTtl: Number(args[0]) * 1000 } : {})
    }
  })
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0', ...extraListen] },
  transports: [tcp(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services
})
await node.start()
await node.handle(ECHO, async (stream) => {
  for await (const buf of stream) {
    if (!stream.send(buf)) {
      await stream.onDrain()
    }
  }
  await stream.close()
}, { runOnLimitedConnection: true })
const tcpAddr = node.getMultiaddrs().find(ma => !ma.toString().includes('/p2p-circuit'))
out({ multiaddr: tcpAddr.toString(), peer: node.peerId.toString() })

function connsTo (peer) {
  return node.getConnections().filter(c => c.remotePeer.toString() === peer)
}

async function echo (peer, size) {
  const conn = connsTo(peer).find(c => c.remoteAddr.toString().includes('/p2p-circuit'))
  if (conn == null) throw new Error(`no relayed connection to ${peer}`)
  const data = randomBytes(size)
  const start = Date.now()
  const stream = await conn.newStream(ECHO, { runOnLimitedConnection: true })
  const received = []
  let got = 0
  const reading = (async () => {
    for await (const buf of stream) {
      const bytes = buf.subarray()
      received.push(Buffer.from(bytes))
      got += bytes.byteLength
    }
  })()
  for (let i = 0; i < size; i += 16384) {
    if (!stream.send(data.subarray(i, i + 16384))) {
      await stream.onDrain()
    }
  }
  await stream.close()
  await reading
  if (got !== size || !Buffer.concat(received).equals(data)) {
    throw new Error(`echo returned ${got} of ${size} bytes, or other bytes`)
  }
  return { echoed: got, ms: Date.now() - start }
}

async function run (words) {
  const [command, arg] = words
  if (command === 'addrs') {
    out({ addrs: node.getMultiaddrs().map(ma => ma.toString()) })
  } else if (command === 'reservations') {
    out({ reservations: [...node.services.relay.reservations.keys()].map(p => p.toString()) })
  } else if (command === 'dial') {
    const conn = await node.dial(multiaddr(arg), { signal: AbortSignal.timeout(20000) })
    out({ dialed: arg, remote: conn.remoteAddr.toString(), limited: conn.limits != null })
  } else if (command === 'echo') {
    out(await echo(arg, Number(words[2])))
  } else if (command === 'conns') {
    out({ conns: connsTo(arg).map(c => c.remoteAddr.toString()) })
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
