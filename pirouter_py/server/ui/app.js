// pirouter's dashboard: fetches /ui/api/* with the client key (if the daemon asks for one) and
// renders the panels; the requests table follows /ui/api/live (server-sent events read with
// fetch, which, unlike EventSource, can send the key). The window and the filters live in the
// page's URL (?window=24h&model=cheap...), so a reload or a shared link shows the same view.
//
// Each endpoint's body and items are read through one variable name, as the server types them
// in reports/dashboard_api.py (tests/test_dashboard_fields.py checks every field read here):
//   /ui/api/state     s (StateBody), c (Cooling), k (RestingKey), l (Limit), b (Budget),
//                     led (LedgerHealth: s.ledger)
//   /ui/api/requests  body (RequestsBody), r (RequestRow), a (AttemptRow)
//   /ui/api/series    ser (SeriesBody), line (SeriesLine)
//   /ui/api/learning  learn (LearningBody), m (LearnedModel)
//   /ui/api/summary   page (SummaryBody), g (Count)
"use strict";

const KEY = "pirouter-key";
const FILTERS = ["model", "status", "rule", "client", "protocol", "q"];
const WINDOWS = ["1h", "24h", "7d", "30d"];
const ROWS = 100; // the requests table's length
const view = { window: "24h", since: "", filters: {} };
let charts = {};
let lastSeries = null;
let liveAbort = null;
let liveSeen = 0;
window.pirouterLiveSeen = () => liveSeen;
let seriesTimer = null;
let scoped = false; // a client key's view: its own requests, no labels

const $ = (id) => document.getElementById(id);

function headers() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path, options) {
  const response = await fetch(path, { headers: headers(), cache: "no-store", ...(options || {}) });
  if (response.status === 401) {
    throw new Error("key");
  }
  if (!response.ok) {
    let text = "HTTP " + response.status;
    try {
      const err = await response.json();
      if (err && err.error && err.error.message) text = err.error.message;
    } catch (e) {
      // not JSON
    }
    throw new Error(text);
  }
  return response;
}

async function getJSON(path) {
  return (await api(path)).json();
}

// ---- the URL: window and filters -------------------------------------------------------------

function readURL() {
  const q = new URLSearchParams(location.search);
  view.window = WINDOWS.includes(q.get("window")) ? q.get("window") : "24h";
  view.since = q.get("since") || "";
  view.filters = {};
  for (const name of FILTERS) {
    if (q.get(name)) view.filters[name] = q.get(name);
  }
}

function windowQuery() {
  return view.since ? "since=" + encodeURIComponent(view.since) : "window=" + view.window;
}

function filterQuery() {
  return FILTERS.filter((n) => view.filters[n]).map((n) => n + "=" + encodeURIComponent(view.filters[n])).join("&");
}

function writeURL() {
  const parts = [windowQuery(), filterQuery()].filter(Boolean).join("&");
  history.replaceState(null, "", location.pathname + "?" + parts);
}

function showView() {
  document.querySelectorAll("#windows button").forEach((btn) =>
    btn.classList.toggle("on", !view.since && btn.dataset.window === view.window));
  $("since").value = view.since;
  for (const name of FILTERS) {
    const input = document.querySelector(`#filters [name="${name}"]`);
    if (input.tagName === "SELECT" && view.filters[name] && ![...input.options].some((o) => o.value === view.filters[name])) {
      input.add(new Option(view.filters[name], view.filters[name]));
    }
    input.value = view.filters[name] || "";
  }
}

// ---- small renderers ---------------------------------------------------------------------------

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

function secs(v) {
  return Math.max(0, Math.ceil(v)) + " s";
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function when(ts) {
  return new Date(ts * 1000).toLocaleString();
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function table(el, head, rows, numeric) {
  el.replaceChildren();
  const hr = el.createTHead().insertRow();
  head.forEach((h, i) => {
    const th = document.createElement("th");
    th.textContent = h;
    if (numeric.includes(i)) th.className = "num";
    hr.appendChild(th);
  });
  const tbody = el.createTBody();
  if (!rows.length) {
    const td = cell(tbody.insertRow(), "no requests yet", "muted");
    td.colSpan = head.length;
  }
  for (const values of rows) {
    const tr = tbody.insertRow();
    values.forEach((v, i) => cell(tr, v, numeric.includes(i) ? "num" : i === 0 ? "key" : ""));
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
    const bar = document.createElement("div");
    bar.className = "bar";
    const label = document.createElement("span");
    const lo = i === 0 ? 0 : h.edges_ms[i - 1];
    label.textContent = i < h.edges_ms.length ? `≤ ${h.edges_ms[i]} ms` : `> ${lo} ms`;
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * count / top).toFixed(1) + "%";
    const n = document.createElement("span");
    n.className = "count";
    n.textContent = count;
    bar.append(label, fill, n);
    el.appendChild(bar);
  });
}

function options(datalist, keys) {
  datalist.replaceChildren(...keys.map((key) => new Option(key)));
}

// ---- the state of things -----------------------------------------------------------------------

function fact(dl, label, text, cls) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = text;
  if (cls) dd.className = cls;
  dl.append(dt, dd);
  return dd;
}

async function showState() {
  let s;
  try {
    s = await getJSON("/ui/api/state");
  } catch (e) {
    return;
  }
  scoped = s.scope !== null;
  $("f-q").disabled = !s.store_prompts;
  $("f-q").placeholder = s.store_prompts ? "" : "prompts not kept";
  const models = $("f-model");
  for (const alias of s.catalog) {
    if (![...models.options].some((o) => o.value === alias)) models.add(new Option(alias, alias));
  }
  if (view.filters.model) models.value = view.filters.model;
  const dl = document.createElement("dl");
  if (s.scope !== null) fact(dl, "seen as", `client key ${s.scope}: your own requests only`);
  fact(dl, "cooling", s.cooling.length ? s.cooling.map((c) =>
    `${c.model}: ${secs(c.left_s)} left${c.down ? " (unreachable)" : ""}, ${plural(c.failures, "failure")}` +
    (c.why ? ` — ${c.why}` : "")).join(" · ") : "none", s.cooling.length ? "warn" : "ok");
  fact(dl, "models", s.catalog.join(", "));
  if (s.scope === null) {
    fact(dl, "keys resting", s.keys.length ? s.keys.map((k) =>
      `${k.provider} ${k.key}: ${secs(k.left_s)} left${k.why ? " — " + k.why : ""}`).join(" · ") : "none", s.keys.length ? "warn" : "ok");
    const near = s.limits.filter((l) => l.near);
    fact(dl, "limits", s.limits.length ? (near.length ? near : s.limits).map((l) =>
      `${l.model} ${l.kind}: ${Math.floor(l.left)} of ${l.limit} left`).join(" · ") : "none set", near.length ? "warn" : "");
    fact(dl, "budgets", s.budgets.length ? s.budgets.map((b) =>
      `${b.budget}: ${money(b.spent_usd)} of ${money(b.limit_usd)} (${b.percent.toFixed(0)}%)`).join(" · ") : "none set",
      s.budgets.some((b) => b.near) ? "warn" : "");
    const led = s.ledger; // LedgerHealth
    fact(dl, "ledger", led.failing ? `failing: ${led.last_error || "unknown error"} (${led.path})` :
      `${led.path}: ${led.written} rows written, backlog ${led.backlog}` +
      (led.spilled ? `, ${led.spilled} spilled` : "") + (led.unsaved ? `, ${led.unsaved} on no disk` : ""),
      led.failing || led.unsaved ? "bad" : "ok");
    fact(dl, "config", `${s.config}, loaded ${when(s.config_loaded_at)}`);
    fact(dl, "served", `${plural(s.requests, "request")} since ${when(s.started)}, ${s.in_flight} in flight, ` +
      `${plural(s.sessions, "session")} pinned`);
  } else {
    fact(dl, "config", `loaded ${when(s.config_loaded_at)}`);
  }
  $("state").replaceChildren(dl);
  $("stateage").textContent = "at " + new Date(s.now * 1000).toLocaleTimeString();
}

// ---- the window's panels ---------------------------------------------------------------------

async function showSummary() {
  let page;
  try {
    page = await getJSON("/ui/api/summary?" + windowQuery());
  } catch (e) {
    if (e.message === "key") return askKey(sessionStorage.getItem(KEY) ? "that key was refused" : "");
    $("keyerror").textContent = String(e.message);
    return false;
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
    st.groups.map((grp) => [grp.key, grp.requests, money(grp.cost_usd), ms(grp.p50_ms), ms(grp.p95_ms), grp.escalated, grp.errors]), [1, 2, 3, 4, 5, 6]);
  table($("byrule"), ["rule", "reqs"], page.by_rule.map((g) => [g.key, g.requests]), [1]);
  table($("byclient"), ["client key", "reqs"], page.by_client.map((g) => [g.key, g.requests]), [1]);
  table($("byapp"), ["app", "reqs"], page.by_app.map((g) => [g.key, g.requests]), [1]);
  table($("byprotocol"), ["protocol", "reqs"], page.by_protocol.map((g) => [g.key, g.requests]), [1]);
  table($("flow"), ["from", "to", "why", "reqs"], page.escalations.map((f) => [f.from, f.to, f.why, f.requests]), [3]);
  options($("rules"), page.by_rule.map((g) => g.key));
  options($("clients"), page.by_client.map((g) => g.key));
  options($("protocols"), page.by_protocol.map((g) => g.key));
  histogram($("latency"), page.latency);
  histogram($("ttft"), page.ttft);
  histogram($("overhead"), page.overhead);
  $("budgets").textContent = page.budgets.map((bud) =>
    `${bud.budget}: ${money(bud.spent_usd)} of ${money(bud.limit_usd)} (${bud.percent.toFixed(1)}%)${bud.spent_usd >= bud.limit_usd ? " SPENT" : ""}`).join(" · ");
  return true;
}

// ---- charts ------------------------------------------------------------------------------------

function cumulative(values) {
  let total = 0;
  return values.map((v) => (total += v));
}

function drawCharts(ser) {
  lastSeries = ser;
  const pick = $("chartmodel");
  const names = ser.lines.map((line) => line.model);
  const chosen = names.includes(pick.value) ? pick.value : "all";
  pick.replaceChildren(...names.map((name) => new Option(name === "all" ? "all models" : name, name)));
  pick.value = chosen;
  const line = ser.lines.find((x) => x.model === chosen);
  const xs = line.requests.map((_, i) => ser.start + i * ser.step_s);
  $("chartnote").textContent = `${ser.step_s >= 86400 ? "per day" : ser.step_s >= 3600 ? "per hour" : "per minute"}, ${xs.length} steps`;
  const specs = {
    "chart-requests": {
      data: [xs, line.requests, line.errors, line.escalated],
      series: [{}, { label: "requests", stroke: "#2563eb", width: 2 },
        { label: "errors", stroke: "#dc2626", width: 2 }, { label: "escalated", stroke: "#d97706", width: 2 }],
    },
    "chart-latency": {
      data: [xs, line.p50_ms, line.p95_ms, line.ttft_p50_ms],
      series: [{}, { label: "p50", stroke: "#2563eb", width: 2, spanGaps: true },
        { label: "p95", stroke: "#7c3aed", width: 2, spanGaps: true },
        { label: "TTFT p50", stroke: "#059669", width: 2, spanGaps: true }],
    },
    "chart-spend": {
      data: [xs, cumulative(line.cost_usd)],
      series: [{}, { label: "spent", stroke: "#2563eb", width: 2 }],
    },
  };
  if (line.baseline_usd) {
    specs["chart-spend"].data.push(cumulative(line.baseline_usd));
    specs["chart-spend"].series.push({ label: "on " + ser.baseline, stroke: "#9ca3af", width: 2, dash: [6, 4] });
  }
  for (const [id, spec] of Object.entries(specs)) {
    const el = $(id);
    const width = Math.max(200, el.parentElement.clientWidth - 4);
    if (charts[id]) charts[id].destroy();
    el.replaceChildren();
    charts[id] = new uPlot({ width, height: 200, series: spec.series, axes: [{}, { size: 60 }], legend: { live: false } }, spec.data, el);
    el.dataset.points = xs.length;
    el.dataset.total = spec.data[1].reduce((x, y) => x + (y || 0), 0);
  }
}

async function showSeries() {
  try {
    drawCharts(await getJSON("/ui/api/series?" + windowQuery()));
  } catch (e) {
    $("chartnote").textContent = String(e.message);
  }
}

function seriesSoon() {
  // a finished request moves the charts: read them again, at most every 3 s
  if (seriesTimer) return;
  seriesTimer = setTimeout(() => { seriesTimer = null; showSeries(); }, 3000);
}

// ---- requests: filtered, live, with feedback ---------------------------------------------------

const KIND_LABELS = { ok: "ok", escalated: "escalated, answered", failed: "failed", cancelled: "cancelled" };

function feedbackText(score) {
  if (score === null || score === undefined) return "";
  return score >= 0.5 ? "good" : "bad";
}

function passes(r) {
  // the live feed sends every request: show those the filters let through
  const f = view.filters;
  if (f.model && r.model !== f.model) return false;
  if (f.rule && r.rule !== f.rule) return false;
  if (f.status && r.kind !== f.status) return false;
  if (f.protocol && r.protocol !== f.protocol) return false;
  if (f.client && (r.client || "(no key)") !== f.client) return false;
  if (f.q) {
    const text = ((r.prompt || "") + "\n" + (r.answer || "")).toLowerCase();
    if (!text.includes(f.q.toLowerCase())) return false;
  }
  return true;
}

async function giveFeedback(r, score, tr, note) {
  note.textContent = "sending…";
  try {
    await api("/v1/feedback", {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify({ request_id: r.id, score }),
    });
  } catch (e) {
    note.textContent = "not recorded: " + e.message;
    return;
  }
  r.feedback = score === "good" ? 1 : 0;
  const given = tr.querySelector("td.feedback");
  given.textContent = feedbackText(r.feedback);
  given.className = "feedback fb-" + feedbackText(r.feedback);
  note.textContent = `recorded: ${score} (a label for ${r.model || "no model"})`;
  showLearning();
}

function requestRow(r, atTop) {
  const tbody = $("live").tBodies[0];
  const empty = tbody.querySelector("tr.empty");
  if (empty) empty.remove();
  const old = tbody.querySelector(`tr.request[data-id="${CSS.escape(r.id)}"]`);
  if (old) {
    old.nextElementSibling.remove();
    old.remove();
  }
  const tr = document.createElement("tr");
  tr.className = "request " + r.kind;
  tr.dataset.id = r.id;
  tr.dataset.kind = r.kind;
  cell(tr, new Date(r.ts * 1000).toLocaleTimeString());
  const status = cell(tr, "", "status");
  const label = document.createElement("span");
  label.className = "tag " + r.kind;
  label.textContent = KIND_LABELS[r.kind] || r.status;
  label.title = r.status;
  status.appendChild(label);
  cell(tr, r.rule || "-", "wrap");
  cell(tr, r.model || "-");
  cell(tr, r.client || "(no key)");
  cell(tr, r.app, "opt");
  cell(tr, r.input_tokens, "num opt");
  cell(tr, r.output_tokens, "num opt");
  cell(tr, money(r.cost_usd), "num");
  cell(tr, ms(r.latency_ms), "num");
  cell(tr, feedbackText(r.feedback), "feedback fb-" + feedbackText(r.feedback));
  const detail = document.createElement("tr");
  detail.className = "detail";
  detail.hidden = true;
  const td = document.createElement("td");
  td.colSpan = 11;
  const lines = [
    `request ${r.id} · ${r.status} · protocol ${r.protocol || "-"} · client ${r.client || "(no key)"} · app ${r.app}`,
    `session ${r.session || "-"} · pirouter's own time ${ms(r.overhead_ms)} ms${r.ttft_ms ? " · first token " + ms(r.ttft_ms) + " ms" : ""}`,
    ...r.attempts.map((a, i) => `${i + 1}. ${a.alias} (${a.provider}/${a.model_id}): ${a.outcome}` +
      `${a.http_status ? " " + a.http_status : ""}, in ${a.input_tokens} out ${a.output_tokens}, ${money(a.cost_usd)}, ${ms(a.latency_ms)} ms` +
      `${a.ttft_ms ? ", first token " + ms(a.ttft_ms) + " ms" : ""}${a.error ? " — " + a.error : ""}`),
  ];
  if (r.prompt) lines.push("prompt: " + r.prompt);
  if (r.answer) lines.push("answer: " + r.answer);
  for (const text of lines) {
    const div = document.createElement("div");
    div.textContent = text;
    td.appendChild(div);
  }
  const teach = document.createElement("div");
  teach.className = "teach";
  const note = document.createElement("span");
  note.className = "muted";
  if (r.model) {
    teach.append("Was this answer good enough? ");
    for (const score of ["good", "bad"]) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "fb " + score;
      btn.textContent = score;
      btn.addEventListener("click", (ev) => { ev.stopPropagation(); giveFeedback(r, score, tr, note); });
      teach.append(btn, " ");
    }
  } else {
    teach.append("No answer to judge.");
  }
  teach.append(note);
  td.appendChild(teach);
  detail.appendChild(td);
  tr.addEventListener("click", () => { detail.hidden = !detail.hidden; });
  if (atTop) {
    tbody.prepend(tr, detail);
  } else {
    tbody.append(tr, detail);
  }
  while (tbody.rows.length > 2 * ROWS) tbody.deleteRow(-1);
}

async function showRequests() {
  const query = [windowQuery(), filterQuery(), "limit=" + ROWS].filter(Boolean).join("&");
  let body;
  try {
    body = await getJSON("/ui/api/requests?" + query);
  } catch (e) {
    $("filternote").textContent = String(e.message);
    return;
  }
  const tbody = $("live").tBodies[0];
  tbody.replaceChildren();
  body.requests.forEach((r) => requestRow(r, false));
  if (!body.requests.length) {
    const tr = tbody.insertRow();
    tr.className = "empty";
    const td = cell(tr, Object.keys(body.filters).length ? "no requests match" : "no requests yet", "muted");
    td.colSpan = 11;
  }
  const given = Object.entries(body.filters).map(([name, value]) => `${name} ${value}`);
  $("filternote").textContent = (given.length ? `filtered: ${given.join(", ")}; ` : "") +
    `the newest ${body.requests.length} of this window` + (body.searchable ? "" : "; prompts are not kept, so text is not searched");
}

async function startLive() {
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
        for (const text of event.split("\n")) {
          if (text.startsWith("data: ")) {
            const r = JSON.parse(text.slice(6));
            if (passes(r)) requestRow(r, true);
            liveSeen += 1; // read by the bench's browser watcher (bench/browser_watch.py)
            seriesSoon();
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

// ---- exports -----------------------------------------------------------------------------------

async function download(format) {
  const query = ["format=" + format, windowQuery(), filterQuery()].filter(Boolean).join("&");
  try {
    const response = await api("/ui/api/export?" + query);
    const blob = await response.blob();
    const disposition = response.headers.get("content-disposition") || "";
    const found = /filename="([^"]+)"/.exec(disposition);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = found ? found[1] : "pirouter-requests." + format;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (e) {
    $("filternote").textContent = "export failed: " + e.message;
  }
}

// ---- teaching: labels and what `learn` needs ---------------------------------------------------

async function showLearning() {
  if (scoped) {
    $("learnpanel").hidden = true; // labels come from every client's requests: the operator's
    return;
  }
  let learn;
  try {
    learn = await getJSON("/ui/api/learning");
  } catch (e) {
    $("learnnote").textContent = "labels could not be read: " + e.message;
    return;
  }
  $("learnpanel").hidden = false;
  $("learnnote").textContent = `\`${learn.command}\` trains a model once it has ${learn.min_labels} labels, ` +
    `at least ${learn.min_each} good and ${learn.min_each} bad. Labels come from answers, escalations, ` +
    `regenerates and feedback (${learn.feedback} from people so far): open a request above and say good or bad.` +
    (learn.ready ? " Some models are ready." : "") +
    (learn.newest ? ` (Counted over the newest ${learn.newest.toLocaleString()} requests.)` : "");
  table($("learning"), ["model", "labels", "good", "bad", "learn needs"],
    learn.models.map((m) => [m.model, m.labels, m.good, m.bad, m.ready ? "ready" : m.needs]), [1, 2, 3]);
  $("learncommand").textContent = learn.command;
}

// ---- putting it together -----------------------------------------------------------------------

async function refresh() {
  const shown = await showSummary();
  if (!shown) return;
  await Promise.all([showState(), showSeries()]);
}

async function start() {
  const shown = await showSummary();
  if (!shown) return;
  await showState();
  showView();
  await Promise.all([showSeries(), showRequests(), showLearning()]);
  if (!liveAbort) startLive();
}

function askKey(message) {
  $("board").hidden = true;
  $("keyform").hidden = false;
  $("keyerror").textContent = message || "";
  $("key").focus();
  return false;
}

function applyFilters() {
  view.filters = {};
  for (const name of FILTERS) {
    const value = document.querySelector(`#filters [name="${name}"]`).value.trim();
    if (value) view.filters[name] = value;
  }
  writeURL();
  showRequests();
}

function applyWindow() {
  writeURL();
  showView();
  refresh();
  showRequests();
}

document.addEventListener("DOMContentLoaded", () => {
  readURL();
  showView();
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    start();
  });
  for (const btn of document.querySelectorAll("#windows button")) {
    btn.addEventListener("click", () => {
      view.window = btn.dataset.window;
      view.since = "";
      applyWindow();
    });
  }
  $("since").addEventListener("change", () => {
    if (!$("since").value) return;
    view.since = $("since").value;
    applyWindow();
  });
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); applyFilters(); });
  for (const id of ["f-model", "f-status"]) $(id).addEventListener("change", applyFilters);
  $("f-clear").addEventListener("click", () => {
    for (const name of FILTERS) document.querySelector(`#filters [name="${name}"]`).value = "";
    applyFilters();
  });
  $("export-csv").addEventListener("click", () => download("csv"));
  $("export-json").addEventListener("click", () => download("json"));
  $("chartmodel").addEventListener("change", () => { if (lastSeries) drawCharts(lastSeries); });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (lastSeries) drawCharts(lastSeries); }, 100);
  });
  start();
  setInterval(refresh, 30000);
  setInterval(() => { if (!$("board").hidden) showState(); }, 5000);
});
