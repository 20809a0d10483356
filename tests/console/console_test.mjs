// Drives the /ui console of a running `liveresults serve` in headless Chromium (Debian's
// chromium package, through puppeteer-core): enters the token at the prompt, ingests events
// over HTTP, checks the queries page and the live rows table show them within a second,
// clears a query through the confirmation dialog and checks the table empties. Run by
// tests/console.rs, which starts the server; exits non-zero on the first failed check.
//
// Environment: LIVERESULTS_URL, LIVERESULTS_ADMIN_TOKEN (typed into the prompt),
// LIVERESULTS_WRITE_TOKEN (ingest), CHROMIUM (default /usr/bin/chromium),
// LIVERESULTS_SCREENSHOTS (a directory: save console-queries.png and console-query.png).

import puppeteer from "puppeteer-core";
import path from "node:path";

const url = process.env.LIVERESULTS_URL;
const adminToken = process.env.LIVERESULTS_ADMIN_TOKEN;
const writeToken = process.env.LIVERESULTS_WRITE_TOKEN;
const shots = process.env.LIVERESULTS_SCREENSHOTS || "";
/** How long the console may take to show an ingested commit. */
const WITHIN_MS = 1000;

if (!url || !adminToken || !writeToken) {
  console.error("LIVERESULTS_URL, LIVERESULTS_ADMIN_TOKEN and LIVERESULTS_WRITE_TOKEN are required");
  process.exit(2);
}

const results = [];
function pass(name, detail) {
  results.push({ name, ok: true });
  console.log(`ok - ${name}${detail ? ` (${detail})` : ""}`);
}

/** One drasi-lib result line. */
function line(query, sequence, results) {
  return JSON.stringify({ query_id: query, sequence, timestamp: Date.now(), results });
}

async function ingest(query, lines) {
  const r = await fetch(`${url}/queries/${query}/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${writeToken}`, "Content-Type": "application/x-ndjson" },
    body: lines.join("\n") + "\n",
  });
  if (r.status !== 200) throw new Error(`ingest ${query}: ${r.status} ${await r.text()}`);
}

async function stats(query) {
  const r = await fetch(`${url}/queries/${query}`, { headers: { Authorization: `Bearer ${adminToken}` } });
  return r.json();
}

const add = (id, data) => ({ type: "ADD", data: { id, ...data }, row_signature: id });
const update = (id, before, after) => ({
  type: "UPDATE", data: { id, ...after }, before: { id, ...before }, after: { id, ...after }, row_signature: id,
});
const del = (id, data) => ({ type: "DELETE", data: { id, ...data }, row_signature: id });

/** Waits for `fn` (run in the page) to be truthy; returns the elapsed milliseconds. */
async function within(page, name, ms, fn, ...args) {
  const started = Date.now();
  try {
    await page.waitForFunction(fn, { timeout: ms, polling: "raf" }, ...args);
  } catch (e) {
    throw new Error(`${name}: not within ${ms} ms (${e.message})`);
  }
  const took = Date.now() - started;
  pass(name, `${took} ms`);
  return took;
}

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
  defaultViewport: { width: 1280, height: 800 },
});
let failed = null;
/** Script errors the page reported, printed when a check fails. */
const pageProblems = [];
try {
  const page = await browser.newPage();
  const problems = pageProblems;
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // A refused fetch (the 401 before the token) is expected; script or CSP errors are not.
    if (m.type() === "error" && !/status of 40[13]|status of 409/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  const urls = [];
  page.on("request", (r) => urls.push(r.url()));

  // Some data before the page opens, and a query upstream deleted (it stands out as stopped).
  await ingest("orders", [
    line("orders", 1, [add(1, { item: "apples", qty: 3 })]),
    line("orders", 2, [add(2, { item: "pears", qty: 1 })]),
  ]);
  const r = await fetch(`${url}/queries/legacy/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${writeToken}`, "Content-Type": "application/x-ndjson" },
    body: [
      JSON.stringify({ kind: "change", queryId: "legacy", sequence: 1, sourceTimeMs: 0, addedResults: [{ id: 1 }], updatedResults: [], deletedResults: [] }),
      JSON.stringify({ kind: "control", queryId: "legacy", sequence: 2, sourceTimeMs: 0, controlSignal: { kind: "deleted" } }),
    ].join("\n") + "\n",
  });
  if (r.status !== 200) throw new Error(`ingest legacy: ${r.status} ${await r.text()}`);

  // 1. The server wants a token: the console asks for it.
  await page.goto(`${url}/ui`, { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#token-dialog[open]", { timeout: 5000 });
  pass("the console asks for a token when the server answers 401");
  await page.type("#token-input", adminToken);
  await page.keyboard.press("Enter");
  await within(page, "the queries page lists the ingested queries", 5000, () => {
    const rows = document.querySelectorAll("#queries-table tbody tr");
    return rows.length === 2;
  });
  const stored = await page.evaluate(() => sessionStorage.getItem("liveresults.token"));
  if (stored !== adminToken) throw new Error("the token is not in sessionStorage");
  pass("the token is kept in sessionStorage");

  // 2. The queries page follows new commits within a second.
  await ingest("orders", [line("orders", 3, [add(3, { item: "plums", qty: 12 })])]);
  await within(page, "the queries page shows sequence 3 and 3 rows", WITHIN_MS, () => {
    const tr = document.querySelector('#queries-table tr[data-query="orders"]');
    if (!tr) return false;
    const cell = (c) => tr.querySelector(`[data-col="${c}"]`).textContent;
    return cell("sequence") === "3" && cell("row_count") === "3";
  });
  const legacy = await page.$eval('#queries-table tr[data-query="legacy"]', (tr) => ({
    stopped: tr.classList.contains("stopped"),
    state: tr.querySelector('[data-col="state"]').textContent,
  }));
  if (!legacy.stopped || !legacy.state.startsWith("stopped")) throw new Error(`legacy is not shown stopped: ${JSON.stringify(legacy)}`);
  pass("a stopped query stands out", legacy.state);
  // Sorting by sequence, descending: orders (3) before legacy.
  await page.click('button.sort[data-key="sequence"]');
  await page.click('button.sort[data-key="sequence"]');
  const order = await page.$$eval("#queries-table tbody tr", (trs) => trs.map((t) => t.dataset.query));
  if (order[0] !== "orders") throw new Error(`sort by sequence descending gave ${order}`);
  pass("the queries table sorts", order.join(","));
  // A few more commits so the sparkline has a shape for the screenshot.
  for (let s = 4; s <= 8; s++) {
    await ingest("orders", [line("orders", s, [update(1, { item: "apples", qty: s - 1 }, { item: "apples", qty: s })])]);
    await new Promise((res) => setTimeout(res, 350));
  }
  await within(page, "the queries page shows sequence 8", WITHIN_MS, () =>
    document.querySelector('#queries-table tr[data-query="orders"] [data-col="sequence"]').textContent === "8");
  if (shots) {
    await page.screenshot({ path: path.join(shots, "console-queries.png") });
    pass("saved console-queries.png");
  }

  // 3. The query page: the snapshot, then the change feed.
  await page.click('#queries-table a[href="#/query/orders"]');
  await within(page, "the query page shows the snapshot's 3 rows", 5000, () =>
    document.querySelectorAll("#rows-table tbody tr").length === 3 &&
    document.getElementById("row-count").dataset.rows === "3");
  await ingest("orders", [
    line("orders", 9, [add(4, { item: "figs", qty: 7 })]),
    line("orders", 10, [del(2, { item: "pears", qty: 1 }), update(3, { item: "plums", qty: 12 }, { item: "plums", qty: 11 })]),
  ]);
  await within(page, "the live rows table shows the new commits", WITHIN_MS, () => {
    const rows = document.getElementById("rows-table").querySelectorAll('tbody tr:not(.leaving)');
    const sigs = Array.from(rows, (r) => r.dataset.signature).sort().join(",");
    const plums = document.querySelector('#rows-table tr[data-signature="3"]');
    return sigs === "1,3,4" && plums && plums.textContent.includes("11");
  });
  const flashed = await page.$eval('#rows-table tr[data-signature="4"]', (tr) => tr.classList.contains("flash-upsert"));
  if (!flashed) throw new Error("the new row did not flash");
  pass("a changed row flashes");
  const commits = await page.$$eval("#commits li", (lis) => lis.map((li) => li.textContent));
  // One ingest request is one commit: sequences 9 and 10 arrive as the span 9–10.
  if (!commits.some((c) => /seq (9–10|10) /.test(c))) {
    throw new Error(`recent commits lack sequence 10: ${commits}`);
  }
  pass("recent commits list their sequences", commits.slice(0, 2).join(" | "));
  // Filtering hides rows without dropping them.
  await page.type("#rows-filter", "figs");
  await within(page, "the row filter leaves one row", WITHIN_MS, () =>
    document.querySelectorAll("#rows-table tbody tr:not([hidden])").length === 1);
  await page.$eval("#rows-filter", (el) => { el.value = ""; el.dispatchEvent(new Event("input")); });
  // Pause: commits made while paused appear once resumed.
  await page.click("#pause");
  await ingest("orders", [line("orders", 11, [add(5, { item: "kiwis", qty: 2 })])]);
  await new Promise((res) => setTimeout(res, 300));
  const whilePaused = await page.$$eval("#rows-table tbody tr", (trs) => trs.length);
  if (whilePaused !== 3) throw new Error(`the paused table changed: ${whilePaused} rows`);
  await page.click("#pause");
  await within(page, "resuming the feed catches up", WITHIN_MS, () =>
    document.querySelector('#rows-table tr[data-signature="5"]') !== null);
  if (shots) {
    await new Promise((res) => setTimeout(res, 1300)); // let the flash fade
    await ingest("orders", [line("orders", 12, [update(4, { item: "figs", qty: 7 }, { item: "figs", qty: 9 })])]);
    await new Promise((res) => setTimeout(res, 150));
    await page.screenshot({ path: path.join(shots, "console-query.png") });
    pass("saved console-query.png");
  }

  // 4. Clear through the confirmation dialog: cancel first changes nothing, confirm empties.
  await page.click("#clear");
  await page.waitForSelector("#confirm-dialog[open]", { timeout: 2000 });
  await page.click("#confirm-cancel");
  const kept = await stats("orders");
  if (kept.row_count !== 4 || kept.epoch !== 0) throw new Error(`cancel changed the query: ${JSON.stringify(kept)}`);
  if ((await page.$$eval("#rows-table tbody tr", (trs) => trs.length)) !== 4) throw new Error("cancel emptied the table");
  pass("cancelling the confirmation changes nothing");
  await page.click("#clear");
  await page.waitForSelector("#confirm-dialog[open]", { timeout: 2000 });
  await page.click("#confirm-ok");
  await within(page, "clearing from the console empties the table", 2000, () =>
    document.querySelectorAll("#rows-table tbody tr").length === 0 &&
    document.getElementById("row-count").dataset.rows === "0");
  const after = await stats("orders");
  if (after.row_count !== 0 || after.epoch !== 1) throw new Error(`the server still has rows: ${JSON.stringify(after)}`);
  pass("the server cleared the query", `epoch ${after.epoch}`);
  // Upstream re-bootstraps: the cleared page follows the new epoch.
  await ingest("orders", [line("orders", 1, [add(7, { item: "limes", qty: 1 })])]);
  await within(page, "after the clear the table follows the new epoch", WITHIN_MS, () =>
    document.querySelector('#rows-table tr[data-signature="7"]') !== null);

  // 5. The token never travelled in a URL, and the page logged no script or CSP error.
  const leaked = urls.filter((u) => u.includes(adminToken));
  if (leaked.length) throw new Error(`the token appeared in a URL: ${leaked[0]}`);
  pass("the token never appears in a URL", `${urls.length} requests`);
  if (problems.length) throw new Error(`the page reported errors: ${problems.join("; ")}`);
  pass("no script, CSP or console errors");

  // 6. Phone width: the page still lays out (no horizontal overflow of the page itself).
  await page.setViewport({ width: 390, height: 844 });
  await page.goto(`${url}/ui#/`, { waitUntil: "domcontentloaded" });
  await within(page, "the queries page renders at phone width", 5000, () =>
    document.querySelectorAll("#queries-table tbody tr").length === 2 &&
    document.documentElement.scrollWidth <= window.innerWidth);
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
if (failed) {
  console.log(`not ok - ${failed.message}`);
  for (const p of pageProblems) console.log(`# ${p}`);
  console.log(`browser test failed after ${results.length} checks`);
  process.exit(1);
}
console.log(`browser test: all ${results.length} checks ok`);
