// A query's results as a State Protocol stream, materialized by the official client while
// events are ingested — inserts, updates, deletes and a clear — must end equal to the server's
// own snapshot of the query. Run by tests/durable_streams.rs against `liveresults serve`.
//
// LIVERESULTS_URL: the server; LIVERESULTS_TOKEN: an admin token (ingest and clear need it).
import { stream } from "@durable-streams/client"
import { MaterializedState, isChangeEvent, isControlEvent } from "@durable-streams/state"

const base = process.env.LIVERESULTS_URL
const headers = { Authorization: `Bearer ${process.env.LIVERESULTS_TOKEN}` }
const query = `orders`
const streamUrl = `${base}/v1/stream/queries/${query}`

async function call(method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...headers, "content-type": `application/x-ndjson` },
    body,
  })
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`)
  return res
}

// One platform change event per line.
function change(sequence, { added = [], updated = [], deleted = [] }) {
  return JSON.stringify({
    kind: `change`,
    queryId: query,
    sequence,
    sourceTimeMs: 0,
    addedResults: added,
    updatedResults: updated,
    deletedResults: deleted,
  })
}

async function ingest(lines) {
  await call(`POST`, `/queries/${query}/events`, lines.join(`\n`) + `\n`)
}

const row = (id, version) => ({ id, total: id * 10 + version })

// History before the reader starts: 40 rows.
let sequence = 0
await ingest(Array.from({ length: 40 }, (_, i) => change(++sequence, { added: [row(i, 0)] })))

// The reader: from -1 (snapshot, then changes), live over SSE; a reset clears what it holds.
const state = new MaterializedState()
let resets = 0
const reader = await stream({ url: streamUrl, offset: `-1`, live: `sse`, headers })
reader.subscribeJson(async (batch) => {
  for (const item of batch.items) {
    if (isControlEvent(item) && item.headers.control === `reset`) {
      state.clear()
      resets++
    } else if (isChangeEvent(item)) {
      state.apply(item)
    }
  }
})

// While it reads: updates, deletes, more rows, a clear, and rows after the clear.
for (let round = 1; round <= 5; round++) {
  const lines = []
  for (let id = round; id < 40; id += 7) {
    lines.push(change(++sequence, { updated: [{ before: row(id, round - 1), after: row(id, round) }] }))
  }
  lines.push(change(++sequence, { deleted: [row(round * 7 - 1, 0)] }))
  lines.push(change(++sequence, { added: [row(100 + round, 0)] }))
  await ingest(lines)
  await new Promise((resolve) => setTimeout(resolve, 50))
}
await call(`DELETE`, `/queries/${query}`)
sequence += 1000
await ingest(Array.from({ length: 12 }, (_, i) => change(++sequence, { added: [row(200 + i, 0)] })))
await ingest([change(++sequence, { deleted: [row(203, 0)] })])

// Wait until the reader has reached the stream's tail.
const tail = (await fetch(streamUrl, { method: `HEAD`, headers })).headers.get(`stream-next-offset`)
const deadline = Date.now() + 10_000
while (reader.offset !== tail) {
  if (Date.now() > deadline) throw new Error(`reader stuck at ${reader.offset}, tail ${tail}`)
  await new Promise((resolve) => setTimeout(resolve, 20))
}
reader.cancel()

// The server's snapshot; signatures are u64, so they are read from the text, not as numbers.
const snapshot = await (await fetch(`${base}/queries/${query}/snapshot`, { headers })).text()
const expected = new Map()
for (const line of snapshot.trim().split(`\n`).slice(1)) {
  const key = /"signature":(\d+)/.exec(line)[1]
  expected.set(key, JSON.parse(line).row)
}
const got = state.getType(query)
const same =
  got.size === expected.size &&
  [...expected].every(([key, value]) => JSON.stringify(got.get(key)) === JSON.stringify(value))
if (!same || resets !== 1) {
  console.error(`materialized ${got.size} rows, snapshot ${expected.size}, resets ${resets}`)
  console.error(`materialized:`, JSON.stringify([...got].slice(0, 5)))
  console.error(`snapshot:`, JSON.stringify([...expected].slice(0, 5)))
  process.exit(1)
}
console.log(`state protocol: ${got.size} rows materialized equal the snapshot (1 reset seen)`)
