// pirouter's dashboard: fetches /ui/api/* with the client key (if the daemon asks for one) and
// renders the panels; the live table follows /ui/api/live (server-sent events read with fetch,
// which, unlike EventSource, can send the key).
"use strict";

const KEY = "pirouter-key";
let windowQuery = "window=24h";
let chart = null;
let liveAbort = null;
let liveSeen = 0;
window.pirouterLiveSeen = () => liveSeen;
let lastSeries = null;

const $ = (id) => document.getElementById(id);

function headers() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (response.status === 401) {
    throw new Error("key");
  }
  if (!response.ok) {
    throw new Error("HTTP " + response.status);
  }
  return response.json();
}

function money(v) {
  if (v === null || v === undefined) return "-";
  if (v === 0) return "$0";
  if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
  const digits = Math.max(2, 1 - Math.floor(Math.log10(Math.abs(v))));
  return "$" + v.toFixed(Math.min(digits, 10));
}

function pct(v) {
  return v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%";
}

function ms(v) {
  return v === null || v === undefined ? "-" : Math.round(v).toString();
}

function cell(row, text, cls) {
  const td = document.createElement(row.parentElement && row.parentElement.tagName === "THEAD" ? "th" : "td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function table(el, head, rows, numeric) {
  el.replaceChildren();
  const thead = el.createTHead();
  const hr = thead.insertRow();
  head.forEach((h, i) => {
    const th = document.createElement("th");
    th.textContent = h;
    if (numeric.includes(i)) th.className = "num";
    hr.appendChild(th);
  });
  const body = el.createTBody();
  if (!rows.length) {
    const r = body.insertRow();
    const td = cell(r, "no requests yet", "muted");
    td.colSpan = head.length;
  }
  for (const values of rows) {
    const r = body.insertRow();
    values.forEach((v, i) => cell(r, v, numeric.includes(i) ? "num" : ""));
  }
}

function histogram(el, h) {
  el.replaceChildren();
  const p = document.createElement("p");
  p.className = "percentiles";
  p.textContent = h.n ? `p50 ${ms(h.p50)} ms · p95 ${ms(h.p95)} ms · p99 ${ms(h.p99)} ms · ${h.n} requests` : "no requests yet";
  el.appendChild(p);
  const top = Math.max(1, ...h.counts);
  h.counts.forEach((count, i) => {
    if (!count) return;
    const row = document.createElement("div");
    row.className = "bar";
    const label = document.createElement("span");
    const lo = i === 0 ? 0 : h.edges_ms[i - 1];
    label.textContent = i < h.edges_ms.length ? `≤ ${h.edges_ms[i]} ms` : `> ${lo} ms`;
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * count / top).toFixed(1) + "%";
    const n = document.createElement("span");
    n.className = "count";
    n.textContent = count;
    row.append(label, fill, n);
    el.appendChild(row);
  });
}

function drawChart(series) {
  lastSeries = series;
  const el = $("chart");
  const xs = series.requests.map((_, i) => series.start + i * series.step_s);
  const spent = [];
  const base = [];
  let s = 0, b = 0;
  series.cost_usd.forEach((v, i) => {
    s += v;
    spent.push(s);
    if (series.baseline_usd) {
      b += series.baseline_usd[i];
      base.push(b);
    }
  });
  const data = [xs, spent];
  const lines = [{}, { label: "spent (cumulative $)", stroke: "#2563eb", width: 2 }];
  if (series.baseline_usd) {
    data.push(base);
    lines.push({ label: "on the baseline ($)", stroke: "#9ca3af", width: 2, dash: [6, 4] });
  }
  const width = Math.max(240, (el.parentElement.clientWidth || 600) - 24);
  if (chart) chart.destroy();
  chart = new uPlot({ width, height: 220, series: lines, axes: [{}, { size: 70 }] }, data, el);
}

async function refresh() {
  let page;
  try {
    page = await api("/ui/api/summary?" + windowQuery);
  } catch (e) {
    if (e.message === "key") return askKey(sessionStorage.getItem(KEY) ? "that key was refused" : "");
    $("keyerror").textContent = String(e);
    return;
  }
  $("keyform").hidden = true;
  $("board").hidden = false;
  const st = page.stats;
  const notes = [];
  if (page.cut) notes.push(st.window);
  if (page.rolled_up) notes.push("summed by the hour; percentiles within 5%");
  $("windownote").textContent = notes.length ? "(" + notes.join("; ") + ")" : "";
  $("requests").textContent = st.requests;
  $("success").textContent = pct(st.success_rate);
  $("escalated").textContent = pct(st.escalation_rate);
  $("cost").textContent = money(st.cost_usd);
  $("baselinename").textContent = st.baseline ? st.baseline.alias : "baseline";
  $("baseline").textContent = st.baseline ? money(st.baseline.cost_usd) : "-";
  $("saved").textContent = st.baseline ? money(st.savings_usd) + (st.savings_pct === null ? "" : ` (${st.savings_pct.toFixed(1)}%)`) : "-";
  table($("bymodel"), ["model", "reqs", "cost", "p50 ms", "p95 ms", "escalated", "errors"],
    st.groups.map((g) => [g.key, g.requests, money(g.cost_usd), ms(g.p50_ms), ms(g.p95_ms), g.escalated, g.errors]), [1, 2, 3, 4, 5, 6]);
  table($("byrule"), ["rule", "reqs"], page.by_rule.map((g) => [g.key, g.requests]), [1]);
  table($("byclient"), ["client", "reqs"], page.by_client.map((g) => [g.key, g.requests]), [1]);
  table($("bykey"), ["key", "reqs"], page.by_key.map((g) => [g.key, g.requests]), [1]);
  table($("byprotocol"), ["protocol", "reqs"], page.by_protocol.map((g) => [g.key, g.requests]), [1]);
  table($("flow"), ["from", "to", "why", "reqs"], page.escalations.map((f) => [f.from, f.to, f.why, f.requests]), [3]);
  histogram($("latency"), page.latency);
  histogram($("ttft"), page.ttft);
  histogram($("overhead"), page.overhead);
  drawChart(page.series);
  $("budgets").textContent = page.budgets.map((b) =>
    `${b.budget}: ${money(b.spent_usd)} of ${money(b.limit_usd)} (${b.percent.toFixed(1)}%)${b.spent_usd >= b.limit_usd ? " SPENT" : ""}`).join(" · ");
  await showState();
  if (!liveAbort) startLive();
}

async function showState() {
  let s;
  try {
    s = await api("/ui/api/state");
  } catch (e) {
    return;
  }
  const el = $("state");
  el.replaceChildren();
  const cooling = Object.entries(s.models || {}).filter(([, m]) => m.cooling_s || m.state === "cooling");
  const shared = [
    ["models", s.catalog.join(", ")],
    ["cooling", cooling.length ? cooling.map(([a]) => a).join(", ") : "none"],
  ];
  // a client key sees its own requests only, and nothing of the daemon's other clients
  const lines = s.scope !== null && s.scope !== undefined ? [
    ["seen as", `client key ${s.scope}: your own requests only`],
    ...shared,
  ] : [
    ["config", `${s.config} (loaded ${new Date(s.config_loaded_at * 1000).toLocaleString()})`],
    ...shared,
    ["keys resting", Object.keys(s.keys).length ? JSON.stringify(s.keys) : "none"],
    ["sessions pinned", s.sessions],
    ["ledger", s.ledger.failing ? `failing: ${s.ledger.last_error || ""}` : `${s.ledger.path}, ${s.ledger.written} rows written, backlog ${s.ledger.backlog}`],
    ["served", `${s.requests} requests since start, ${s.in_flight} in flight`],
  ];
  const dl = document.createElement("dl");
  for (const [k, v] of lines) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
  el.appendChild(dl);
}

function liveRow(r, atTop) {
  const body = $("live").tBodies[0];
  const row = document.createElement("tr");
  row.className = "request";
  row.dataset.id = r.id;
  const when = new Date(r.ts * 1000).toLocaleTimeString();
  [[when], [r.status], [r.rule || "-"], [r.model || "-"], [r.client], [r.input_tokens, "num"], [r.output_tokens, "num"], [money(r.cost_usd), "num"], [ms(r.latency_ms), "num"]]
    .forEach(([v, c]) => cell(row, v, c));
  const detail = document.createElement("tr");
  detail.className = "detail";
  detail.hidden = true;
  const td = document.createElement("td");
  td.colSpan = 9;
  const attempts = r.attempts.map((a) => `${a.alias} (${a.provider}/${a.model_id}): ${a.outcome}` +
    `${a.http_status ? " " + a.http_status : ""}, in ${a.input_tokens} out ${a.output_tokens}, ${money(a.cost_usd)}, ${ms(a.latency_ms)} ms` +
    `${a.ttft_ms ? ", first token " + ms(a.ttft_ms) + " ms" : ""}${a.error ? " — " + a.error : ""}`);
  const parts = [`request ${r.id}`, `protocol ${r.protocol}, session ${r.session || "-"}, pirouter's own time ${r.overhead_ms} ms`, ...attempts];
  if (r.prompt) parts.push("prompt: " + r.prompt);
  if (r.answer) parts.push("answer: " + r.answer);
  for (const p of parts) {
    const line = document.createElement("div");
    line.textContent = p;
    td.appendChild(line);
  }
  detail.appendChild(td);
  row.addEventListener("click", () => { detail.hidden = !detail.hidden; });
  if (atTop) {
    body.prepend(row, detail);
  } else {
    body.append(row, detail);
  }
  while (body.rows.length > 400) body.deleteRow(-1);
}

async function startLive() {
  try {
    const first = await api("/ui/api/requests");
    $("live").tBodies[0].replaceChildren();
    first.requests.forEach((r) => liveRow(r, false));
  } catch (e) {
    return;
  }
  liveAbort = new AbortController();
  try {
    const response = await fetch("/ui/api/live", { headers: headers(), signal: liveAbort.signal });
    if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
    $("livestate").textContent = "following";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let at;
      while ((at = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        for (const line of event.split("\n")) {
          if (line.startsWith("data: ")) {
            liveRow(JSON.parse(line.slice(6)), true);
            liveSeen += 1; // read by the bench's browser watcher (bench/browser_watch.py)
          }
        }
      }
    }
  } catch (e) {
    // the stream ended (daemon stopped, window closed)
  }
  $("livestate").textContent = "disconnected";
  liveAbort = null;
}

function askKey(message) {
  $("board").hidden = true;
  $("keyform").hidden = false;
  $("keyerror").textContent = message || "";
  $("key").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    refresh();
  });
  for (const button of document.querySelectorAll("#windows button")) {
    button.addEventListener("click", () => {
      document.querySelectorAll("#windows button").forEach((b) => b.classList.remove("on"));
      button.classList.add("on");
      windowQuery = "window=" + button.dataset.window;
      refresh();
    });
  }
  $("since").addEventListener("change", () => {
    if (!$("since").value) return;
    document.querySelectorAll("#windows button").forEach((b) => b.classList.remove("on"));
    windowQuery = "since=" + encodeURIComponent($("since").value);
    refresh();
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (lastSeries) drawChart(lastSeries); }, 100);
  });
  refresh();
  setInterval(refresh, 30000);
});
