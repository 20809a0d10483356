// The "client floor" contender: the cheapest Node HTTP server that answers what bench.mjs asks of
// the Durable Streams protocol, so its column shows how fast the official client (and the bench's
// raw-fetch readers) can go on this machine when the server does almost nothing. It keeps each
// stream as an array of appended chunks (the inside of each posted JSON array, unparsed), with no
// validation, no durability, no limits and no idempotency: a measuring device, not a server.
// Offsets are the number of chunks before a position. `node floor_server.mjs` prints
// "listening on URL" once it serves.
import { createServer } from "node:http"

const LONG_POLL_MS = 30_000
/** name -> { contentType, chunks: string[], polls: Set<fn>, sse: Set<res> } */
const streams = new Map()

const body = (chunks, from) => `[${chunks.slice(from).join(`,`)}]`
const offsetOf = (raw, length) => (raw === null || raw === `-1` ? 0 : Math.min(Number(raw) || 0, length))

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = []
    req.on(`data`, (p) => parts.push(p))
    req.on(`end`, () => resolve(parts.length === 1 ? parts[0].toString() : Buffer.concat(parts).toString()))
    req.on(`error`, reject)
  })
}

function sendSse(res, data, next) {
  res.write(`event: data\ndata:${data}\n\nevent: control\ndata:{"streamNextOffset":"${next}","upToDate":true}\n\n`)
}

async function append(s, req, res) {
  const text = (await readBody(req)).trim()
  const inner = text.startsWith(`[`) ? text.slice(1, -1) : text
  if (inner.length > 0) {
    s.chunks.push(inner)
    const next = String(s.chunks.length)
    const data = `[${inner}]`
    const polls = [...s.polls]
    s.polls.clear()
    for (const wake of polls) wake()
    for (const sse of s.sse) sendSse(sse, data, next)
  }
  res.writeHead(204, { "stream-next-offset": String(s.chunks.length) }).end()
}

function read(s, url, req, res) {
  const next = String(s.chunks.length)
  const from = offsetOf(url.searchParams.get(`offset`), s.chunks.length)
  const live = url.searchParams.get(`live`)
  if (live === `sse`) {
    res.writeHead(200, { "content-type": `text/event-stream`, "cache-control": `no-cache` })
    if (from < s.chunks.length) sendSse(res, body(s.chunks, from), next)
    else res.write(`event: control\ndata:{"streamNextOffset":"${next}","upToDate":true}\n\n`)
    s.sse.add(res)
    req.on(`close`, () => s.sse.delete(res))
    return
  }
  const headers = { "content-type": s.contentType, "stream-next-offset": next, "stream-up-to-date": `true`, "stream-cursor": `1` }
  if (from < s.chunks.length || live !== `long-poll`) {
    res.writeHead(200, headers).end(body(s.chunks, from))
    return
  }
  const wake = () => {
    clearTimeout(timer)
    const now = String(s.chunks.length)
    res.writeHead(200, { ...headers, "stream-next-offset": now }).end(body(s.chunks, from))
  }
  const timer = setTimeout(() => {
    s.polls.delete(wake)
    res.writeHead(204, headers).end()
  }, LONG_POLL_MS)
  s.polls.add(wake)
  req.on(`close`, () => {
    clearTimeout(timer)
    s.polls.delete(wake)
  })
}

const server = createServer((req, res) => {
  const url = new URL(req.url, `http://x`)
  let s = streams.get(url.pathname)
  if (req.method === `PUT`) {
    const contentType = req.headers[`content-type`] ?? `application/octet-stream`
    if (!s) streams.set(url.pathname, { contentType, chunks: [], polls: new Set(), sse: new Set() })
    req.resume()
    res.writeHead(s ? 200 : 201, { "content-type": contentType, "stream-next-offset": `0`, location: url.pathname }).end()
    return
  }
  if (!s) {
    req.resume()
    res.writeHead(404).end()
    return
  }
  if (req.method === `POST`) append(s, req, res).catch(() => res.writeHead(500).end())
  else if (req.method === `HEAD`) res.writeHead(200, { "content-type": s.contentType, "stream-next-offset": String(s.chunks.length) }).end()
  else if (req.method === `GET`) read(s, url, req, res)
  else res.writeHead(405).end()
})
server.keepAliveTimeout = 60_000
server.listen(0, `127.0.0.1`, () => console.log(`listening on http://127.0.0.1:${server.address().port}`))
process.on(`SIGTERM`, () => {
  server.closeAllConnections()
  process.exit(0)
})
