// The Node reference server (@durable-streams/server) in its own process, so it does not share
// the benchmark client's event loop: `node reference_server.mjs [DATA_DIR]` (file-backed with a
// directory, in memory without) prints "listening on URL" once it serves.
import { DurableStreamTestServer } from "@durable-streams/server"

const dataDir = process.argv[2]
const server = new DurableStreamTestServer({
  port: 0,
  host: `127.0.0.1`,
  longPollTimeout: 30_000,
  ...(dataDir ? { dataDir } : {}),
})
const url = await server.start()
console.log(`listening on ${url}`)
process.on(`SIGTERM`, async () => {
  await server.stop()
  process.exit(0)
})
