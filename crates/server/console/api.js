// The console's access to the server: the bearer token (kept in sessionStorage, asked for
// when the server answers 401), JSON and NDJSON requests, a fetch-based Server-Sent Events
// reader (EventSource cannot send an Authorization header, and a token in a URL would end up
// in logs), the confirmation dialog and a small DOM builder.

const TOKEN_KEY = "liveresults.token";

/** An HTTP answer the console does not treat as success; `problem` is the RFC 9457 body. */
export class HttpError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let pendingPrompt = null;

/** Shows the token dialog (once, however many requests were refused) until one is entered. */
export function askToken(why) {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.textContent = why || "";
  input.value = "";
  pendingPrompt = new Promise((resolve) => {
    const submit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) {
        error.textContent = "Enter a token.";
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, value);
      form.removeEventListener("submit", submit);
      dialog.close();
      pendingPrompt = null;
      document.getElementById("forget-token").hidden = false;
      resolve(value);
    };
    form.addEventListener("submit", submit);
    // Escape would close the dialog with nothing entered: keep asking.
    dialog.addEventListener("cancel", (e) => e.preventDefault(), { once: true });
  });
  dialog.showModal();
  input.focus();
  return pendingPrompt;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * fetch() with the token; a 401 asks for a (new) token and retries. Other non-2xx answers
 * throw an HttpError unless `accept` lists their status.
 */
export async function request(path, options = {}, accept = []) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const t = token();
    if (t) headers.set("Authorization", `Bearer ${t}`);
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status === 401) {
      const problem = await problemOf(response);
      await askToken(t ? "That token was refused: " + ((problem && problem.detail) || "401") : "");
      continue;
    }
    if (!response.ok && !accept.includes(response.status)) {
      throw new HttpError(response.status, await problemOf(response));
    }
    return response;
  }
}

export async function getJson(path, options) {
  const response = await request(path, options);
  return response.json();
}

export function queryPath(id) {
  return `/queries/${encodeURIComponent(id)}`;
}

/**
 * Reads a snapshot: its header line, then at most `maxRows` rows (the rest is not read:
 * the body is cancelled, so a 10M-row query never fills the tab).
 */
export async function readSnapshot(id, maxRows, signal) {
  const response = await request(`${queryPath(id)}/snapshot`, { signal });
  let header = null;
  const rows = [];
  let truncated = false;
  for await (const line of lines(response.body, signal)) {
    if (!line) continue;
    const value = JSON.parse(line);
    if (!header) {
      header = value;
      continue;
    }
    if (rows.length >= maxRows) {
      truncated = true;
      break;
    }
    rows.push(value);
  }
  if (!header) throw new Error("the snapshot ended before its header");
  return { header, rows, truncated };
}

/** The lines of a byte stream; cancelling the iteration cancels the stream. */
async function* lines(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      if (signal && signal.aborted) return;
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let at;
      while ((at = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, at).replace(/\r$/, "");
        buffer = buffer.slice(at + 1);
        yield line;
      }
    }
    buffer += decoder.decode();
    if (buffer) yield buffer;
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Follows `path` as Server-Sent Events over fetch (so the token travels in a header), calling
 * `onEvent(name, data)` per event until the stream ends (resolves) or fails (throws; a 409
 * must-refetch is an HttpError with status 409). `signal` aborts it.
 */
export async function readSse(path, onEvent, signal) {
  const response = await request(path, { signal, headers: { Accept: "text/event-stream" } });
  let name = "message";
  let data = [];
  for await (const line of lines(response.body, signal)) {
    if (line === "") {
      if (data.length) onEvent(name, data.join("\n"));
      name = "message";
      data = [];
    } else if (line.startsWith(":")) {
      // keep-alive comment
    } else {
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
  }
}

/** The confirmation dialog: resolves true when the operator confirms. */
export function confirmAction(title, text, okLabel) {
  const dialog = document.getElementById("confirm-dialog");
  const form = document.getElementById("confirm-form");
  const cancel = document.getElementById("confirm-cancel");
  const ok = document.getElementById("confirm-ok");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  ok.textContent = okLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (answer) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      if (opener && opener.focus) opener.focus();
      resolve(answer);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      done(true);
    };
    const onCancel = () => done(false);
    const onClose = () => done(false);
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    // The safe choice has the focus: Enter on an unread dialog cancels.
    cancel.focus();
  });
}

/** A DOM element: `h("td", {class: "num"}, "42")`. Text is always text, never markup. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

/** A sparkline of `values` (at most the last `width / 2`), labelled for screen readers. */
export function sparkline(values, label, width = 120, height = 24) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.classList.add("spark");
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values
    .map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`)
    .join(" ");
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points || `0,${height - 2} ${width},${height - 2}`);
  svg.append(line);
  return svg;
}

export function formatTime(ms) {
  if (ms === null || ms === undefined) return "—";
  const ago = Math.max(0, Date.now() - ms);
  if (ago < 1000) return "just now";
  if (ago < 60_000) return `${Math.round(ago / 1000)} s ago`;
  if (ago < 3_600_000) return `${Math.round(ago / 60_000)} min ago`;
  return new Date(ms).toLocaleString();
}

export function show(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
