// A standard bitswap peer for interop tests: Helia's @helia/bitswap on js-libp2p
// (TCP, Noise, yamux), listening on 127.0.0.1 only, with no routers and no HTTP
// gateways, so it talks to nobody but the peer it is given.
//
//   node helia_peer.mjs cid FILE... [--legacy]
//       print {"file","cid"} for each FILE, computed by ipfs-unixfs-importer (no
//       network)
//   node helia_peer.mjs serve FILE [--legacy]
//       import FILE, serve it over bitswap, print {"multiaddr","peer","cid"} and
//       keep serving until stdin closes
//   node helia_peer.mjs fetch MULTIADDR CID [--timeout MS]
//       dial MULTIADDR (with /p2p/<peer id>), fetch the UnixFS file CID over
//       bitswap and print {"cid","size","sha256"}
//
// Import options are the ones INTERFACE.md fixes (CIDv1, raw leaves, 256 KiB
// chunks, balanced layout with 174 links), i.e. `ipfs add --cid-version=1
// --raw-leaves --chunker=size-262144`. `--legacy` imports as old Kubo defaults
// and its trickle layout would: CIDv0, dag-pb leaves, to test reading other DAGs.
// Every output is one JSON line on stdout; errors go to stderr with exit code 1.

// js-libp2p 3 uses Promise.withResolvers (Node 22+); this tree runs Node 20. It is
// the only newer feature it needs, so it is filled in here, before anything loads.
Promise.withResolvers ??= function withResolvers () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const { createHash } = await import('node:crypto')
const { readFile } = await import('node:fs/promises')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { withBitswap } = await import('@helia/bitswap')
const { withLibp2pLight } = await import('@helia/libp2p')
const { identify } = await import('@libp2p/identify')
const { tcp } = await import('@libp2p/tcp')
const { multiaddr } = await import('@multiformats/multiaddr')
const { MemoryBlockstore } = await import('blockstore-core')
const { MemoryDatastore } = await import('datastore-core')
const { createHeliaLight } = await import('helia')
const { exporter } = await import('ipfs-unixfs-exporter')
const { importer } = await import('ipfs-unixfs-importer')
const { fixedSize } = await import('ipfs-unixfs-importer/chunker')
const { balanced, trickle } = await import('ipfs-unixfs-importer/layout')
const { CID } = await import('multiformats/cid')

const STANDARD = {
  cidVersion: 1,
  rawLeaves: true,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 })
}

const LEGACY = {
  cidVersion: 0,
  rawLeaves: false,
  leafType: 'raw',
  reduceSingleLeafToSelf: false,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: trickle({ maxChildrenPerNode: 174, layerRepeat: 4 })
}

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function importBytes (bytes, blockstore, legacy) {
  let root
  for await (const entry of importer([{ content: bytes }], blockstore, legacy ? LEGACY : STANDARD)) {
    root = entry
  }
  return root.cid
}

async function startHelia () {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({
    blockstore: new MemoryBlockstore(),
    datastore: new MemoryDatastore()
  }), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  }))
  await helia.start()
  return helia
}

async function cmdCid (files, legacy) {
  for (const file of files) {
    const cid = await importBytes(await readFile(file), { put: async (key) => key }, legacy)
    out({ file, cid: cid.toString() })
  }
}

async function cmdServe (file, legacy) {
  const helia = await startHelia()
  const cid = await importBytes(await readFile(file), helia.blockstore, legacy)
  const addr = helia.libp2p.getMultiaddrs().find(ma => ma.toString().startsWith('/ip4/127.0.0.1/'))
  out({ multiaddr: addr.toString(), peer: helia.libp2p.peerId.toString(), cid: cid.toString() })
  await new Promise(resolve => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.resume()
  })
  await helia.stop()
}

async function cmdFetch (addr, cidText, timeoutMs) {
  const helia = await startHelia()
  const signal = AbortSignal.timeout(timeoutMs)
  try {
    await helia.libp2p.dial(multiaddr(addr), { signal })
    const entry = await exporter(CID.parse(cidText), helia.blockstore, { signal })
    const hash = createHash('sha256')
    let size = 0
    for await (const chunk of entry.content({ signal })) {
      hash.update(chunk)
      size += chunk.byteLength
    }
    out({ cid: cidText, size, sha256: hash.digest('hex') })
  } finally {
    await helia.stop()
  }
}

async function main (argv) {
  const [command, ...rest] = argv
  const flags = new Set(rest.filter(arg => arg.startsWith('--')))
  const args = rest.filter(arg => !arg.startsWith('--'))
  if (command === 'cid' && args.length >= 1) {
    return cmdCid(args, flags.has('--legacy'))
  }
  if (command === 'serve' && args.length === 1) {
    return cmdServe(args[0], flags.has('--legacy'))
  }
  if (command === 'fetch' && args.length >= 2) {
    const index = rest.indexOf('--timeout')
    const timeoutMs = index >= 0 ? Number(rest[index + 1]) : 30000
    return cmdFetch(args[0], args[1], timeoutMs)
  }
  throw new Error('usage: helia_peer.mjs cid FILE... [--legacy] | serve FILE [--legacy] | fetch MULTIADDR CID [--timeout MS]')
}

main(process.argv.slice(2)).then(() => process.exit(0), (err) => {
  process.stderr.write(`helia_peer: ${err.stack ?? err}\n`)
  process.exit(1)
})
