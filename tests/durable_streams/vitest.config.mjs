// Vitest settings for the conformance run driven by tests/durable_streams.rs.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    // The suite's TTL tests sleep for up to ~3 s and then poll for up to 5 s more; vitest's
    // 5 s default would time them out before the server is even asked.
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
})
