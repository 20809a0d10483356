// The queries page: every query's state, position, reaction lag, last commit and commit rate,
// polled twice a second from GET /ui/api/queries; sortable, filterable, stopped queries first
// to the eye (a red row and a count in the summary).

import { getJson, h, sparkline, formatTime, show } from "./api.js";

/** Twice a second: a commit shows within a second, at one small request per console. */
const POLL_MS = 500;
/** Points kept per sparkline: a minute at two polls a second. */
const HISTORY = 120;
/** Queries asked for per poll (the endpoint's cap is higher; the summary says what is hidden). */
const LIMIT = 500;

const COLUMNS = [
  { key: "query_id", label: "Query", sort: (q) => q.query_id },
  { key: "state", label: "State", sort: (q) => stateText(q) },
  { key: "sequence", label: "Sequence", sort: (q) => q.sequence ?? -1, num: true },
  { key: "row_count", label: "Rows", sort: (q) => q.row_count, num: true },
  { key: "epoch", label: "Epoch", sort: (q) => q.epoch, num: true },
  { key: "lag", label: "Reaction lag", sort: (q) => maxLag(q), num: true },
  { key: "last_commit_ms", label: "Last commit", sort: (q) => q.last_commit_ms ?? 0 },
  { key: "rate", label: "Commits/s", sort: () => 0, nosort: true },
];

function stateText(q) {
  if (q.state === "stopped") return `stopped: ${q.stop_reason || "unknown reason"}`;
  if (q.awaiting_bootstrap) return "awaiting bootstrap";
  return q.state || "running";
}

function maxLag(q) {
  return Math.max(0, ...(q.reactions || []).map((r) => r.lag || 0));
}

/** Commits per second between polls, per query: a bounded ring of the last HISTORY rates. */
const history = new Map();

function recordRate(q, now) {
  let h = history.get(q.query_id);
  if (!h) {
    h = { commits: q.commits ?? 0, at: now, rates: [] };
    history.set(q.query_id, h);
    return h.rates;
  }
  const dt = (now - h.at) / 1000;
  const commits = q.commits ?? 0;
  if (dt > 0) {
    h.rates.push(Math.max(0, commits - h.commits) / dt);
    if (h.rates.length > HISTORY) h.rates.splice(0, h.rates.length - HISTORY);
  }
  h.commits = commits;
  h.at = now;
  return h.rates;
}

export function queriesPage(main, ctx) {
  let sortKey = "query_id";
  let ascending = true;
  let filter = "";
  let stoppedOnly = false;
  let latest = [];
  let overview = null;
  const rows = new Map();

  const summary = h("p", { class: "summary", role: "status", "aria-live": "polite" }, "Loading…");
  const filterInput = h("input", {
    id: "queries-filter",
    type: "search",
    placeholder: "id or state",
    oninput: (e) => {
      filter = e.target.value.trim().toLowerCase();
      render();
    },
  });
  const stoppedBox = h("input", {
    id: "queries-stopped",
    type: "checkbox",
    onchange: (e) => {
      stoppedOnly = e.target.checked;
      render();
    },
  });
  const headRow = h("tr");
  const body = h("tbody");
  const table = h(
    "table",
    { class: "data", id: "queries-table" },
    h("caption", { class: "visually-hidden" }, "Queries, updated twice a second"),
    h("thead", {}, headRow),
    body,
  );
  for (const col of COLUMNS) {
    const th = h("th", { scope: "col", class: col.num ? "num" : "" });
    if (col.nosort) {
      th.append(col.label);
    } else {
      th.append(
        h("button", {
          type: "button",
          class: "sort",
          "data-key": col.key,
          onclick: () => {
            ascending = sortKey === col.key ? !ascending : true;
            sortKey = col.key;
            render();
          },
        }, col.label),
      );
    }
    headRow.append(th);
  }
  main.replaceChildren(
    h("h1", {}, "Queries"),
    h("div", { class: "toolbar" },
      h("label", { for: "queries-filter" }, "Filter"), filterInput,
      h("label", { class: "check" }, stoppedBox, " stopped only"),
    ),
    summary,
    h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Queries table" }, table),
  );

  function rowFor(q) {
    let entry = rows.get(q.query_id);
    if (!entry) {
      const link = h("a", { href: `#/query/${encodeURIComponent(q.query_id)}` }, q.query_id);
      const cells = COLUMNS.map((col) => h(col.key === "query_id" ? "th" : "td", {
        class: col.num ? "num" : "",
        "data-col": col.key,
        ...(col.key === "query_id" ? { scope: "row" } : {}),
      }));
      cells[0].append(link);
      entry = { tr: h("tr", { "data-query": q.query_id }, cells), cells };
      rows.set(q.query_id, entry);
    }
    return entry;
  }

  function fill(entry, q) {
    const [, state, seq, count, epoch, lag, last, rate] = entry.cells;
    const text = stateText(q);
    state.replaceChildren(h("span", { class: `badge ${q.state === "stopped" ? "bad" : q.awaiting_bootstrap ? "warn" : "ok"}` }, text));
    seq.textContent = show(q.sequence);
    count.textContent = show(q.row_count);
    epoch.textContent = show(q.epoch);
    const reactions = q.reactions || [];
    // A few reactions are listed by name; more show the largest lag (every one on hover).
    lag.textContent = !reactions.length ? "—"
      : reactions.length <= 3 ? reactions.map((r) => `${r.reaction} ${r.lag}`).join(", ")
      : `max ${maxLag(q)}`;
    lag.title = reactions.map((r) => `${r.reaction}: ${r.lag}${r.failure ? ` (failed: ${r.failure})` : ""}`).join("\n");
    if (reactions.some((r) => r.failure)) lag.classList.add("bad-text");
    else lag.classList.remove("bad-text");
    last.textContent = formatTime(q.last_commit_ms);
    const rates = history.get(q.query_id)?.rates || [];
    const now = rates.length ? rates[rates.length - 1] : 0;
    rate.replaceChildren(
      sparkline(rates, `${now.toFixed(1)} commits per second over the last ${Math.round(rates.length * POLL_MS / 1000)} seconds`),
      h("span", { class: "rate" }, now.toFixed(1)),
    );
    entry.tr.classList.toggle("stopped", q.state === "stopped");
  }

  function render() {
    const col = COLUMNS.find((c) => c.key === sortKey) || COLUMNS[0];
    const shown = latest.filter((q) => {
      if (stoppedOnly && q.state !== "stopped") return false;
      if (!filter) return true;
      return q.query_id.toLowerCase().includes(filter) || stateText(q).toLowerCase().includes(filter);
    });
    shown.sort((a, b) => {
      const x = col.sort(a);
      const y = col.sort(b);
      const c = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? c : -c;
    });
    for (const th of headRow.children) {
      const button = th.querySelector("button");
      const key = button && button.dataset.key;
      if (key === sortKey) th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    const wanted = shown.map((q) => {
      const entry = rowFor(q);
      fill(entry, q);
      return entry.tr;
    });
    // Move rows only when the order changed, so a focused link keeps its focus.
    const current = Array.from(body.children);
    if (current.length !== wanted.length || current.some((tr, i) => tr !== wanted[i])) {
      body.replaceChildren(...wanted);
    }
    if (overview) {
      const stopped = overview.stopped;
      const parts = [`${overview.total} ${overview.total === 1 ? "query" : "queries"}`];
      if (stopped) parts.push(`${stopped} stopped`);
      if (overview.total > latest.length) parts.push(`showing the first ${latest.length}`);
      if (shown.length !== latest.length) parts.push(`${shown.length} match the filter`);
      summary.textContent = parts.join(" · ");
      summary.classList.toggle("bad-text", stopped > 0);
    }
  }

  let stopped = false;
  let timer = null;
  async function poll() {
    const started = performance.now();
    try {
      overview = await getJson(`/ui/api/queries?limit=${LIMIT}`);
      const now = performance.now();
      latest = overview.queries;
      for (const q of latest) recordRate(q, now);
      const known = new Set(latest.map((q) => q.query_id));
      for (const id of rows.keys()) if (!known.has(id)) rows.delete(id);
      for (const id of history.keys()) if (!known.has(id)) history.delete(id);
      render();
      ctx.connection("");
    } catch (e) {
      ctx.connection(`Cannot read the queries: ${e.message}`);
    }
    // A steady cadence: the request's own time comes out of the wait, not on top of it.
    if (!stopped) timer = setTimeout(poll, Math.max(50, POLL_MS - (performance.now() - started)));
  }
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
