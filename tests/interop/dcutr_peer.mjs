// A js-libp2p peer with DCUtR (@libp2p/dcutr), for the hole-punching interop test
// (tests/integration/test_dcutr_interop.py): TCP, Noise, yamux, identify, and the
// circuit relay v2 transport (circuitRelayTransport), run inside a test network
// namespace.
//
//   node dcutr_peer.mjs [--listen MULTIADDR]... [--announce MULTIADDR]...
//       --listen    what to listen on (default /ip4/0.0.0.0/tcp/0); a listen
//                   address <relay addr>/p2p-circuit reserves a slot on that relay
//       --announce  an address to add to the ones we tell peers (identify, and
//                   the DCUtR CONNECT): js-libp2p only sends a public transport
//                   address once something (AutoNAT, an operator) confirmed it
//
// The test network's "public" addresses are in 198.18.0.0/15 (RFC 2544), which
// js-libp2p counts as private (@libp2p/utils private-ip.js), and DCUtR dials only
// public addresses (@libp2p/dcutr utils.js isPublicAndDialable). So, and only so,
// this peer treats 198.18.0.0/15 as public, as gossipchat's DCUtR does: the netmask
// that @libp2p/utils checks says that range contains no address. Everything else is
// js-libp2p as published.
//
// Prints {"multiaddr","peer"} (the first TCP address), then reads commands, one a
// line, on stdin:
//   addrs          prints {"addrs": [all our multiaddrs]}
//   dial MULTIADDR dial it; prints {"dialed", "remote", "limited"}
//   conns PEER     prints {"conns": [{"addr","direction","limited","status"}]} of our
//                  connections to PEER
//   events         prints {"events": [{"event": "open"|"close", "peer", "addr",
//                  "direction", "limited"}]}, every connection event so far
//   identify PEER  runs identify on our first connection to PEER; prints
//                  {"identified", "protocols", "listenAddrs"} (or the error)
//   log            prints {"log": [lines]}: what js's DCUtR service logged so far
//                  (the libp2p:dcutr logger, errors included)
// and stops when stdin closes. Every output is one JSON line on stdout.

// js-libp2p 3 uses Promise.withResolvers (Node 22+); this tree runs Node 20.
Promise.withResolvers ??= function withResolvers () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const { format } = await import('node:util')
const { createInterface } = await import('node:readline')
const { default: weald } = await import('weald')
const netmask = await import('netmask')

// js's DCUtR log, kept for the `log` command (and nothing else is logged).
const dcutrLog = []
weald.log = (...args) => { dcutrLog.push(format(...args)) }
// DCUTR_PEER_DEBUG (e.g. libp2p:identify*) adds other loggers' lines to it, to debug.
weald.enable(['libp2p:dcutr', 'libp2p:dcutr:*', process.env.DCUTR_PEER_DEBUG ?? ''].join(','))

// 198.18.0.0/15 is the test network's internet (see above).
const Netmask = (netmask.default ?? netmask).Netmask
const contains = Netmask.prototype.contains
Netmask.prototype.contains = function (ip) {
  if (this.base === '198.18.0.0' && this.bitmask === 15) return false
  return contains.call(this, ip)
}

const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { circuitRelayTransport } = await import('@libp2p/circuit-relay-v2')
const { dcutr } = await import('@libp2p/dcutr')
const { identify } = await import('@libp2p/identify')
const { tcp } = await import('@libp2p/tcp')
const { multiaddr } = await import('@multiformats/multiaddr')
const { createLibp2p } = await import('libp2p')

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const listen = []
const announce = []
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i += 2) {
  if (argv[i] === '--listen') listen.push(argv[i + 1])
  else if (argv[i] === '--announce') announce.push(argv[i + 1])
  else throw new Error(`usage: dcutr_peer.mjs [--listen MA]... [--announce MA]... (got ${argv[i]})`)
}

const node = await createLibp2p({
  addresses: {
    listen: listen.length > 0 ? listen : ['/ip4/0.0.0.0/tcp/0'],
    appendAnnounce: announce
  },
  transports: [tcp(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), dcutr: dcutr() }
})

function describe (conn) {
  return {
    addr: conn.remoteAddr.toString(),
    direction: conn.direction,
    limited: conn.limits != null,
    status: conn.status
  }
}

const events = []
for (const event of ['connection:open', 'connection:close']) {
  node.addEventListener(event, ({ detail: conn }) => {
    const { addr, direction, limited } = describe(conn)
    events.push({ event: event.split(':')[1], peer: conn.remotePeer.toString(), addr, direction, limited })
  })
}

await node.start()
const tcpAddr = node.getMultiaddrs().find(ma => !ma.toString().includes('/p2p-circuit')) ??
  multiaddr(`${listen[0] ?? '/ip4/0.0.0.0/tcp/0'}/p2p/${node.peerId}`)
out({ multiaddr: tcpAddr.toString(), peer: node.peerId.toString() })

async function run (words) {
  const [command, arg] = words
  if (command === 'addrs') {
    out({ addrs: node.getMultiaddrs().map(ma => ma.toString()) })
  } else if (command === 'dial') {
    const conn = await node.dial(multiaddr(arg), { signal: AbortSignal.timeout(20000) })
    out({ dialed: arg, remote: conn.remoteAddr.toString(), limited: conn.limits != null })
  } else if (command === 'conns') {
    out({ conns: node.getConnections().filter(c => c.remotePeer.toString() === arg).map(describe) })
  } else if (command === 'events') {
    out({ events })
  } else if (command === 'identify') {
    // identify again on our first connection to PEER: what a failure says
    const conn = node.getConnections().find(c => c.remotePeer.toString() === arg)
    if (conn == null) throw new Error(`not connected to ${arg}`)
    const result = await node.services.identify.identify(conn)
    out({ identified: arg, protocols: result.protocols, listenAddrs: result.listenAddrs.map(String) })
  } else if (command === 'log') {
    out({ log: dcutrLog })
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
    out({ error: String(err.message ?? err) })
  }
}
await node.stop()
process.exit(0)
