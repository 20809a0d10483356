// The official Durable Streams server conformance suite against a running `liveresults serve`.
//
// tests/durable_streams.rs starts the server and sets LIVERESULTS_DS_URL; the suite's own CLI
// does not find its tests, so this one file calls `runConformanceTests` directly.
//
// With LIVERESULTS_DS_TOKEN set, every request the suite makes (its own `fetch` calls and the
// `@durable-streams/client` ones, which look `fetch` up at call time) carries that bearer
// token, so the suite can run against a server that requires tokens.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.LIVERESULTS_DS_URL
if (!baseUrl) {
  throw new Error(`LIVERESULTS_DS_URL is not set: run this through tests/durable_streams.rs`)
}

const token = process.env.LIVERESULTS_DS_TOKEN
if (token) {
  const plainFetch = globalThis.fetch
  globalThis.fetch = (input, init = {}) => {
    const headers = new Headers(
      init.headers ?? (input instanceof Request ? input.headers : undefined)
    )
    if (!headers.has(`authorization`)) headers.set(`authorization`, `Bearer ${token}`)
    return plainFetch(input, { ...init, headers })
  }
}

runConformanceTests({
  baseUrl,
  longPollTimeoutMs: Number(process.env.LIVERESULTS_DS_LONG_POLL_MS ?? `1000`),
  // The reserved subscription API (webhooks and pull-wake): the server offers it.
  subscriptions: true,
})
