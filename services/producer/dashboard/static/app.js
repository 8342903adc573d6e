// Ferry's dashboard: plain JS, no dependencies. Pages are hash routes; each page renders its frame once
// and then refreshes its data every REFRESH_MS from the /v1 JSON routes (token from sessionStorage).
"use strict";

const REFRESH_MS = 1500;
const TOKEN_KEY = "ferry-token";
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
const live = document.getElementById("live");
let timer = null;
let page = null; // {name, refresh}
let generation = 0; // bumped on every route: a refresh started for an older page must not draw into this one

// --- helpers ---
function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  n = Number(n || 0);
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}
function ago(moment) {
  if (!moment) return "-";
  const t = typeof moment === "number" ? moment * 1000 : Date.parse(moment);
  const s = (Date.now() - t) / 1000;
  if (s < 1) return "now";
  if (s < 60) return `${s.toFixed(0)}s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)}m ago`;
  if (s < 86400) return `${(s / 3600).toFixed(0)}h ago`;
  return `${(s / 86400).toFixed(0)}d ago`;
}
function seconds(a, b) {
  if (!a || !b) return "-";
  const s = (Date.parse(b) - Date.parse(a)) / 1000;
  return s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`;
}
function badge(text) { return `<span class="badge ${esc(text)}">${esc(text)}</span>`; }
function json(value) { return esc(JSON.stringify(value, null, 2)); }
function el(id) { return document.getElementById(id); }

// --- the API ---
class Unauthorized extends Error {}
async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const answer = await fetch(path, { ...options, headers });
  if (answer.status === 401) throw new Unauthorized();
  const body = answer.status === 204 ? null : await answer.json();
  if (!answer.ok) throw new Error(body?.error?.message || `${answer.status} ${answer.statusText}`);
  return body;
}

function showLogin(message) {
  stop();
  main.innerHTML = "";
  el("login").hidden = false;
  el("login-error").textContent = message || "";
  el("token").focus();
}
el("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, el("token").value);
  el("token").value = "";
  el("login").hidden = true;
  route();
});

// --- the refresh loop ---
function stop() { if (timer) clearTimeout(timer); timer = null; }
async function tick() {
  stop();
  const current = page;
  try {
    await current.refresh();
    live.classList.remove("stale");
    live.textContent = "live";
    statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error instanceof Unauthorized) {
      showLogin(sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : "");
      return;
    }
    live.classList.add("stale");
    live.textContent = "offline";
    statusLine.textContent = error.message;
  }
  if (current === page) timer = setTimeout(tick, REFRESH_MS);
}

// --- overview ---
function overviewPage() {
  const gen = generation;
  main.innerHTML = `
    <section class="card"><h2>Queues</h2><div class="scroll" id="queues"></div></section>
    <section class="card chart"><h2>Throughput, last 5 minutes (jobs per 10 s)</h2>
      <div id="throughput"></div>
      <div class="legend"><span><i style="background:var(--green)"></i>finished</span><span><i style="background:var(--red)"></i>failed</span></div>
    </section>
    <section class="card"><h2>Nodes</h2><div class="scroll" id="node-health"></div></section>`;
  return async () => {
    const [queues, rate, nodes] = await Promise.all([api("/v1/queues"), api("/v1/views/throughput?window_s=300&step_s=10"), api("/v1/nodes")]);
    if (gen !== generation) return;
    el("queues").innerHTML = `<table data-testid="queues"><tr><th>queue</th><th class="num">queued</th><th class="num">started</th>
      <th class="num">finished</th><th class="num">failed</th><th class="num">canceled</th><th class="num">scheduled</th></tr>
      ${queues.map((q) => `<tr data-queue="${esc(q.name)}"><td><a href="#/jobs?queue=${encodeURIComponent(q.name)}">${esc(q.name)}</a>${q.paused ? ' <span class="badge" data-field="paused">paused</span>' : ""}${q.waiting ? ` <span class="muted" data-field="waiting">${q.waiting} waiting for a limit</span>` : ""}</td>
        <td class="num" data-field="queued">${q.queued}</td><td class="num" data-field="started">${q.started}</td>
        <td class="num" data-field="finished">${q.finished}</td><td class="num" data-field="failed">${q.failed}</td>
        <td class="num" data-field="canceled">${q.canceled}</td><td class="num" data-field="scheduled">${q.scheduled ?? 0}</td></tr>`).join("")}</table>`;
    el("throughput").innerHTML = lineChart([rate.finished, rate.failed], ["var(--green)", "var(--red)"], rate.step_s);
    el("node-health").innerHTML = nodes.length ? `<table><tr><th>node</th><th>alive</th><th class="num">processes</th>
      <th class="hide-narrow">queues</th><th>heartbeat</th></tr>
      ${nodes.map((n) => `<tr><td><a href="#/nodes">${esc(n.id)}</a></td><td>${badge(n.alive ? "yes" : "no")}</td>
        <td class="num">${n.processes}</td><td class="hide-narrow">${esc(n.queues.join(", "))}</td><td>${ago(n.last_heartbeat)}</td></tr>`).join("")}</table>`
      : `<p class="muted">No worker node has registered; start one with <code>ferry worker</code>.</p>`;
  };
}

function lineChart(series, colors, stepS) {
  const width = 600, height = 160, pad = 4;
  const count = series[0].length;
  const top = Math.max(1, ...series.flat());
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, count - 1);
  const y = (v) => height - pad - (v * (height - 2 * pad)) / top;
  const lines = series.map((values, k) => `<polyline fill="none" stroke="${colors[k]}" stroke-width="2" vector-effect="non-scaling-stroke"
    points="${values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`).join("");
  const total = series[0].reduce((a, b) => a + b, 0);
  const minutes = Math.round((count * stepS) / 60);
  return `<div class="axis"><span>max ${top}</span></div>
    <svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img" data-testid="throughput-chart" data-finished="${total}"
    aria-label="${total} jobs finished in the last ${minutes} minutes">
    <line x1="${pad}" y1="${height - pad}" x2="${width - pad}" y2="${height - pad}" stroke="#ccd" vector-effect="non-scaling-stroke"/>${lines}</svg>
    <div class="axis"><span>-${minutes} min</span><span>${total} finished, ${series[1].reduce((a, b) => a + b, 0)} failed</span><span>now</span></div>`;
}

// --- jobs ---
const STATUSES = ["", "queued", "started", "finished", "failed", "canceled", "scheduled"];
function jobsPage(params) {
  const gen = generation;
  main.innerHTML = `
    <section class="card"><h2>Jobs</h2>
      <form class="filters" id="filters">
        <label>status<select name="status" data-testid="filter-status">${STATUSES.map((s) => `<option value="${s}">${s || "any"}</option>`).join("")}</select></label>
        <label>queue<select name="queue" data-testid="filter-queue"><option value="">any</option></select></label>
        <label>task<input name="task" list="task-names" placeholder="any" data-testid="filter-task" size="14"></label>
        <datalist id="task-names"></datalist>
        <button type="submit">Filter</button>
      </form>
      <div class="scroll" id="jobs"></div>
    </section>`;
  const form = el("filters");
  for (const name of ["status", "task"]) form.elements[name].value = params.get(name) || "";
  const apply = (event) => {
    event?.preventDefault();
    const query = new URLSearchParams();
    for (const name of ["status", "queue", "task"]) if (form.elements[name].value) query.set(name, form.elements[name].value);
    location.hash = `#/jobs${query.toString() ? "?" + query : ""}`;
  };
  form.addEventListener("submit", apply);
  form.elements.status.addEventListener("change", apply);
  form.elements.queue.addEventListener("change", apply);
  Promise.all([api("/v1/queues"), api("/v1/tasks")]).then(([queues, tasks]) => {
    if (gen !== generation) return;
    form.elements.queue.innerHTML = `<option value="">any</option>` + queues.map((q) => `<option value="${esc(q.name)}">${esc(q.name)}</option>`).join("");
    form.elements.queue.value = params.get("queue") || "";
    el("task-names").innerHTML = tasks.map((t) => `<option value="${esc(t.name)}">`).join("");
  }).catch(() => {});
  const query = new URLSearchParams({ limit: "100" });
  for (const name of ["status", "queue", "task"]) if (params.get(name)) query.set(name, params.get(name));
  return async () => {
    const jobs = await api(`/v1/jobs?${query}`);
    if (gen !== generation) return;
    el("jobs").innerHTML = jobs.length ? `<table data-testid="jobs"><tr><th>job</th><th>task</th><th>queue</th><th>status</th>
      <th class="num">attempts</th><th class="hide-narrow">enqueued</th><th>ended</th></tr>
      ${jobs.map((j) => `<tr data-job="${esc(j.id)}" data-status="${esc(j.status)}"><td class="mono"><a href="#/job/${encodeURIComponent(j.id)}">${esc(j.id.slice(0, 12))}</a></td>
        <td>${esc(j.task ?? "?")}</td><td>${esc(j.queue ?? "?")}</td><td>${badge(j.status)}</td><td class="num">${j.attempts}</td>
        <td class="hide-narrow">${ago(j.enqueued_at)}</td><td>${ago(j.ended_at)}</td></tr>`).join("")}</table>`
      : `<p class="muted" data-testid="no-jobs">No jobs match.</p>`;
  };
}

function jobPage(jobId) {
  const gen = generation;
  main.innerHTML = `<section class="card" id="job"><p class="muted">Loading…</p></section>`;
  let shown = "";
  return async () => {
    const d = await api(`/v1/jobs/${encodeURIComponent(jobId)}/details`);
    if (gen !== generation) return;
    const j = d.job;
    const key = JSON.stringify(d);
    if (key === shown) return; // keep the reader's scroll position and selection while nothing changes
    shown = key;
    const running = j.status === "queued" || j.status === "started" || j.status === "scheduled";
    const progress = typeof d.progress === "number" ? `<div class="progress" title="${(d.progress * 100).toFixed(0)}%"><span style="width:${Math.min(100, d.progress * 100)}%"></span></div>`
      : d.progress != null ? `<pre>${json(d.progress)}</pre>` : "-";
    el("job").innerHTML = `<h2>Job <span class="mono">${esc(j.id)}</span> ${badge(j.status)}</h2>
      <dl class="facts" data-testid="job-facts">
        <dt>task</dt><dd>${esc(j.task ?? "?")}</dd><dt>queue</dt><dd>${esc(j.queue ?? "?")}</dd>
        <dt>status</dt><dd data-testid="job-status">${esc(j.status)}</dd>
        <dt>attempts</dt><dd>${j.attempts}${j.retries_left != null ? ` (${j.retries_left} retries left)` : ""}</dd>
        <dt>worker</dt><dd>${esc(j.worker || "-")}</dd><dt>timeout</dt><dd>${j.timeout_s ?? "-"} s</dd>
        <dt>enqueued</dt><dd>${esc(j.enqueued_at || "-")}</dd><dt>started</dt><dd>${esc(j.started_at || "-")}</dd>
        <dt>ended</dt><dd>${esc(j.ended_at || "-")}</dd>
        <dt>waited</dt><dd>${seconds(j.enqueued_at, j.started_at)}</dd><dt>ran</dt><dd>${seconds(j.started_at, j.ended_at)}</dd>
        <dt>progress</dt><dd>${progress}</dd>
        ${j.error ? `<dt>error</dt><dd class="error">${esc(j.error)}</dd>` : ""}
        ${j.due_at ? `<dt>due</dt><dd data-testid="job-due">${esc(j.due_at)}</dd>` : ""}
        ${(j.attempt_errors || []).map((e) => `<dt>attempt ${e.attempt}</dt><dd class="error">${esc(e.error)}</dd>`).join("")}
      </dl>
      <div class="actions">
        <button class="danger" id="cancel" data-testid="cancel" ${running ? "" : "disabled"}>Cancel</button>
        <button id="requeue" data-testid="requeue" ${j.status === "failed" ? "" : "disabled"}>Requeue</button>
        <span id="action-result" class="muted"></span>
      </div>
      <h2 style="margin-top:1rem">Args${d.args_truncated ? " (cut)" : ""}</h2><pre data-testid="job-args">${json(d.args)}</pre>
      ${d.result && d.result.status === "finished" ? `<h2 style="margin-top:1rem">Result${d.result_truncated ? " (cut)" : ""}</h2><pre data-testid="job-result">${json(d.result.value)}</pre>` : ""}
      ${d.traceback ? `<h2 style="margin-top:1rem">Traceback</h2><pre data-testid="job-traceback">${esc(d.traceback)}</pre>` : ""}`;
    el("cancel").onclick = () => act("DELETE", `/v1/jobs/${encodeURIComponent(jobId)}`, "cancel requested");
    el("requeue").onclick = () => act("POST", `/v1/jobs/${encodeURIComponent(jobId)}/requeue`, "requeued");
  };
}

async function act(method, path, done) {
  try {
    await api(path, { method });
    statusLine.textContent = done;
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin("");
    const out = el("action-result");
    if (out) out.textContent = error.message;
  }
  tick();
}

// --- nodes ---
const COUNTERS = ["resident_bytes", "bytes_from_redis", "bytes_from_shm", "hits", "misses", "evictions"];
function nodesPage() {
  const gen = generation;
  main.innerHTML = `<div class="grid" id="nodes"></div>
    <section class="card"><h2>Worker processes</h2><div class="scroll" id="workers"></div></section>`;
  return async () => {
    const [nodes, workers] = await Promise.all([api("/v1/nodes"), api("/v1/workers")]);
    if (gen !== generation) return;
    el("nodes").innerHTML = nodes.length ? nodes.map((n) => {
      const s = Object.fromEntries(COUNTERS.map((k) => [k, n.stats[k] || 0]));
      const read = s.bytes_from_redis + s.bytes_from_shm;
      const redisShare = read ? (100 * s.bytes_from_redis) / read : 0;
      return `<section class="card" data-node="${esc(n.id)}"><h2>${esc(n.id)} ${badge(n.alive ? "yes" : "no")}</h2>
        <dl class="facts">
          <dt>host</dt><dd>${esc(n.host)} (pid ${n.pid})</dd><dt>processes</dt><dd>${n.processes}</dd>
          <dt>heartbeat</dt><dd>${ago(n.last_heartbeat)}</dd>
          <dt>shm budget</dt><dd data-stat="shm_budget_bytes" data-value="${n.shm_budget_bytes}">${bytes(n.shm_budget_bytes)}</dd>
          <dt>resident</dt><dd data-stat="resident_bytes" data-value="${s.resident_bytes}" title="${s.resident_bytes} bytes">${bytes(s.resident_bytes)}</dd>
          <dt>from Redis</dt><dd data-stat="bytes_from_redis" data-value="${s.bytes_from_redis}" title="${s.bytes_from_redis} bytes">${bytes(s.bytes_from_redis)}</dd>
          <dt>from memory</dt><dd data-stat="bytes_from_shm" data-value="${s.bytes_from_shm}" title="${s.bytes_from_shm} bytes">${bytes(s.bytes_from_shm)}</dd>
          <dt>hits</dt><dd data-stat="hits" data-value="${s.hits}">${s.hits}</dd>
          <dt>misses</dt><dd data-stat="misses" data-value="${s.misses}">${s.misses}</dd>
          <dt>evictions</dt><dd data-stat="evictions" data-value="${s.evictions}">${s.evictions}</dd>
        </dl>
        <div class="bar" role="img" aria-label="bytes read: ${redisShare.toFixed(0)}% from Redis">
          <span style="width:${redisShare}%;background:var(--amber)"></span><span style="width:${read ? 100 - redisShare : 0}%;background:var(--green)"></span></div>
        <div class="legend"><span><i style="background:var(--amber)"></i>from Redis</span><span><i style="background:var(--green)"></i>from memory</span></div>
      </section>`;
    }).join("") : `<section class="card"><p class="muted">No worker node has registered; start one with <code>ferry worker</code>.</p></section>`;
    el("workers").innerHTML = workers.length ? `<table><tr><th>worker</th><th>node</th><th class="num">pid</th><th>state</th>
      <th class="hide-narrow">current job</th><th class="num">ok</th><th class="num">failed</th></tr>
      ${workers.map((w) => `<tr><td class="mono">${esc(w.name)}</td><td>${esc(w.node || "-")}</td><td class="num">${w.pid ?? "-"}</td>
        <td>${badge(w.state)}</td><td class="hide-narrow mono">${w.current_job ? `<a href="#/job/${encodeURIComponent(w.current_job)}">${esc(w.current_job.slice(0, 12))}</a>` : "-"}</td>
        <td class="num">${w.successful}</td><td class="num">${w.failed}</td></tr>`).join("")}</table>`
      : `<p class="muted">No worker process is registered.</p>`;
  };
}

// --- objects ---
function objectsPage() {
  const gen = generation;
  main.innerHTML = `<section class="card"><h2>Objects in Redis</h2><div class="scroll" id="objects"></div>
    <p class="muted">Nodes: those holding a copy in the producer machine's <code>/dev/shm</code>. Jobs: the jobs not yet done that need it (recorded at submit); it is kept until they end.</p></section>`;
  return async () => {
    const objects = await api("/v1/views/objects");
    if (gen !== generation) return;
    el("objects").innerHTML = objects.length ? `<table data-testid="objects"><tr><th>object</th><th>kind</th><th>dtype</th><th>shape</th>
      <th class="num">size</th><th class="num">ttl</th><th>nodes</th><th>jobs</th></tr>
      ${objects.map((o) => `<tr data-object="${esc(o.id)}"><td class="mono">${esc(o.id.slice(0, 12))}</td><td>${esc(o.kind)}</td><td>${esc(o.dtype)}</td>
        <td>${esc(o.shape.join("×"))}</td><td class="num" title="${o.nbytes} bytes">${bytes(o.nbytes)}</td><td class="num">${o.ttl_s} s</td>
        <td>${esc(o.nodes.join(", ") || "-")}</td>
        <td class="wrap mono">${o.jobs.map((id) => `<a href="#/job/${encodeURIComponent(id)}">${esc(id.slice(0, 8))}</a>`).join(" ") || "-"}</td></tr>`).join("")}</table>`
      : `<p class="muted">No objects are stored.</p>`;
  };
}

// --- routing ---
function route() {
  stop();
  generation += 1;
  el("login").hidden = true;
  const [path, search] = (location.hash.slice(1) || "/overview").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  const name = parts[0] || "overview";
  const builders = { overview: overviewPage, jobs: () => jobsPage(params), job: () => jobPage(decodeURIComponent(parts[1] || "")),
                     nodes: nodesPage, objects: objectsPage };
  const build = builders[name] || overviewPage;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === (name === "job" ? "jobs" : name));
  document.title = `Ferry · ${name}`;
  page = { name, refresh: build() };
  tick();
}
window.addEventListener("hashchange", route);
route();
