// A standard libp2p mDNS peer for interop tests: js-libp2p with @libp2p/mdns (TCP,
// Noise, yamux, identify), listening on 0.0.0.0 inside the test's own network
// namespace. It prints one JSON line per event on stdout and runs until stdin closes:
//
//   node mdns_peer.mjs [--interval MS]
//       {"peer": <own id>, "addrs": [...]}                   once started
//       {"discovered": <peer id>, "addrs": [...]}            per mDNS discovery event
//       {"connected": <peer id>}                             per new connection
//
// It never dials on its own (no autodial beyond what js-libp2p does by default for
// discovered peers), and answers mDNS queries with the addresses js-libp2p announces.

// js-libp2p 3 uses Promise.withResolvers (Node 22+); this tree runs Node 20.
Promise.withResolvers ??= function withResolvers () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const { createLibp2p } = await import('libp2p')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { mdns } = await import('@libp2p/mdns')
const { tcp } = await import('@libp2p/tcp')

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function main (argv) {
  const index = argv.indexOf('--interval')
  const interval = index >= 0 ? Number(argv[index + 1]) : 1000
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/0.0.0.0/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [mdns({ interval })],
    services: { identify: identify() }
  })
  node.addEventListener('peer:discovery', (event) => {
    const { id, multiaddrs } = event.detail
    out({ discovered: id.toString(), addrs: multiaddrs.map(ma => ma.toString()) })
  })
  node.addEventListener('peer:connect', (event) => {
    out({ connected: event.detail.toString() })
  })
  await node.start()
  out({ peer: node.peerId.toString(), addrs: node.getMultiaddrs().map(ma => ma.toString()) })
  await new Promise(resolve => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.resume()
  })
  await node.stop()
}

main(process.argv.slice(2)).then(() => process.exit(0), (err) => {
  process.stderr.write(`mdns_peer: ${err.stack ?? err}\n`)
  process.exit(1)
})
