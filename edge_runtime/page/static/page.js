// twinspect station page. Plain JS, no build step, no library: the line PC is offline.
// Reads: /api/events (server-sent state, once a second), /api/cameras/NAME/frame.jpg (the
// newest annotated frame, polled), /api/gallery, /api/threshold/preview, /api/versions.
// Changes (POST, need the token): /api/threshold, /api/rollback, /api/relabel.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, text = "") => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
};
const fmt = (v, d = 4) => (v === null || v === undefined ? "–" : Number(v).toPrecision(d));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + " %");
const COLS = ["OK", "NG", "NOVEL", "ERROR", "late"];

let last = null;            // the newest state from the server
let versionSeen = null;     // re-read the versions table when the model's version changes
let itemsSeen = -1;         // re-read the gallery when the NG count changes
let galleryItems = {};      // id → item, for the viewer
let viewing = null;         // the item in the viewer

// ------------------------------------------------------------------ token
function token() { return sessionStorage.getItem("twinspect-token") || ""; }
function showToken() { $("#token-state").textContent = token() ? "set for this tab" : "not set"; }
$("#token-save").addEventListener("click", () => {
  sessionStorage.setItem("twinspect-token", $("#token").value.trim());
  $("#token").value = "";
  showToken();
});
showToken();

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const data = await r.json().catch(() => ({ error: "no JSON answer" }));
  if (!r.ok) throw new Error(`${r.status}: ${data.error || r.statusText}`);
  return data;
}
function say(sel, text, ok) {
  const m = $(sel);
  m.textContent = text;
  m.className = "msg " + (ok ? "done" : "error");
}

// ------------------------------------------------------------------ live view
function cameraCard(name) {
  let card = $(`.camera[data-camera="${CSS.escape(name)}"]`);
  if (card) return card;
  card = el("div", { class: "camera", "data-camera": name });
  card.append(el("img", { class: "frame", alt: `camera ${name}, newest frame` }));
  const cap = el("div", { class: "caption" });
  for (const k of ["name", "seq", "verdict", "fps", "state"]) cap.append(el("span", { class: k }));
  card.append(cap);
  $("#cameras").append(card);
  const opt = el("option", { value: name }, name);
  $("#gallery-camera").append(opt);
  pollFrames(name, card.querySelector("img"));
  return card;
}

// One request at a time per camera, a few per second at most: the line comes first.
async function pollFrames(name, img) {
  for (;;) {
    let wait = 200;
    try {
      const r = await fetch(`/api/cameras/${encodeURIComponent(name)}/frame.jpg`, { cache: "no-store" });
      const seq = r.headers.get("X-Frame-Seq");
      if (r.ok && seq !== img.dataset.seq) {
        const url = URL.createObjectURL(await r.blob());
        const old = img.src;
        img.src = url;
        img.dataset.seq = seq;
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      } else if (!r.ok) wait = 500;
    } catch (e) { wait = 1000; }
    await new Promise((res) => setTimeout(res, wait));
  }
}

function renderCameras(cams) {
  for (const c of cams) {
    const card = cameraCard(c.name);
    $(".name", card).textContent = c.name;
    $(".seq", card).textContent = `frame ${c.frame ?? "–"} (${c.seq} seen)`;
    const v = $(".verdict", card);
    v.textContent = c.verdict ? `${c.verdict} ${fmt(c.score)}` : "–";
    v.className = "verdict v-" + (c.verdict || "");
    $(".fps", card).textContent = `${Number(c.fps).toFixed(1)} fps`;
    $(".state", card).textContent = c.ok === false ? `${c.state} (stale)` : c.state;
  }
}

// ------------------------------------------------------------------ counts and trend
function row(tbody, label, r, cls = "") {
  const tr = el("tr", { class: cls, "data-key": label });
  tr.append(el("td", {}, label));
  for (const k of COLS) tr.append(el("td", { "data-k": k }, String(r[k])));
  tr.append(el("td", { "data-k": "yield" }, pct(r.yield)));
  tbody.append(tr);
}
function renderCounts(counts) {
  const t = $("#totals tbody");
  t.replaceChildren();
  for (const [name, r] of Object.entries(counts.cameras)) row(t, name, r);
  row(t, "all", counts.all, "all");
  for (const [sel, rows] of [["#shifts", counts.shifts], ["#hours", counts.hours]]) {
    const b = $(sel + " tbody");
    b.replaceChildren();
    for (const r of rows) row(b, r.key, r);
  }
}

const VERDICT_COLOR = { OK: "#2e9d3a", NG: "#d8383a", NOVEL: "#e0a000", ERROR: "#e0a000" };
function renderTrend(trend, threshold) {
  const cv = $("#trend"), g = cv.getContext("2d");
  const W = cv.width, H = cv.height, L = 50, B = 20;
  g.clearRect(0, 0, W, H);
  const pts = Object.values(trend).flat();
  if (!pts.length) { g.fillText("no scores yet", L, H / 2); return; }
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
  const top = 1.15 * Math.max(threshold || 0, ...pts.map((p) => p[1]), ...pts.map((p) => p[2] || 0));
  const x = (t) => L + (W - L - 10) * (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5);
  const y = (s) => H - B - (H - B - 8) * (s / top);
  g.strokeStyle = "#ccc"; g.fillStyle = "#555"; g.font = "11px sans-serif";
  for (let k = 0; k <= 4; k++) {
    const s = (top * k) / 4;
    g.beginPath(); g.moveTo(L, y(s)); g.lineTo(W - 10, y(s)); g.stroke();
    g.fillText(s.toPrecision(3), 4, y(s) + 4);
  }
  Object.values(trend).forEach((ps, i) => {
    for (const p of ps) {   // colour: the verdict; shape: the camera (square, circle, …)
      g.fillStyle = VERDICT_COLOR[p[3]] || "#555";
      if (i % 2) { g.beginPath(); g.arc(x(p[0]), y(p[1]), 2.5, 0, 2 * Math.PI); g.fill(); }
      else g.fillRect(x(p[0]) - 2, y(p[1]) - 2, 4, 4);
    }
    g.strokeStyle = "#d8383a"; g.setLineDash([5, 3]); g.beginPath();   // the threshold each part met
    ps.forEach((p, k) => {   // a step: a threshold holds until the part that met the next
      if (!k) return g.moveTo(x(p[0]), y(p[2]));
      g.lineTo(x(p[0]), y(ps[k - 1][2]));
      g.lineTo(x(p[0]), y(p[2]));
    });
    g.stroke(); g.setLineDash([]);
  });
  if (threshold !== undefined) {   // the threshold in force now
    g.strokeStyle = "#d8383a"; g.beginPath(); g.moveTo(L, y(threshold)); g.lineTo(W - 10, y(threshold)); g.stroke();
  }
}

function renderDrift(model) {
  const cams = Object.entries(model.drift).filter(([, v]) => v !== null);
  const value = cams.length ? Math.max(...cams.map(([, v]) => v)) : null;
  $("#drift-text").textContent = value === null ? "–" : value.toFixed(2) + "×";
  $("#drift-scale").textContent = model.scale_from === "median_good"
    ? "(÷ calibration median good score)" : "(÷ threshold: the sidecar has no median)";
  const f = Math.max(0, Math.min(1, (value || 0) / 2)), a = Math.PI * (1 - f);
  const arc = $("#drift-arc");
  arc.setAttribute("d", `M10 60 A50 50 0 0 1 ${60 + 50 * Math.cos(a)} ${60 - 50 * Math.sin(a)}`);
  const warn = model.scale_from === "median_good" ? [1.25, 1.6] : [0.6, 0.85];
  arc.setAttribute("class", "gauge-fill" + (value > warn[1] ? " bad" : value > warn[0] ? " warn" : ""));
}

// ------------------------------------------------------------------ state from the server
function render(s) {
  last = s;
  const ins = $("#inspection");
  ins.textContent = s.inspection.state + (s.inspection.error ? `: ${s.inspection.error}` : "");
  ins.className = "badge " + s.inspection.state;
  renderCameras(s.cameras);
  renderCounts(s.counts);
  const m = s.models[0];
  $("#threshold-now").textContent = fmt(m.threshold, 6);
  $("#threshold-label").textContent = `(${m.label})`;
  renderTrend(s.trend, m.threshold);
  renderDrift(m);
  const alert = $("#log-alert");
  alert.hidden = m.log_ok;
  alert.textContent = m.log_ok ? "" : "change log refused: " + m.log_error;
  if (m.version !== versionSeen || !m.log_ok) { versionSeen = m.version; loadVersions(); }
  if (s.ng_items !== itemsSeen) { itemsSeen = s.ng_items; loadGallery(); }
}
const events = new EventSource("/api/events");
events.addEventListener("state", (e) => render(JSON.parse(e.data)));

// ------------------------------------------------------------------ gallery
const fileUrl = (camera, rel) =>
  `/files/${encodeURIComponent(camera)}/` + rel.split("/").map(encodeURIComponent).join("/");
function epoch(input) { return input.value ? new Date(input.value).getTime() / 1000 : null; }
async function loadGallery() {
  const q = new URLSearchParams({ limit: "200" });
  const since = epoch($("#since")), until = epoch($("#until"));
  if (since !== null) q.set("since", since);
  if (until !== null) q.set("until", until);
  if ($("#gallery-camera").value) q.set("camera", $("#gallery-camera").value);
  const r = await fetch("/api/gallery?" + q);
  const g = await r.json();
  if (!r.ok) { $("#gallery-count").textContent = g.error; return; }
  $("#gallery-count").textContent = `${g.items.length} shown of ${g.total} NG parts`;
  const grid = $("#gallery-grid");
  grid.replaceChildren();
  galleryItems = {};
  for (const it of g.items) {
    galleryItems[it.id] = it;
    const d = el("div", { class: "item", "data-id": it.id, "data-frame": it.frame });
    // the heatmap overlay when the run saved one: the part with where it differs drawn on
    d.append(el("img", { src: fileUrl(it.camera, it.heat || it.crop), alt: `part ${it.part_id}` }));
    const meta = el("div", { class: "meta" });
    meta.append(el("div", {}, `part ${it.part_id} · ${it.camera}`));
    meta.append(el("div", { class: "score" }, `score ${fmt(it.score)} > ${fmt(it.threshold)}`));
    if (it.nearest) meta.append(el("div", {}, `nearest: ${it.nearest}`));
    meta.append(el("div", { class: "muted" }, it.at.replace("T", " ")));
    if (it.label) meta.append(el("span", { class: "label-badge" }, "→ " + it.label));
    d.append(meta);
    d.addEventListener("click", () => openViewer(it, g.types));
    grid.append(d);
  }
}
$("#gallery-refresh").addEventListener("click", loadGallery);

function openViewer(it, types) {
  viewing = it;
  $("#viewer-img").src = fileUrl(it.camera, it.full || it.crop);
  $("#viewer-info").textContent =
    `part ${it.part_id} · camera ${it.camera} · frame ${it.frame} · ${it.at.replace("T", " ")} · ` +
    `score ${fmt(it.score)} (threshold ${fmt(it.threshold)})` + (it.nearest ? ` · nearest ${it.nearest}` : "");
  const sel = $("#relabel-label");
  sel.replaceChildren(el("option", { value: "good" }, "good"));
  for (const [label, name] of Object.entries(types)) {
    sel.append(el("option", { value: label }, label === name ? name : `${name} (${label})`));
  }
  sel.append(el("option", { value: "__new__" }, "new type…"));
  $("#relabel-new").hidden = true;
  say("#relabel-msg", it.label ? `filed as ${it.label}` : "", true);
  $("#viewer").hidden = false;
}
$("#relabel-label").addEventListener("change", (e) => { $("#relabel-new").hidden = e.target.value !== "__new__"; });
$("#viewer-close").addEventListener("click", () => { $("#viewer").hidden = true; });
$("#relabel-go").addEventListener("click", async () => {
  const v = $("#relabel-label").value;
  const label = v === "__new__" ? $("#relabel-new").value : v;
  try {
    const r = await post("/api/relabel", { camera: viewing.camera, frame: viewing.frame, label, who: $("#who").value || undefined });
    say("#relabel-msg", `copied to ${r.file}`, true);
    loadGallery();
  } catch (e) { say("#relabel-msg", e.message, false); }
});

// ------------------------------------------------------------------ threshold and versions
let previewTimer = null;
$("#proposed").addEventListener("input", () => { clearTimeout(previewTimer); previewTimer = setTimeout(loadPreview, 250); });
async function loadPreview() {
  const t = $("#proposed").value;
  if (t === "") return;
  const r = await fetch("/api/threshold/preview?threshold=" + encodeURIComponent(t));
  const p = await r.json();
  if (!r.ok) { $("#preview").textContent = p.error; return; }
  const lines = [`at ${fmt(p.threshold, 6)} (now ${fmt(p.current, 6)}):`];
  const c = p.calibration;
  if (c.at_proposed) {
    const a = c.at_proposed, b = c.at_current;
    lines.push(`calibration data: escape ${pct(a.escape_rate)} (now ${pct(b.escape_rate)}), overkill ${pct(a.overkill_rate)} (now ${pct(b.overkill_rate)}) — ${a.n_defect} defective and ${a.n_good} good validation parts`);
  } else {
    lines.push(c.note);
    if (c.at_calibrated) lines.push(`calibrated at ${fmt(c.at_calibrated.value, 6)}: escape ${pct(c.at_calibrated.escape_rate)}, overkill ${pct(c.at_calibrated.overkill_rate)}`);
  }
  const n = p.recent;
  lines.push(`this run, last ${n.n} parts: ${n.rejected_at_proposed} would be rejected (now ${n.rejected_now}); ${n.passed_now_rejected_then} passed now would be rejected, ${n.rejected_now_passed_then} rejected now would pass`);
  $("#preview").textContent = lines.join("\n");
}
$("#apply").addEventListener("click", async () => {
  const raw = $("#proposed").value;
  const threshold = raw === "" ? null : Number(raw);
  try {
    const r = await post("/api/threshold", { threshold, reason: $("#reason").value, who: $("#who").value || undefined });
    say("#threshold-msg", `version ${r.version}: threshold ${fmt(r.old, 6)} → ${fmt(r.new, 6)}`, true);
    loadVersions();
  } catch (e) { say("#threshold-msg", e.message, false); }
});

async function loadVersions() {
  const r = await fetch("/api/versions");
  const v = await r.json();
  const b = $("#versions tbody");
  b.replaceChildren();
  if (!r.ok || !v.ok) return;
  for (const e of v.entries) {
    const tr = el("tr", { "data-version": e.version });
    const what = e.action === "rollback" ? `rollback to v${e.restored}` : e.action;
    for (const t of [`v${e.version}` + (e.version === v.current ? " (in force)" : ""), e.at.replace("T", " "), e.who, what, fmt(e.new, 6), e.why]) tr.append(el("td", {}, t));
    const td = el("td");
    if (e.version !== v.current) {
      const btn = el("button", { type: "button", class: "rollback", "data-version": e.version }, "roll back to this");
      btn.addEventListener("click", () => rollback(e.version));
      td.append(btn);
    }
    tr.append(td);
    b.append(tr);
  }
}
async function rollback(version) {
  try {
    const r = await post("/api/rollback", { version, reason: $("#reason").value, who: $("#who").value || undefined });
    say("#threshold-msg", `version ${r.version}: rolled back to v${version}, threshold ${fmt(r.new, 6)}`, true);
    loadVersions();
  } catch (e) { say("#threshold-msg", e.message, false); }
}
