"""The live page: one self-contained HTML document (inline CSS and JavaScript, plots drawn on
canvases by its own code, no resource from the network) that shows what ``zeroserve status``
shows and plots the last minutes.

Every second the page asks ``ui/data`` (relative to its own address: ``/ui/data`` on a gateway
and on the broker's metrics port) for :func:`data_answer`, and updates its tables in place.
Rates come from the difference between two answers: requests/s, the mean batch size and the
mean execution time of the batches of that interval, and the p99 of the queue wait from the
interval's histogram (the upper bound of its bucket). It keeps :data:`HISTORY_POINTS` of them
per endpoint for the plots. Where the data call answers 401 the page asks for an API key, keeps
it in the tab's sessionStorage and sends it as ``Authorization: Bearer``.

Numbers that tests read carry ``data-field`` (and ``data-endpoint`` / ``data-worker``)
attributes; ``#updates`` counts the answers drawn.
"""
from __future__ import annotations

from collections.abc import Sequence

HISTORY_POINTS = 300  # seconds of history in the plots

# what the page may load: nothing but itself and its data calls
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; "
                           "style-src 'unsafe-inline'; connect-src 'self'; img-src data:")



def page_headers() -> dict[str, str]:
    """The headers of the page's answer, wherever it is served."""
    return {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY}


def data_answer(stats: dict, time_buckets_s: Sequence[float]) -> dict:
    """What ``ui/data`` answers: the broker's STATS answer, the broker's uptime when it was
    taken (``time_s``: the page's clock, so that a snapshot served twice is seen as one) and the
    upper bounds of its time histograms."""
    return {"time_s": stats.get("uptime_s", 0.0), "time_buckets_s": list(time_buckets_s),
            "stats": stats}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zeroserve</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:right;white-space:nowrap}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
#status{color:#666}#status.bad{color:#b00}
.plots{display:flex;flex-wrap:wrap;gap:1em}
.plot{background:#fff;border:1px solid #ddd;padding:.4em}
.plot h3{font-size:.9em;margin:0 0 .2em;font-weight:normal}
.legend span{margin-right:1em;font-size:.85em}
#keyform{display:none;margin:1em 0;padding:1em;border:1px solid #e0c000;background:#fff8d0}
.serving{color:#070}.draining{color:#a60}
</style></head><body>
<h1>zeroserve <span id="broker"></span></h1>
<div id="status">connecting…</div>
<form id="keyform"><label>API key <input id="key" type="password" autocomplete="off"></label>
<button type="submit">Use key</button> <span id="keyerror"></span></form>
<div>up <span data-field="uptime">-</span> s · dropped malformed messages
<span data-field="malformed">-</span> · updates <span id="updates">0</span></div>
<h2>Plots (last minutes)</h2>
<div class="plots">
<div class="plot"><h3>requests/s</h3><canvas id="plot-rate" width="360" height="140"></canvas></div>
<div class="plot"><h3>p99 queue wait + mean execution (ms)</h3>
<canvas id="plot-latency" width="360" height="140"></canvas></div>
<div class="plot"><h3>mean batch size</h3>
<canvas id="plot-batch" width="360" height="140"></canvas></div>
</div><div class="legend" id="legend"></div>
<h2>Endpoints</h2>
<table id="endpoints"><thead><tr><th>endpoint</th><th>queued</th><th>req/s</th>
<th>requests</th><th>batches</th><th>mean batch</th><th>batch now</th><th>wait ms</th>
<th>p99 wait ms</th><th>exec ms</th><th>fitted a·n+b</th><th>limits</th><th>streams</th>
</tr></thead><tbody></tbody></table>
<h2>Batch sizes</h2><table id="sizes"><thead><tr><th>endpoint</th><th>size × batches</th>
</tr></thead><tbody></tbody></table>
<h2>Workers</h2>
<table id="workers"><thead><tr><th>worker</th><th>service</th><th>slots</th><th>in flight</th>
<th>state</th><th>heard</th></tr></thead><tbody></tbody></table>
<h2>Jobs</h2><div id="jobs">-</div>
<script>
"use strict";
const HISTORY = __HISTORY__;
const COLORS = ["#1f77b4","#d62728","#2ca02c","#ff7f0e","#9467bd","#8c564b","#e377c2","#17becf"];
const history = {};  // endpoint -> [{t, rate, latency, batch}]
let previous = null, updates = 0;

function key() { return sessionStorage.getItem("zeroserve-key") || ""; }
function text(el, value) { if (el.textContent !== String(value)) el.textContent = value; }
function fixed(x, digits) { return Number.isFinite(x) ? x.toFixed(digits) : "-"; }

function row(tbody, id, attr, cells) {
  let tr = tbody.querySelector("tr[" + attr + "=\\"" + CSS.escape(id) + "\\"]");
  if (!tr) {
    tr = document.createElement("tr");
    tr.setAttribute(attr, id);
    for (const name of Object.keys(cells)) {
      const td = document.createElement("td");
      td.dataset.field = name;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
  for (const [name, value] of Object.entries(cells)) {
    text(tr.querySelector("td[data-field=\\"" + name + "\\"]"), value);
  }
  return tr;
}

function prune(tbody, attr, keep) {
  for (const tr of Array.from(tbody.children)) {
    if (!keep.has(tr.getAttribute(attr))) tr.remove();
  }
}

function p99(buckets, before, bounds) {
  const counts = buckets.map((n, i) => n - ((before && before[i]) || 0));
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return NaN;
  let running = 0;
  for (let i = 0; i < counts.length; i++) {
    running += counts[i];
    if (running >= 0.99 * total) return i < bounds.length ? bounds[i] * 1000 : Infinity;
  }
  return NaN;
}

function rowsOf(sizes) {
  let rows = 0, batches = 0;
  for (const [size, n] of Object.entries(sizes || {})) { rows += Number(size) * n; batches += n; }
  return [rows, batches];
}

function interval(name, e, before, dt, bounds) {
  const old = before || {requests: 0, batches: 0, batch_sizes: {}, exec_s: {sum: 0},
                         queue_wait_s: {buckets: []}};
  const restarted = e.requests < old.requests;
  const base = restarted ? {requests: 0, batches: 0, batch_sizes: {}, exec_s: {sum: 0},
                            queue_wait_s: {buckets: []}} : old;
  const [rows, batches] = rowsOf(e.batch_sizes), [oldRows, oldBatches] = rowsOf(base.batch_sizes);
  const newBatches = batches - oldBatches;
  const execMs = newBatches > 0 ? 1000 * (e.exec_s.sum - base.exec_s.sum) / newBatches : NaN;
  return {
    rate: (e.requests - base.requests) / dt,
    batch: newBatches > 0 ? (rows - oldRows) / newBatches : NaN,
    exec: execMs,
    wait: p99(e.queue_wait_s.buckets || [], base.queue_wait_s.buckets, bounds),
  };
}

function draw(canvasId, field, names) {
  const canvas = document.getElementById(canvasId), g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 44, bottom = 16;
  g.clearRect(0, 0, w, h);
  let top = 0, t0 = Infinity, t1 = -Infinity;
  for (const name of names) {
    for (const p of history[name]) {
      if (Number.isFinite(p[field])) top = Math.max(top, p[field]);
      t0 = Math.min(t0, p.t); t1 = Math.max(t1, p.t);
    }
  }
  top = top > 0 ? top * 1.1 : 1;
  g.strokeStyle = "#ccc"; g.fillStyle = "#666"; g.font = "10px sans-serif";
  g.beginPath(); g.moveTo(left, 4); g.lineTo(left, h - bottom); g.lineTo(w - 4, h - bottom);
  g.stroke();
  g.fillText(top >= 100 ? top.toFixed(0) : top.toPrecision(2), 2, 12);
  g.fillText("0", 2, h - bottom);
  if (t1 > t0) g.fillText("-" + Math.round(t1 - t0) + " s", left, h - 3);
  const span = Math.max(t1 - t0, 1);
  names.forEach((name, i) => {
    g.strokeStyle = COLORS[i % COLORS.length]; g.lineWidth = 1.5; g.beginPath();
    let drawing = false;
    for (const p of history[name]) {
      const v = p[field];
      if (!Number.isFinite(v)) { drawing = false; continue; }
      const x = left + (w - left - 4) * (p.t - t0) / span;
      const y = h - bottom - (h - bottom - 4) * v / top;
      if (drawing) g.lineTo(x, y); else g.moveTo(x, y);
      drawing = true;
    }
    g.stroke();
  });
  canvas.dataset.points = names.reduce((n, name) => n + history[name].length, 0);
}

function render(data) {
  const stats = data.stats, now = data.time_s, bounds = data.time_buckets_s;
  if (previous && now === previous.time_s) return;  // the same snapshot again
  const dt = previous ? now - previous.time_s : 0;
  text(document.getElementById("broker"), "broker " + stats.broker_id);
  text(document.querySelector("[data-field=uptime]"), stats.uptime_s.toFixed(0));
  text(document.querySelector("[data-field=malformed]"), stats.malformed_dropped);
  const endpoints = document.querySelector("#endpoints tbody");
  const sizes = document.querySelector("#sizes tbody");
  const names = Object.keys(stats.endpoints).sort();
  for (const name of names) {
    const e = stats.endpoints[name], m = e.latency_model;
    const before = previous && previous.stats.endpoints[name];
    const now_ = dt > 0 ? interval(name, e, before, dt, bounds) : null;
    if (now_) {
      (history[name] = history[name] || []).push({
        t: now, rate: now_.rate, batch: now_.batch,
        latency: (Number.isFinite(now_.wait) ? now_.wait : 0) +
                 (Number.isFinite(now_.exec) ? now_.exec : 0)});
      if (history[name].length > HISTORY) history[name].shift();
    }
    const s = e.streams;
    row(endpoints, name, "data-endpoint", {
      name: name, queued: e.queued, rate: now_ ? fixed(now_.rate, 1) : "-",
      requests: e.requests, batches: e.batches, mean_batch: fixed(e.mean_batch_size, 2),
      batch_now: now_ ? fixed(now_.batch, 2) : "-",
      wait_ms: fixed(e.mean_queue_wait_ms, 2), p99_wait_ms: now_ ? fixed(now_.wait, 1) : "-",
      exec_ms: fixed(e.mean_exec_ms, 2),
      model: (1000 * m.a_s_per_row).toFixed(3) + " ms/row + " + (1000 * m.b_s).toFixed(2) +
             " ms (" + m.samples + ")",
      limits: e.max_batch_size + " / " + e.max_latency_ms.toFixed(0) + " ms",
      streams: s ? s.active + " active, " + s.started + " started, " + s.chunks + " chunks, " +
        s.cancelled + " cancelled, " + s.lost_mid_stream + " lost, first chunk " +
        fixed(s.mean_first_chunk_ms, 1) + " ms" : "-"});
    row(sizes, name, "data-endpoint", {name: name, sizes: Object.entries(e.batch_sizes)
      .map(([k, v]) => k + "×" + v).join(", ") || "-"});
  }
  prune(endpoints, "data-endpoint", new Set(names));
  prune(sizes, "data-endpoint", new Set(names));
  const workers = document.querySelector("#workers tbody");
  for (const w of stats.workers) {
    const tr = row(workers, w.worker_id, "data-worker", {
      id: w.worker_id, service: w.service, slots: w.slots, in_flight: w.in_flight,
      state: w.draining ? "draining" : "serving",
      heard: w.last_heartbeat_s.toFixed(1) + " s ago"});
    tr.querySelector("[data-field=state]").className = w.draining ? "draining" : "serving";
  }
  prune(workers, "data-worker", new Set(stats.workers.map(w => w.worker_id)));
  const jobs = stats.jobs || {};
  const stored = Object.entries(jobs.stored || {}).map(([k, v]) => k + " " + v).join(", ");
  text(document.getElementById("jobs"), stored ? stored + "; job lanes " + (jobs.lanes || 0) +
       ", free job slots " + (jobs.free_slots || 0) : "none");
  // endpoints that had traffic in the plotted minutes (idle ones would crowd the legend)
  const plotted = names.filter(n => history[n] && history[n].some(p => p.rate > 0));
  draw("plot-rate", "rate", plotted);
  draw("plot-latency", "latency", plotted);
  draw("plot-batch", "batch", plotted);
  const legend = document.getElementById("legend");
  legend.innerHTML = "";
  plotted.forEach((n, i) => {
    const span = document.createElement("span");
    span.style.color = COLORS[i % COLORS.length]; span.textContent = "━ " + n;
    legend.appendChild(span);
  });
  previous = data;
  text(document.getElementById("updates"), ++updates);
}

function status(message, bad) {
  const el = document.getElementById("status");
  text(el, message); el.className = bad ? "bad" : "";
}

async function refresh() {
  const headers = key() ? {"Authorization": "Bearer " + key()} : {};
  try {
    const answer = await fetch("ui/data", {headers: headers, cache: "no-store"});
    if (answer.status === 401 || answer.status === 403) {
      document.getElementById("keyform").style.display = "block";
      text(document.getElementById("keyerror"), key() ? "that key was refused" : "");
      status("an API key is needed", true);
      return;
    }
    if (!answer.ok) {
      status("the data call answered " + answer.status, true);
      return;
    }
    document.getElementById("keyform").style.display = "none";
    render(await answer.json());
    status("live, " + new Date().toLocaleTimeString(), false);
  } catch (err) {
    status("no answer: " + err, true);
  }
}

document.getElementById("keyform").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem("zeroserve-key", document.getElementById("key").value);
  refresh();
});
refresh();
setInterval(refresh, 1000);
</script></body></html>
""".replace("__HISTORY__", str(HISTORY_POINTS))
