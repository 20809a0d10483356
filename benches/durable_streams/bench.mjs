// liveresults serve against the Node reference Durable Streams server (@durable-streams/server,
// in memory and file-backed) and a do-nothing "client floor" server (floor_server.mjs), driven by
// the official client with the same ~100-byte JSON messages, one server at a time on this
// machine; prints a table. Run with run.sh.
//
// Workloads:
// - single writes: one message per POST, each awaited (msgs/s);
// - batched writes: 20 POSTs of 1,000 messages each (msgs/s);
// - catch-up: read the 22,000 messages from -1, live: false (msgs/s, median of 5);
// - long-poll wake-up: 100 readers parked at the tail, one append; median latency from the
//   append to a reader's response (median of 5 rounds);
// - SSE wake-up: the same with 100 SSE connections, until each sees the data event.
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { DurableStream, stream } from "@durable-streams/client"

const bin = process.env.LIVERESULTS_BIN
if (!bin) throw new Error(`set LIVERESULTS_BIN to the liveresults binary`)
const SINGLE = Number(process.env.BENCH_SINGLE ?? 2000)
const READERS = 100

const message = (i) => ({ id: i, kind: `order`, customer: `customer-${i % 97}`, total: i * 3, note: `x`.repeat(32) })

function start(command, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: [`ignore`, `pipe`, `ignore`] })
    child.on(`error`, reject)
    const lines = createInterface({ input: child.stdout })
    lines.on(`line`, (line) => {
      if (!line.startsWith(`listening on `)) return // the reference server logs first
      const addr = line.replace(/^listening on /, ``).trim()
      resolve({ child, url: addr.startsWith(`http`) ? addr : `http://${addr}` })
    })
  })
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function singleWrites(base) {
  const s = await DurableStream.create({ url: `${base}/v1/stream/bench-single`, contentType: `application/json`, batching: false })
  const t0 = performance.now()
  for (let i = 0; i < SINGLE; i++) await s.append(JSON.stringify(message(i)))
  return SINGLE / ((performance.now() - t0) / 1000)
}

async function batchedWrites(base) {
  const url = `${base}/v1/stream/bench-batched`
  const s = await DurableStream.create({ url, contentType: `application/json`, batching: false })
  const batches = Array.from({ length: 20 }, (_, b) =>
    JSON.stringify(Array.from({ length: 1000 }, (_, i) => message(b * 1000 + i))))
  // Raw POSTs: the client wraps what it appends in one more array (one message per append).
  const t0 = performance.now()
  for (const batch of batches) {
    const res = await fetch(url, { method: `POST`, headers: { "content-type": `application/json` }, body: batch })
    if (!res.ok) throw new Error(`batch append answered ${res.status}`)
    await res.arrayBuffer()
  }
  const rate = 20_000 / ((performance.now() - t0) / 1000)
  for (let i = 0; i < 2000; i++) await s.append(JSON.stringify(message(20_000 + i)))
  return rate
}

async function catchUp(base) {
  const url = `${base}/v1/stream/bench-batched`
  const rates = []
  for (let round = 0; round < 5; round++) {
    const t0 = performance.now()
    const res = await stream({ url, offset: `-1`, live: false })
    const items = await res.json()
    if (items.length !== 22_000) throw new Error(`catch-up read ${items.length} messages`)
    rates.push(items.length / ((performance.now() - t0) / 1000))
  }
  return median(rates)
}

async function tailOf(url) {
  return (await fetch(url, { method: `HEAD` })).headers.get(`stream-next-offset`)
}

async function longPollWakeup(base) {
  const url = `${base}/v1/stream/bench-wake`
  const s = await DurableStream.create({ url, contentType: `application/json`, batching: false })
  const rounds = []
  for (let round = 0; round < 5; round++) {
    const tail = await tailOf(url)
    let t0 = 0
    const readers = Array.from({ length: READERS }, async () => {
      const res = await fetch(`${url}?offset=${tail}&live=long-poll`)
      await res.arrayBuffer()
      if (res.status !== 200) throw new Error(`long-poll answered ${res.status}`)
      return performance.now() - t0
    })
    await sleep(300)
    t0 = performance.now()
    await s.append(JSON.stringify(message(round)))
    rounds.push(median(await Promise.all(readers)))
  }
  return median(rounds)
}

async function sseWakeup(base) {
  const url = `${base}/v1/stream/bench-sse`
  const s = await DurableStream.create({ url, contentType: `application/json`, batching: false })
  const rounds = []
  for (let round = 0; round < 5; round++) {
    const tail = await tailOf(url)
    const controller = new AbortController()
    let t0 = 0
    const connected = []
    const readers = Array.from({ length: READERS }, (_, i) => (async () => {
      const res = await fetch(`${url}?offset=${tail}&live=sse`, { signal: controller.signal })
      const reader = res.body.getReader()
      const decoder = new TextDecoder()
      let seen = ``
      connected[i] = true
      for (;;) {
        const { value, done } = await reader.read()
        if (done) throw new Error(`SSE ended early`)
        seen += decoder.decode(value, { stream: true })
        if (seen.includes(`event: data`)) return performance.now() - t0
      }
    })())
    await sleep(500)
    t0 = performance.now()
    await s.append(JSON.stringify(message(round)))
    rounds.push(median(await Promise.all(readers)))
    controller.abort()
  }
  return median(rounds)
}

const workloads = [
  [`single writes (msgs/s)`, singleWrites, true],
  [`batched writes 20 x 1,000 (msgs/s)`, batchedWrites, true],
  [`catch-up read 22,000 (msgs/s)`, catchUp, true],
  [`long-poll wake-up, ${READERS} readers (median ms)`, longPollWakeup, false],
  [`SSE wake-up, ${READERS} readers (median ms)`, sseWakeup, false],
]

const here = new URL(`.`, import.meta.url).pathname
const servers = [
  [`liveresults --memory`, () => start(bin, [`serve`, `--memory`, `--listen`, `127.0.0.1:0`])],
  [`liveresults --data`, (dir) => start(bin, [`serve`, `--data`, dir, `--listen`, `127.0.0.1:0`])],
  [`reference (memory)`, () => start(process.execPath, [join(here, `reference_server.mjs`)])],
  [`reference (file)`, (dir) => start(process.execPath, [join(here, `reference_server.mjs`), dir])],
  // The cheapest server that answers these workloads (floor_server.mjs): what the client can reach.
  [`client floor`, () => start(process.execPath, [join(here, `floor_server.mjs`)])],
]

// Warm-up, discarded: the client's JIT and undici are cold for whichever server comes first (one
// run in reverse order measured --memory at 2,657 single writes/s and 7.4 ms long-poll wake-ups,
// against 1,157-1,398/s and 15.8-21.2 ms when it came first), so every contender meets a warm client.
const warmup = [[`warm-up (floor, discarded)`, servers[4][1]]]
const results = {}
for (const [name, launch] of [...warmup, ...servers]) {
  const dir = mkdtempSync(join(tmpdir(), `ds-bench-`))
  const { child, url } = await launch(dir)
  try {
    results[name] = []
    for (const [, run] of workloads) results[name].push(await run(url))
    console.error(`${name}: ${results[name].map((v) => v.toFixed(1)).join(`, `)}`)
  } finally {
    child.kill(`SIGTERM`)
    await new Promise((r) => child.once(`exit`, r))
    rmSync(dir, { recursive: true, force: true })
  }
}

const fmt = (v, rate) => (rate ? Math.round(v).toLocaleString(`en-US`) : v.toFixed(1))
const names = servers.map(([n]) => n)
// Higher is better for rates, lower for latencies: `a vs b` says how many times better a is than b,
// so `floor vs reference` is what a server doing almost nothing shows against the reference with
// this client on this machine, and `x / floor` is the share of that floor x reaches.
console.log(`| workload | ${names.join(` | `)} | memory vs reference | data vs file | floor vs reference | memory / floor | reference / floor |`)
console.log(`|---|${names.map(() => `---:`).join(`|`)}|---:|---:|---:|---:|---:|`)
workloads.forEach(([label, , rate], i) => {
  const v = names.map((n) => results[n][i])
  const ratio = (ours, theirs) => (rate ? ours / theirs : theirs / ours).toFixed(2) + `x`
  const ratios = [ratio(v[0], v[2]), ratio(v[1], v[3]), ratio(v[4], v[2]), ratio(v[0], v[4]), ratio(v[2], v[4])]
  console.log(`| ${label} | ${v.map((x) => fmt(x, rate)).join(` | `)} | ${ratios.join(` | `)} |`)
})
