// One query's page: its rows as a table, loaded from the snapshot and kept current from the
// change feed (SSE read over fetch), rows flashing as they change; pause, filter, row count;
// the feed's recent commits; clear and resume behind a confirmation. A 409 must-refetch (the
// query was cleared or reset, or the reader fell behind the outbox) reloads the snapshot.

import {
  HttpError, confirmAction, getJson, h, queryPath, readSnapshot, readSse, request, show,
} from "./api.js";

/** Rows the table holds at most; a larger query shows its first rows and says so. */
const MAX_ROWS = 5000;
/** Columns shown at most (row keys beyond them are left out). */
const MAX_COLUMNS = 40;
/** Commits listed in the recent-commits panel. */
const MAX_COMMITS = 50;
const FLASH_MS = 1200;

export function queryPage(main, ctx, id) {
  const rows = new Map(); // signature (string) -> { row, tr }
  const columns = [];
  const commits = [];
  let offset = null;
  let paused = false;
  let filter = "";
  let truncated = false;
  let info = null;
  let gone = false;
  let controller = new AbortController();
  /** Bumped by every follow(): an older loop sees it and ends, so only one feed runs. */
  let generation = 0;

  const title = h("h1", {}, "Query ", h("span", { class: "mono" }, id));
  const state = h("dl", { class: "facts" });
  const notice = h("p", { class: "notice", role: "status", "aria-live": "polite" });
  const count = h("p", { class: "count", id: "row-count", "aria-live": "polite" });
  const pauseButton = h("button", { type: "button", id: "pause", "aria-pressed": "false", onclick: togglePause }, "Pause");
  const clearButton = h("button", { type: "button", id: "clear", class: "danger", onclick: clear }, "Clear…");
  const resumeButton = h("button", { type: "button", id: "resume", onclick: resume }, "Resume…");
  const filterInput = h("input", {
    id: "rows-filter",
    type: "search",
    placeholder: "any value",
    oninput: (e) => {
      filter = e.target.value.trim().toLowerCase();
      for (const entry of rows.values()) applyFilter(entry);
      renderCount();
    },
  });
  const headRow = h("tr");
  const body = h("tbody");
  const table = h("table", { class: "data", id: "rows-table" },
    h("caption", { class: "visually-hidden" }, `Rows of ${id}, kept current from the change feed`),
    h("thead", {}, headRow), body);
  const commitList = h("ol", { id: "commits", class: "commits", reversed: true });

  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Queries")),
    title,
    state,
    h("div", { class: "toolbar" },
      pauseButton,
      h("label", { for: "rows-filter" }, "Filter rows"), filterInput,
      h("span", { class: "spacer" }),
      resumeButton, clearButton,
    ),
    notice,
    count,
    h("div", { class: "split" },
      h("section", { "aria-labelledby": "rows-title", class: "rows" },
        h("h2", { id: "rows-title" }, "Rows"),
        h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Rows table" }, table)),
      h("section", { "aria-labelledby": "commits-title", class: "side" },
        h("h2", { id: "commits-title" }, "Recent commits"),
        commitList)),
  );

  function renderHead() {
    headRow.replaceChildren(
      h("th", { scope: "col", class: "num" }, "signature"),
      ...columns.map((c) => h("th", { scope: "col" }, c)),
    );
  }

  function noteColumns(row) {
    if (!row || typeof row !== "object") return false;
    let added = false;
    for (const key of Object.keys(row)) {
      if (columns.length >= MAX_COLUMNS) break;
      if (!columns.includes(key)) {
        columns.push(key);
        added = true;
      }
    }
    return added;
  }

  function cellsOf(signature, row) {
    return [
      h("th", { scope: "row", class: "num mono" }, signature),
      ...columns.map((c) => h("td", {}, show(row && typeof row === "object" ? row[c] : row))),
    ];
  }

  function applyFilter(entry) {
    entry.tr.hidden = !!filter && !entry.text.includes(filter);
  }

  function flash(tr, kind) {
    tr.classList.remove("flash-upsert", "flash-delete");
    void tr.offsetWidth; // restart the animation
    tr.classList.add(kind);
  }

  function upsert(signature, row, animate) {
    const key = String(signature);
    if (noteColumns(row)) {
      renderHead();
      for (const [sig, e] of rows) e.tr.replaceChildren(...cellsOf(sig, e.row));
    }
    let entry = rows.get(key);
    if (!entry) {
      if (rows.size >= MAX_ROWS) {
        truncated = true;
        return;
      }
      entry = { row, tr: h("tr", { "data-signature": key }), text: "" };
      rows.set(key, entry);
      body.append(entry.tr);
    }
    entry.row = row;
    entry.text = JSON.stringify(row).toLowerCase();
    entry.tr.classList.remove("leaving");
    entry.tr.replaceChildren(...cellsOf(key, row));
    applyFilter(entry);
    if (animate) flash(entry.tr, "flash-upsert");
  }

  function remove(signature) {
    const key = String(signature);
    const entry = rows.get(key);
    if (!entry) return;
    rows.delete(key);
    entry.tr.classList.add("leaving");
    flash(entry.tr, "flash-delete");
    setTimeout(() => entry.tr.remove(), FLASH_MS / 2);
  }

  function renderCount() {
    const visible = filter ? Array.from(rows.values()).filter((e) => !e.tr.hidden).length : rows.size;
    let text = `${rows.size} ${rows.size === 1 ? "row" : "rows"}`;
    if (filter) text += `, ${visible} match the filter`;
    if (truncated) text += ` (the table holds the first ${MAX_ROWS}; the query has more)`;
    count.textContent = text;
    count.dataset.rows = String(rows.size);
  }

  function renderFacts() {
    if (!info) return;
    const facts = [
      ["State", info.state === "stopped" ? `stopped: ${info.stop_reason || ""}` : info.awaiting_bootstrap ? "awaiting bootstrap" : info.state],
      ["Sequence", show(info.sequence)],
      ["Rows", truncated ? show(info.row_count) : String(rows.size)],
      ["Epoch", show(info.epoch)],
      ["Offset", show(offset)],
      ["Feed", paused ? "paused" : "live"],
    ];
    state.replaceChildren(...facts.map(([k, v]) => h("div", { class: k === "Offset" ? "wide" : "" },
      h("dt", {}, k),
      h("dd", { class: k === "State" && info.state === "stopped" ? "bad-text" : k === "Offset" ? "mono small" : "" }, v))));
  }

  function noteCommit(message) {
    const changes = (message.events || []).reduce((n, e) => n + (e.changes ? e.changes.length : 0), 0);
    const signals = (message.events || []).filter((e) => e.type === "control").map((e) => e.signal);
    const span = message.first_sequence === message.sequence ? `${message.sequence}` : `${message.first_sequence}–${message.sequence}`;
    commits.unshift({ span, epoch: message.epoch, changes, signals, at: Date.now() });
    if (commits.length > MAX_COMMITS) commits.length = MAX_COMMITS;
    commitList.replaceChildren(...commits.map((c) => h("li", {},
      h("span", { class: "mono" }, `seq ${c.span}`), ` · epoch ${c.epoch} · ${c.changes} ${c.changes === 1 ? "change" : "changes"}`,
      c.signals.length ? ` · ${c.signals.join(", ")}` : "",
      h("span", { class: "muted" }, ` · ${new Date(c.at).toLocaleTimeString()}`))));
  }

  function apply(message) {
    for (const event of message.events || []) {
      if (event.type !== "rows") continue;
      for (const change of event.changes || []) {
        if (change.op === "upsert") upsert(change.signature, change.row, true);
        else if (change.op === "delete") remove(change.signature);
      }
    }
    noteCommit(message);
    offset = message.offset;
    // The feed is ahead of the 2-second stats poll: show its position at once.
    if (info && message.epoch === info.epoch) info.sequence = message.sequence;
  }

  async function loadSnapshot() {
    const snapshot = await readSnapshot(id, MAX_ROWS, controller.signal);
    rows.clear();
    columns.length = 0;
    body.replaceChildren();
    truncated = snapshot.truncated;
    for (const line of snapshot.rows) noteColumns(line.row);
    renderHead();
    for (const line of snapshot.rows) upsert(line.signature, line.row, false);
    offset = snapshot.header.offset;
    renderCount();
    renderFacts();
  }

  /** Snapshot, then the feed from its offset, until the page is left or the feed paused. */
  async function follow() {
    const mine = ++generation;
    let delay = 250;
    let needSnapshot = offset === null;
    while (!gone && !paused && mine === generation) {
      const signal = controller.signal;
      try {
        if (needSnapshot) {
          await loadSnapshot();
          needSnapshot = false;
        }
        const path = `${queryPath(id)}/changes?offset=${encodeURIComponent(offset)}&live=sse`;
        await readSse(path, (name, data) => {
          if (name === "data") {
            for (const message of JSON.parse(data)) apply(message);
            renderCount();
            renderFacts();
          } else if (name === "control") {
            const control = JSON.parse(data);
            if (control.streamNextOffset) offset = control.streamNextOffset;
          }
        }, signal);
        delay = 250;
        ctx.connection("");
      } catch (e) {
        if (gone || paused || signal.aborted || mine !== generation) return;
        if (e instanceof HttpError && e.status === 409) {
          notice.textContent = "The feed asked for a fresh start (the query was cleared or reset): snapshot reloaded.";
          needSnapshot = true;
          continue;
        }
        if (e instanceof HttpError && e.status === 404) {
          notice.textContent = "This query does not exist (never written, or purged).";
          rows.clear();
          body.replaceChildren();
          renderCount();
          return;
        }
        ctx.connection(`Change feed interrupted (${e.message}); retrying`);
        delay = Math.min(delay * 2, 5000);
      }
      // The stream ended (its lifetime, a clear, a server restart): reconnect from `offset`.
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  function togglePause() {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume feed" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    notice.textContent = paused ? "Paused: the table is frozen; resuming catches up from where it stopped." : "";
    renderFacts();
    if (paused) {
      controller.abort();
    } else {
      controller = new AbortController();
      follow();
    }
  }

  async function clear() {
    const ok = await confirmAction(`Clear ${id}?`,
      "Every row, the change feed and the checkpoints of this query are deleted and its epoch increments. Upstream must re-bootstrap it. This needs the admin role.",
      "Clear query");
    if (!ok) return;
    try {
      info = await (await request(queryPath(id), { method: "DELETE" })).json();
      notice.textContent = `Cleared: epoch ${info.epoch}.`;
      await restart();
    } catch (e) {
      notice.textContent = `Clear failed: ${e.message}`;
    }
  }

  async function resume() {
    const ok = await confirmAction(`Resume ${id}?`,
      "A stopped query restarts where it stopped, keeping its rows; do this once the cause is gone. This needs the admin role.",
      "Resume query");
    if (!ok) return;
    try {
      info = await (await request(`${queryPath(id)}/resume`, { method: "POST" })).json();
      notice.textContent = `Resumed: state ${info.state}.`;
      renderFacts();
    } catch (e) {
      notice.textContent = `Resume failed: ${e.message}`;
    }
  }

  /** Drops the feed and starts again from the snapshot. */
  async function restart() {
    controller.abort();
    controller = new AbortController();
    offset = null;
    if (!paused) follow();
  }

  let timer = null;
  async function pollInfo() {
    try {
      info = await getJson(queryPath(id));
      renderFacts();
      clearButton.disabled = false;
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) notice.textContent = "This query does not exist (never written, or purged).";
    }
    if (!gone) timer = setTimeout(pollInfo, 2000);
  }

  renderHead();
  renderCount();
  pollInfo();
  follow();
  return () => {
    gone = true;
    controller.abort();
    clearTimeout(timer);
  };
}
