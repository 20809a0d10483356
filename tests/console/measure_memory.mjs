// Measures what open consoles cost the server: the RSS of a running `liveresults serve`
// (LIVERESULTS_PID) while a writer commits to one query continuously, first with no console
// open, then with CONSOLES (default 10) headless Chromium tabs on that query's page (each one
// snapshot plus one SSE change feed) and one on the queries page, then with them closed. Run by hand (the README's
// Console section has the command); prints one line per phase.
//
// Environment: LIVERESULTS_URL, LIVERESULTS_PID, LIVERESULTS_ADMIN_TOKEN,
// LIVERESULTS_WRITE_TOKEN, CONSOLES, SECONDS (per phase, default 20), CHROMIUM.

import puppeteer from "puppeteer-core";
import { readFileSync } from "node:fs";

const url = process.env.LIVERESULTS_URL;
const pid = process.env.LIVERESULTS_PID;
const admin = process.env.LIVERESULTS_ADMIN_TOKEN;
const write = process.env.LIVERESULTS_WRITE_TOKEN;
const consoles = Number(process.env.CONSOLES || 10);
const seconds = Number(process.env.SECONDS || 20);
const QUERY = "busy";
const ROWS = 1000;

function rssKib() {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

let sequence = 0;
let commits = 0;
/** Commits 20 row updates per request, back to back, until `until`. */
async function writer(until) {
  while (Date.now() < until) {
    const lines = [];
    for (let i = 0; i < 20; i++) {
      sequence += 1;
      const id = sequence % ROWS;
      lines.push(JSON.stringify({
        query_id: QUERY, sequence, timestamp: Date.now(),
        results: [{ type: "ADD", data: { id, value: sequence, note: "x".repeat(40) }, row_signature: id }],
      }));
    }
    const r = await fetch(`${url}/queries/${QUERY}/events`, {
      method: "POST",
      headers: { Authorization: `Bearer ${write}`, "Content-Type": "application/x-ndjson" },
      body: lines.join("\n") + "\n",
    });
    if (r.status !== 200) throw new Error(`ingest: ${r.status} ${await r.text()}`);
    commits += 1;
    await new Promise((res) => setTimeout(res, 10));
  }
}

/** Runs the writer for a phase, sampling RSS every second; returns [mean, max] in MiB. */
async function phase(name) {
  const samples = [];
  const before = commits;
  const until = Date.now() + seconds * 1000;
  const sampler = setInterval(() => samples.push(rssKib()), 1000);
  await writer(until);
  clearInterval(sampler);
  const mib = (k) => (k / 1024).toFixed(1);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  const max = Math.max(...samples);
  console.log(`${name}: RSS mean ${mib(mean)} MiB, max ${mib(max)} MiB over ${samples.length} samples; ` +
    `${commits - before} commits (${((commits - before) / seconds).toFixed(0)}/s)`);
}

await writer(Date.now() + 2000); // the query exists and has its rows
await phase("no console");
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const pages = [];
  for (let i = 0; i <= consoles; i++) {
    // A context each: one browser profile opens at most 6 HTTP/1.1 connections to a host,
    // and every query page holds one for its change feed.
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.evaluateOnNewDocument((t) => sessionStorage.setItem("liveresults.token", t), admin);
    await page.goto(i < consoles ? `${url}/ui#/query/${QUERY}` : `${url}/ui#/`, { waitUntil: "domcontentloaded" });
    pages.push(page);
  }
  await pages[0].waitForSelector("#rows-table tbody tr", { timeout: 10000 });
  await phase(`${consoles} consoles on the query page + 1 on the queries page`);
} finally {
  await browser.close();
}
await phase("consoles closed");
