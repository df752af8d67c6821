// Ember's web UI: pages drawn from the REST API under /api/v1, redrawn every two seconds
// while a job runs. The stage DAG is laid out by the server as SVG.
"use strict";

const API = "/api/v1";
const REFRESH_MS = 2000;
let app = null;

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function ms(n) {
  if (n == null) return "";
  return n < 1000 ? n + " ms" : (n / 1000).toFixed(n < 10000 ? 2 : 1) + " s";
}

function when(t) { return t ? esc(t.replace("T", " ").replace("GMT", "")) : ""; }

function status(s) { return `<span class="status-${esc(s)}">${esc(s)}</span>`; }

async function get(path) {
  const r = await fetch(API + path);
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

function table(headers, rows, attrs = "") {
  return `<table ${attrs}><thead><tr>${headers.map(h => `<th>${esc(h)}</th>`).join("")}</tr></thead>` +
    `<tbody>${rows.join("") || `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`}</tbody></table>`;
}

function nav(current) {
  const pages = ["jobs", "stages", "sql", "executors", "storage", "ml", "environment"];
  const title = p => ({ sql: "SQL", ml: "ML" })[p] || p[0].toUpperCase() + p.slice(1);
  const links = app ? pages.map(p =>
    `<a href="#/${esc(app)}/${p}" class="${p === current ? "active" : ""}">${title(p)}</a>`) : [];
  document.getElementById("nav").innerHTML = `<a href="#/">Applications</a>` + links.join("");
  document.getElementById("app-id").textContent = app || "";
}

// Pages: each returns the HTML of <main>.

async function applications() {
  const apps = await get("/applications");
  if (apps.length === 1 && !location.hash) { location.hash = `#/${apps[0].id}/jobs`; return null; }
  return `<h2>Applications</h2>` + table(["Application", "Started", "Duration", "Completed"],
    apps.map(a => `<tr><td><a href="#/${esc(a.id)}/jobs">${esc(a.id)}</a></td>` +
      `<td>${when(a.attempts[0].startTime)}</td><td class="num">${ms(a.attempts[0].duration)}</td>` +
      `<td>${a.attempts[0].completed}</td></tr>`), `id="apps"`);
}

function timeline(jobs) {
  const start = Math.min(...jobs.map(j => Date.parse(j.submissionTime.replace("GMT", "Z"))));
  const end = Math.max(...jobs.map(j => Date.parse(j.submissionTime.replace("GMT", "Z")) + j.durationMs));
  const span = Math.max(end - start, 1);
  return j => {
    const s = Date.parse(j.submissionTime.replace("GMT", "Z")) - start;
    return `<div class="timeline" title="${ms(j.durationMs)}"><span style="left:${(100 * s / span).toFixed(2)}%;` +
      `width:${Math.max(0.5, 100 * j.durationMs / span).toFixed(2)}%"></span></div>`;
  };
}

async function jobs() {
  const list = await get(`/applications/${app}/jobs`);
  const bar = list.length ? timeline(list) : null;
  const rows = list.map(j => `<tr class="job" data-job="${j.jobId}">` +
    `<td><a href="#/${esc(app)}/jobs/${j.jobId}">${j.jobId}</a></td>` +
    `<td>${esc(j.name)}</td><td>${status(j.emberStatus)}</td><td>${when(j.submissionTime)}</td>` +
    `<td class="num">${ms(j.durationMs)}</td><td class="num">${j.numCompletedStages}/${j.stageIds.length}</td>` +
    `<td class="num">${j.numCompletedTasks}/${j.numTasks}${j.numFailedTasks ? ` (${j.numFailedTasks} failed)` : ""}</td>` +
    `<td>${bar(j)}</td><td class="error">${esc(j.error ?? "")}</td></tr>`);
  return `<h2>Jobs</h2>` + table(["Job", "Description", "Status", "Submitted", "Duration", "Stages", "Tasks", "Timeline", "Error"], rows, `id="jobs"`);
}

function stageRow(s) {
  return `<tr class="stage" data-stage="${s.stageId}"><td><a href="#/${esc(app)}/stages/${s.stageId}">${s.stageId}</a></td>` +
    `<td>${s.jobId}</td><td>${esc(s.name)}</td><td>${status(s.emberStatus)}</td>` +
    `<td class="num">${s.numCompleteTasks}/${s.numTasks}${s.numFailedTasks ? ` (${s.numFailedTasks} failed)` : ""}</td>` +
    `<td class="num">${bytes(s.outputBytes)}</td><td class="num">${s.outputRecords}</td>` +
    `<td class="num">${bytes(s.shuffleReadBytes)}</td><td class="num">${bytes(s.shuffleWriteBytes)}</td>` +
    `<td class="num">${bytes(s.diskBytesSpilled)}</td><td class="num">${ms(s.executorRunTime)}</td></tr>`;
}

const STAGE_HEADERS = ["Stage", "Job", "Operators", "Status", "Tasks", "Output", "Rows", "Shuffle read", "Shuffle write", "Spill", "Task time"];

async function job(id) {
  const [j, stages] = await Promise.all([get(`/applications/${app}/jobs/${id}`), get(`/applications/${app}/stages`)]);
  const svg = await (await fetch(`${API}/applications/${app}/jobs/${id}/dag.svg`)).text();
  const mine = stages.filter(s => s.jobId === j.jobId).sort((a, b) => a.stageId - b.stageId);
  return `<h2>Job ${j.jobId} ${status(j.emberStatus)}</h2><pre>${esc(j.description)}</pre>` +
    (j.error ? `<p class="error">${esc(j.error)}</p>` : "") +
    `<h3>Stage DAG</h3><div class="dag" id="dag">${svg}</div>` +
    `<h3>Stages</h3>` + table(STAGE_HEADERS, mine.map(stageRow), `id="stages"`) +
    (j.description.includes(":") ? `<p><a href="#/${esc(app)}/sql/${j.jobId}">SQL plan</a></p>` : "");
}

async function stages() {
  const list = await get(`/applications/${app}/stages`);
  return `<h2>Stages</h2>` + table(STAGE_HEADERS, list.map(stageRow), `id="stages"`);
}

// Quantile rows (min, 25th, median, 75th, max); a row whose maximum is over twice its
// 25th percentile (and at least 100 ms or 1 MiB above it) is marked as skewed: most tasks
// took far less than the slowest.
function quantileRow(name, values, fmt, floor) {
  if (!values || !values.length) return "";
  const low = values[1] ?? values[0], max = values[values.length - 1];
  const skew = max > 2 * low && max - low >= floor;
  return `<tr class="${skew ? "skew" : ""}" data-metric="${esc(name)}"><th>${esc(name)}${skew ? " (skew)" : ""}</th>` +
    values.map((v, i) => `<td class="num${i === values.length - 1 ? " max" : ""}">${fmt(v)}</td>`).join("") + `</tr>`;
}

async function stage(id) {
  const qs = "0,0.25,0.5,0.75,1";
  const [s, q, tasks] = await Promise.all([
    get(`/applications/${app}/stages/${id}/0`),
    get(`/applications/${app}/stages/${id}/0/taskSummary?quantiles=${qs}`),
    get(`/applications/${app}/stages/${id}/0/taskList?length=1000`)]);
  const quant = table(["Metric", "Min", "25th", "Median", "75th", "Max"], [
    quantileRow("Duration", q.duration, ms, 100),
    quantileRow("Output", q.outputMetrics.bytesWritten, bytes, 1 << 20),
    quantileRow("Shuffle read", q.shuffleReadMetrics.readBytes, bytes, 1 << 20),
    quantileRow("Shuffle write", q.shuffleWriteMetrics.writeBytes, bytes, 1 << 20),
    quantileRow("Spill", q.diskBytesSpilled, bytes, 1 << 20),
  ], `id="quantiles"`);
  const rows = tasks.map(t => `<tr class="task"><td>${t.taskId}</td><td>${t.index}</td><td>${t.attempt}</td>` +
    `<td>${esc(t.executorId)}</td><td>${status(t.status)}${t.speculative ? " (speculative)" : ""}</td>` +
    `<td class="num">${ms(t.duration)}</td><td class="num">${bytes(t.taskMetrics.resultSize)}</td>` +
    `<td class="num">${bytes(t.taskMetrics.shuffleReadMetrics.remoteBytesRead)}</td>` +
    `<td class="num">${bytes(t.taskMetrics.shuffleWriteMetrics.bytesWritten)}</td>` +
    `<td class="error">${esc(t.errorMessage ?? "")}</td></tr>`);
  return `<h2>Stage ${s.stageId} ${status(s.emberStatus)}</h2><p>Job ${s.jobId}, dataset ${s.datasetId}` +
    `${s.parentDatasetIds.length ? ", reads datasets " + s.parentDatasetIds.join(", ") : ""}; ${esc(s.name)}</p>` +
    `<h3>Task quantiles (successful tasks)</h3>${quant}` +
    `<h3>Tasks</h3>` + table(["Task", "Partition", "Attempt", "Executor", "Status", "Duration", "Output", "Fetched", "Shuffle write", "Error"], rows, `id="tasks"`);
}

async function sqlList() {
  const list = await get(`/applications/${app}/sql`);
  return `<h2>SQL</h2>` + table(["Query", "Description", "Status", "Submitted", "Duration"],
    list.map(q => `<tr class="query"><td><a href="#/${esc(app)}/sql/${q.id}">${q.id}</a></td>` +
      `<td>${esc(q.description.slice(0, 160))}</td><td>${status(q.status)}</td><td>${when(q.submissionTime)}</td>` +
      `<td class="num">${ms(q.duration)}</td></tr>`), `id="queries"`);
}

async function sqlOne(id) {
  const q = await get(`/applications/${app}/sql/${id}`);
  const nodes = q.nodes.map(n => `<tr><td>${n.nodeId}</td><td>${esc(n.nodeName)}</td>` +
    n.metrics.map(m => `<td class="num">${esc(m.value)}</td>`).join("") + `</tr>`);
  const headers = ["Stage", "Operators"].concat(q.nodes.length ? q.nodes[0].metrics.map(m => m.name) : []);
  return `<h2>Query ${q.id} ${status(q.status)}</h2><h3>Text</h3><pre id="sql-text">${esc(q.description)}</pre>` +
    (q.error ? `<p class="error">${esc(q.error)}</p>` : "") +
    `<h3>Stages and their figures</h3>` + table(headers, nodes, `id="sql-stages"`) +
    `<h3>Plan</h3><pre id="plan">${esc(q.planDescription)}</pre>`;
}

async function executors() {
  const list = await get(`/applications/${app}/allexecutors`);
  const rows = list.map(e => {
    const used = e.maxMemory ? Math.min(100, 100 * e.memoryUsed / e.maxMemory) : 0;
    const state = e.isActive ? (e.isExcluded ? `excluded: ${esc(e.excludedReason)}` : "active") : `lost: ${esc(e.removeReason)}`;
    return `<tr class="executor" data-executor="${esc(e.id)}"><td>${esc(e.id)}</td><td>${esc(e.hostPort)}</td>` +
      `<td class="${e.isActive ? "" : "error"}">${state}</td><td class="num">${e.totalCores}</td>` +
      `<td><span class="bar"><span style="width:${used.toFixed(1)}%"></span></span> ${bytes(e.memoryUsed)} / ${bytes(e.maxMemory)}</td>` +
      `<td class="num">${bytes(e.diskUsed)}</td><td class="num">${e.rddBlocks}</td>` +
      `<td class="num">${e.activeTasks}</td><td class="num">${e.completedTasks}</td><td class="num">${e.failedTasks}</td>` +
      `<td class="num">${ms(e.totalDuration)}</td><td>${esc(e.device)}</td></tr>`;
  });
  return `<h2>Executors</h2>` + table(["Executor", "Address", "State", "Slots", "Memory used / limit", "Spilled", "Cached partitions",
    "Running", "Succeeded", "Failed", "Task time", "mllib device"], rows, `id="executors"`);
}

async function storage() {
  const list = await get(`/applications/${app}/storage/rdd`);
  const details = await Promise.all(list.map(r => get(`/applications/${app}/storage/rdd/${r.id}`)));
  const rows = details.map(r => `<tr class="cached" data-dataset="${r.id}"><td>${r.id}</td>` +
    `<td class="num">${r.numCachedPartitions}/${r.numPartitions}</td><td class="num">${bytes(r.memoryUsed)}</td>` +
    `<td>${r.dataDistribution.filter(d => d.partitions).map(d => `${esc(d.executorId)}: ${d.partitions} (${bytes(d.memoryUsed)})`).join("<br>")}</td>` +
    `<td class="num">${r.recomputedPartitions}</td></tr>`);
  return `<h2>Storage</h2>` + table(["Dataset", "Partitions cached", "Size", "Per executor", "Recomputed after loss"], rows, `id="storage"`);
}

// mllib training runs: the objective per pass as a chart (drawn by the server), iterations,
// convergence and the tree reduction's levels.
async function ml() {
  const runs = await get(`/applications/${app}/ml`);
  const charts = await Promise.all(runs.map(r =>
    fetch(`${API}/applications/${app}/ml/${r.run}/objective.svg`).then(x => x.text())));
  const rows = runs.map(r => `<tr class="training" data-run="${r.run}"><td>${r.run}</td><td>${esc(r.algorithm)}</td>` +
    `<td>${status(r.status)}</td><td class="num">${r.rows}</td><td class="num">${r.passes}</td>` +
    `<td class="num">${r.iterations ?? ""}</td><td>${r.converged ?? ""}</td>` +
    `<td class="num">${r.passObjectives.length ? Number(r.passObjectives[r.passObjectives.length - 1]).toPrecision(6) : ""}</td>` +
    `<td>${r.treeLevels.join(" → ")}</td></tr>`);
  return `<h2>ML training</h2>` + table(["Run", "Algorithm", "Status", "Rows", "Passes", "Iterations", "Converged",
    "Objective", "Tree levels"], rows, `id="training"`) +
    runs.map((r, i) => `<div class="chart" data-run="${r.run}">${charts[i]}</div>`).join("");
}

async function environment() {
  const env = await get(`/applications/${app}/environment`);
  return `<h2>Environment</h2>` + table(["Setting", "Value"],
    env.sparkProperties.concat(env.systemProperties).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`), `id="environment"`);
}

async function render() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  let page = null, html;
  try {
    if (!parts.length) {
      app = null;
      html = await applications();
      if (html === null) return;
    } else {
      app = parts[0];
      page = parts[1] || "jobs";
      const id = parts[2];
      const pages = {
        jobs: () => id ? job(id) : jobs(),
        stages: () => id ? stage(id) : stages(),
        sql: () => id ? sqlOne(id) : sqlList(),
        executors, storage, ml, environment,
      };
      html = await (pages[page] || jobs)();
    }
  } catch (e) {
    html = `<p class="error">${esc(e.message)}</p>`;
  }
  nav(page);
  const main = document.getElementById("main");
  // Keep the reader's place across refreshes.
  const y = window.scrollY;
  main.innerHTML = html;
  window.scrollTo(0, y);
  document.body.dataset.rendered = location.hash || "#/";
}

window.addEventListener("hashchange", render);
render();
setInterval(() => { if (!document.hidden) render(); }, REFRESH_MS);
