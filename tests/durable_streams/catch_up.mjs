// Catch-up that the official client finishes: `@durable-streams/client` reading with
// `live: false` stops after ONE response, whether or not it says Stream-Up-To-Date, so the
// server must put everything up to the tail (within its byte bound) into that response. Over a
// history of COMMITS commits (default 10,000; the server keeps them all in its outbox):
//
// 1. the change feed /queries/q/changes from -1 returns every commit, 1..COMMITS, in order;
// 2. the State Protocol stream /v1/stream/queries/q resumed from the offset after commit 1
//    returns every later commit's changes, and applied to the snapshot read at commit 1 they
//    materialize exactly the server's snapshot;
// 3. the State Protocol stream from -1 returns the snapshot (then any later changes), which
//    materializes exactly the server's snapshot, and the response is up to date.
//
// Run by tests/catch_up.rs against `liveresults serve`. LIVERESULTS_URL: the server.
import { stream } from "@durable-streams/client"
import { MaterializedState, isChangeEvent, isControlEvent } from "@durable-streams/state"

const base = process.env.LIVERESULTS_URL
const commits = Number(process.env.COMMITS ?? `10000`)
const query = `q`
const streamUrl = `${base}/v1/stream/queries/${query}`
const failures = []
const check = (ok, what) => {
  if (!ok) failures.push(what)
}

// Commit i adds row i; every 7th also updates row i-1; every 10th also deletes row i-5.
function change(i) {
  const row = (id, version) => ({ id, total: id * 10 + version })
  const updated = i % 7 === 0 && i > 1 ? [{ before: row(i - 1, 0), after: row(i - 1, 1) }] : []
  const deleted = i % 10 === 0 ? [row(i - 5, i - 5 > 1 && (i - 4) % 7 === 0 ? 1 : 0)] : []
  return JSON.stringify({
    kind: `change`,
    queryId: query,
    sequence: i,
    sourceTimeMs: 0,
    addedResults: [row(i, 0)],
    updatedResults: updated,
    deletedResults: deleted,
  })
}

async function ingest(from, to) {
  const lines = []
  for (let i = from; i <= to; i++) lines.push(change(i))
  const res = await fetch(`${base}/queries/${query}/events`, {
    method: `POST`,
    headers: { "content-type": `application/x-ndjson` },
    body: lines.join(`\n`) + `\n`,
  })
  if (!res.ok) throw new Error(`ingest ${from}..${to}: ${res.status} ${await res.text()}`)
}

// Applies State Protocol messages to `state`; returns the txids of the change messages.
function apply(state, items) {
  const txids = new Set()
  for (const item of items) {
    if (isControlEvent(item) && item.headers.control === `reset`) state.clear()
    else if (isChangeEvent(item)) {
      state.apply(item)
      if (item.headers.txid !== undefined) txids.add(item.headers.txid)
    }
  }
  return txids
}

async function serverRows() {
  const text = await (await fetch(`${base}/queries/${query}/snapshot`)).text()
  const rows = new Map()
  // Signatures are u64: read from the text, not as numbers.
  for (const line of text.trim().split(`\n`).slice(1)) {
    rows.set(/"signature":(\d+)/.exec(line)[1], JSON.parse(line).row)
  }
  return rows
}

function sameRows(state, expected, what) {
  const got = state.getType(query)
  const same =
    got.size === expected.size &&
    [...expected].every(([key, value]) => JSON.stringify(got.get(key)) === JSON.stringify(value))
  check(same, `${what}: materialized ${got.size} rows, the server's snapshot has ${expected.size}`)
}

// Commit 1, and a State Protocol reader's snapshot of it.
await ingest(1, 1)
const early = await stream({ url: streamUrl, offset: `-1`, live: false })
const resumed = new MaterializedState()
apply(resumed, await early.json())
const earlyOffset = early.offset

// The rest of the history, in bodies of 1,000 lines (one commit per line: --chunk-lines 1).
for (let from = 2; from <= commits; from += 1000) await ingest(from, Math.min(from + 999, commits))
const expected = await serverRows()

// 1. The change feed from -1.
const feed = await stream({ url: `${base}/queries/${query}/changes`, offset: `-1`, live: false })
const messages = await feed.json()
const sequences = messages.map((m) => m.sequence)
check(
  messages.length === commits,
  `change feed: ${messages.length} messages of ${commits} commits (last sequence ${sequences.at(-1)})`,
)
check(
  sequences.every((s, i) => s === i + 1),
  `change feed: sequences are not 1..${commits} in order`,
)
check(feed.upToDate, `change feed: the response is not up to date`)

// 2. The State Protocol stream resumed after commit 1.
const rest = await stream({ url: streamUrl, offset: earlyOffset, live: false })
const items = await rest.json()
const txids = apply(resumed, items)
check(
  txids.size === commits - 1,
  `query stream resumed after commit 1: changes of ${txids.size} commits, expected ${commits - 1}`,
)
check(
  !items.some((i) => isControlEvent(i)),
  `query stream resumed after commit 1: control messages (a reset?) instead of changes only`,
)
check(rest.upToDate, `query stream resumed after commit 1: the response is not up to date`)
sameRows(resumed, expected, `query stream resumed after commit 1`)

// 3. The State Protocol stream from -1: the snapshot, then whatever followed it.
const whole = await stream({ url: streamUrl, offset: `-1`, live: false })
const all = await whole.json()
const fresh = new MaterializedState()
apply(fresh, all)
const controls = all.filter((i) => isControlEvent(i)).map((i) => i.headers.control)
check(
  controls[0] === `snapshot-start` && controls[1] === `snapshot-end`,
  `query stream from -1: controls ${controls}`,
)
check(whole.upToDate, `query stream from -1: the response is not up to date`)
sameRows(fresh, expected, `query stream from -1`)

if (failures.length > 0) {
  for (const f of failures) console.error(`FAILED: ${f}`)
  process.exit(1)
}
console.log(
  `catch-up with live: false over ${commits} commits: change feed ${messages.length} messages, ` +
    `query stream ${txids.size} commits after the first and a ${expected.size}-row snapshot, ` +
    `materialized state equals the server's snapshot`,
)
