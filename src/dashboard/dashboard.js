// The rathole dashboard: plain DOM and fetch against the admin API of the
// process that serves this page (relative URLs, so it also works behind a
// reverse proxy under a path). Nothing else is loaded.
"use strict";

const POLL_MS = 1000;          // /api/status
const SLOW_EVERY = 3;          // /api/events and /api/services every 3 polls
const HISTORY = 300;           // samples kept for the graph: 5 minutes at 1 s
const TOKEN_KEY = "rathole.token";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  status: null,
  services: null,            // GET /api/services, or null when this build has none
  servicesMissing: false,
  history: [],               // {t, in, out}: total bytes at time t (ms)
  last: new Map(),           // service name -> {t, in, out}, for per-service rates
  rates: new Map(),          // service name -> {in, out} bytes/s
  polls: 0,
  busy: false,               // a poll is running
  editing: null,             // {name, etag, readonly} while the form is open
  armed: null,               // the delete button waiting for its confirmation
};

// ---- small helpers ----

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function bytes(n) {
  if (n === undefined || n === null) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + u[i];
}

const rate = (n) => bytes(n) + "/s";

function duration(s) {
  if (typeof s !== "number") return "-";
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  const parts = [];
  if (d) parts.push(d + "d");
  if (d || h) parts.push(h + "h");
  if (d || h || m) parts.push(m + "m");
  parts.push((s % 60) + "s");
  return parts.join(" ");
}

function notice(text, kind) {
  const n = $("notice");
  n.textContent = text;
  n.className = "notice " + (kind || "");
  n.hidden = !text;
}

// ---- the API ----

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error) || "HTTP " + status);
    this.status = status;
    this.body = body;
  }
}

async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({}, opts.headers);
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body,
                                cache: "no-store", credentials: "omit" });
  if (r.status === 401) {
    askToken(state.token ? "the token was refused" : "");
    throw new HttpError(401, { error: "a token is needed" });
  }
  const type = r.headers.get("Content-Type") || "";
  const body = type.startsWith("application/json") ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) throw new HttpError(r.status, typeof body === "object" ? body : { error: String(body).trim() });
  return { body, etag: r.headers.get("ETag") };
}

function askToken(why) {
  $("login").hidden = false;
  $("login-error").textContent = why || "";
  if (document.activeElement !== $("token")) $("token").focus();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  $("login").hidden = true;
  $("logout").hidden = false;
  poll();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  $("logout").hidden = true;
  poll();
});

// ---- polling ----

// One at a time: a slow answer makes the next tick skip, not pile up.
// A tab in the background asks nothing (the graph shows the gap's average).
async function poll() {
  if (state.busy || document.hidden) return;
  state.busy = true;
  try {
    const { body } = await api("api/status");
    state.status = body;
    $("login").hidden = true;
    $("logout").hidden = !state.token;
    setLink(true);
    sample(body);
    renderSummary(body);
    if (state.polls++ % SLOW_EVERY === 0) {
      await Promise.all([loadEvents(), loadServices()]);
    }
    renderServices();
  } catch (e) {
    setLink(false, e);
  } finally {
    state.busy = false;
  }
  drawGraph();
}

function setLink(ok, err) {
  const l = $("link");
  if (ok) { l.textContent = "live"; l.className = "pill up"; return; }
  if (err && err.status === 401) { l.textContent = "token needed"; l.className = "pill wait"; return; }
  l.textContent = "unreachable, retrying";
  l.className = "pill down";
}

async function loadEvents() {
  try {
    const { body } = await api("api/events");
    renderEvents(body.events || []);
  } catch (e) {
    if (e.status === 404) renderEvents([]);
    else throw e;
  }
}

async function loadServices() {
  try {
    const { body } = await api("api/services");
    state.services = body;
    state.servicesMissing = false;
  } catch (e) {
    if (e.status !== 404) throw e;
    state.services = null;
    state.servicesMissing = true;
  }
}

// Totals and per-service rates from two consecutive status replies.
function sample(st) {
  const t = Date.now();
  let tin = 0, tout = 0;
  for (const s of st.services || []) {
    tin += s.bytes_in || 0;
    tout += s.bytes_out || 0;
    const prev = state.last.get(s.name);
    if (prev && t > prev.t && s.bytes_in >= prev.in && s.bytes_out >= prev.out) {
      const dt = (t - prev.t) / 1000;
      state.rates.set(s.name, { in: (s.bytes_in - prev.in) / dt, out: (s.bytes_out - prev.out) / dt });
    }
    state.last.set(s.name, { t, in: s.bytes_in || 0, out: s.bytes_out || 0 });
  }
  const names = new Set((st.services || []).map((s) => s.name));
  for (const n of [...state.last.keys()]) if (!names.has(n)) { state.last.delete(n); state.rates.delete(n); }
  state.history.push({ t, in: tin, out: tout });
  if (state.history.length > HISTORY + 1) state.history.shift();
}

// Bytes per second between each pair of samples; a service that went away
// (totals going down) gives no negative rate.
function series() {
  const h = state.history, out = [];
  for (let i = 1; i < h.length; i++) {
    const dt = (h[i].t - h[i - 1].t) / 1000;
    if (dt <= 0) continue;
    out.push({ t: h[i].t, in: Math.max(0, h[i].in - h[i - 1].in) / dt,
               out: Math.max(0, h[i].out - h[i - 1].out) / dt });
  }
  return out;
}

// ---- rendering ----

function renderSummary(st) {
  $("role").textContent = st.role || "";
  $("version").textContent = st.version || "-";
  $("uptime").textContent = duration(st.uptime_seconds);
  $("transport").textContent = st.transport || "-";
  if (st.role === "client") {
    $("addr-label").textContent = (st.remote_addrs || []).length > 1 ? "servers" : "server";
    $("addr").textContent = (st.remote_addrs || [st.remote_addr || "-"]).join(", ");
  } else {
    $("addr-label").textContent = "listening on";
    $("addr").textContent = (st.bind_addr || "-") + (st.listening === false ? " (not listening)" : "");
  }
  document.title = "rathole " + (st.role || "");
}

// The control channel: a boolean on the server, a state name on the client.
function channelPill(cc) {
  const up = cc === true || cc === "established";
  const text = cc === true ? "up" : cc === false ? "down" : String(cc);
  const kind = up ? "up" : [false, "retrying", "withdrawn"].includes(cc) ? "down" : "wait";
  return el("span", { class: "pill " + kind, text });
}

function configOf(name) {
  const list = state.services && state.services.services;
  return list ? list.find((s) => s.name === name) : undefined;
}

// Rows are made once per service (and per replica or upstream) and updated
// in place at each poll: a button stays the same element between polls, so
// a click, the focus or an armed delete survive the refresh.
const rowCache = new Map();     // key -> {tr, td: {class: cell}, seen}

function cachedRow(key, attrs, classes) {
  let r = rowCache.get(key);
  if (!r) {
    const td = {};
    const cells = classes.map(([cls, span]) => {
      const name = cls.replace(/^n-/, "");
      return (td[name] = el("td", { class: cls.startsWith("n-") ? "n " + name : name, colspan: span }));
    });
    r = { tr: el("tr", attrs, ...cells), td };
    rowCache.set(key, r);
  }
  r.seen = true;
  return r;
}

// A cell's text and raw value (data-value), touched only when they change.
function put(td, text, value) {
  text = text === undefined || text === null ? "-" : String(text);
  if (td.textContent !== text) td.textContent = text;
  const v = value === undefined || value === null ? "" : String(value);
  if (td.dataset.value !== v) td.dataset.value = v;
}

// A cell made of elements: rebuilt only when its key changes.
function putNodes(td, key, make) {
  if (td.dataset.key === key) return;
  td.dataset.key = key;
  td.replaceChildren(...make().filter((n) => n));
}

const MAIN_CELLS = [["name"], ["type"], ["addr"], ["state"], ["n-active"], ["n-served"],
                    ["n-refused"], ["n-in"], ["n-out"], ["n-rate-in"], ["n-rate-out"],
                    ["source"], ["actions"]];
const SUB_CELLS = [["label", 2], ["pooled"], ["state"], ["n-active"], ["n-served"], ["gap"],
                   ["n-in"], ["n-out"], ["extra", 4]];

function renderServices() {
  const st = state.status;
  if (!st) return;
  const tb = document.querySelector("#services tbody");
  const client = st.role === "client";
  const rows = [];
  for (const r of rowCache.values()) r.seen = false;
  for (const s of st.services || []) {
    const rt = state.rates.get(s.name) || { in: 0, out: 0 };
    const cfg = configOf(s.name);
    const td = cachedRow("s:" + s.name, { "data-service": s.name }, MAIN_CELLS).td;
    put(td.name, s.name);
    put(td.type, s.type || "tcp");
    // a server service reached by name (virtual hosts) shows its hostnames
    put(td.addr, client ? s.local_addr
      : [s.bind_addr, ...(s.hostnames || [])].filter((x) => x).join(", ") || null);
    td.addr.title = client ? "local_addr" : s.client ? "client " + s.client
      : s.hostnames ? "bind_addr, hostnames (vhost = " + s.vhost + ")" : "bind_addr";
    const failing = s.health_check_interval > 0 && s.healthy === false;
    putNodes(td.state, String(s.control_channel) + failing, () => [channelPill(s.control_channel),
      failing ? el("span", { class: "pill down", text: "local service failing",
                             title: s.health_check_failures + " health checks failed" }) : null]);
    put(td.active, s.connections_active, s.connections_active);
    put(td.served, s.connections_total, s.connections_total);
    put(td.refused, s.visitors_refused, s.visitors_refused);
    put(td.in, bytes(s.bytes_in), s.bytes_in);
    put(td.out, bytes(s.bytes_out), s.bytes_out);
    put(td["rate-in"], rate(rt.in), Math.round(rt.in));
    put(td["rate-out"], rate(rt.out), Math.round(rt.out));
    put(td.source, cfg ? cfg.source : "", cfg ? cfg.source : "");
    putNodes(td.actions, cfg ? cfg.source : "", () => actions(s.name, cfg));
    rows.push(td.name.parentNode);
    // a service's clients (server, with balance) or servers (client, with
    // several remote_addr), one line each; a lone one says nothing more
    if (s.balance || (s.replicas || []).length > 1)
      for (const o of s.replicas) rows.push(subRow(s.name, "replica", o.peer, o));
    if ((st.remote_addrs || []).length > 1 || (s.upstreams || []).length > 1)
      for (const o of s.upstreams) rows.push(subRow(s.name, "upstream", o.remote_addr, o));
  }
  if (!rows.length) {
    const td = cachedRow("none", {}, [["hint", 13]]).td;
    put(td.hint, "no services");
    rows.push(td.hint.parentNode);
  }
  for (const [k, r] of rowCache) if (!r.seen) rowCache.delete(k);
  const now = [...tb.children];
  if (now.length !== rows.length || now.some((n, i) => n !== rows[i])) tb.replaceChildren(...rows);
  const sv = state.services;
  $("add").hidden = !sv;
  $("persist").textContent = state.servicesMissing
    ? "This build's API cannot change services (no /api/services)."
    : sv && sv.persisted === false
      ? "Services added here last until the next restart (no services_file is set)."
      : sv ? "Services added here are saved in the services_file." : "";
}

// A replica (server) or an upstream (client) under its service's row.
function subRow(service, kind, label, o) {
  const known = new Set(["peer", "remote_addr", "control_channel", "state", "connections_active",
                         "connections_total", "bytes_in", "bytes_out", "data_channels_pooled"]);
  // an upstream's state names more than its control_channel's true or false
  const cc = o.state !== undefined ? o.state : o.control_channel;
  const extra = Object.entries(o).filter(([k, v]) => !known.has(k) && typeof v !== "object")
    .map(([k, v]) => k + " " + v).join(", ");
  const td = cachedRow("r:" + service + ":" + kind + ":" + label, { class: "sub", "data-sub": kind },
                       SUB_CELLS).td;
  put(td.label, kind + " " + (label || "?"));
  put(td.pooled, o.data_channels_pooled !== undefined ? o.data_channels_pooled + " pooled" : "");
  putNodes(td.state, String(cc), () => [cc !== undefined ? channelPill(cc) : null]);
  put(td.active, o.connections_active, o.connections_active);
  put(td.served, o.connections_total, o.connections_total);
  put(td.gap, "");
  put(td.in, bytes(o.bytes_in), o.bytes_in);
  put(td.out, bytes(o.bytes_out), o.bytes_out);
  put(td.extra, extra);
  return td.label.parentNode;
}

// The buttons look the service up when clicked: its ETag is the latest seen.
function actions(name, cfg) {
  if (!cfg) return [];
  const now = () => configOf(name) || cfg;
  if (cfg.source === "api") {
    return [el("button", { type: "button", class: "edit", text: "Edit", onclick: () => openEditor(now()) }),
            el("button", { type: "button", class: "delete danger", text: "Delete",
                           onclick: (ev) => removeService(ev.currentTarget, now()) })];
  }
  return [el("button", { type: "button", class: "view", text: "View", onclick: () => openEditor(now()) })];
}

function renderEvents(events) {
  const items = events.slice().reverse().map((e) => el("li", { class: e.level },
    el("time", { datetime: new Date(e.time * 1000).toISOString(),
                 text: new Date(e.time * 1000).toLocaleTimeString() }),
    el("span", { class: "lvl", text: e.level }),
    el("span", { class: "msg", text: e.message })));
  if (!items.length) items.push(el("li", { class: "hint", text: "nothing yet" }));
  $("events").replaceChildren(...items);
}

// ---- the graph ----

function drawGraph() {
  const c = $("graph"), dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || 960, h = c.clientHeight || 200;
  if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
  const g = c.getContext("2d");
  const css = getComputedStyle(document.documentElement);
  const color = (v) => css.getPropertyValue(v).trim();
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pts = series();
  const now = Date.now(), span = HISTORY * POLL_MS;
  const left = 70, top = 8, bottom = h - 20, right = w - 8;
  let max = 1024;
  for (const p of pts) max = Math.max(max, p.in, p.out);
  max = niceMax(max);
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = color("--line");
  g.fillStyle = color("--muted");
  g.lineWidth = 1;
  g.textAlign = "right";
  for (let i = 0; i <= 4; i++) {
    const y = bottom - (bottom - top) * i / 4;
    g.beginPath(); g.moveTo(left, y + .5); g.lineTo(right, y + .5); g.stroke();
    g.fillText(rate(max * i / 4), left - 6, y + 4);
  }
  for (let m = 0; m <= 5; m++) {
    const x = right - (right - left) * m * 60000 / span;
    g.textAlign = m === 0 ? "right" : m === 5 ? "left" : "center";
    g.fillText(m === 0 ? "now" : "-" + m + " min", x, h - 5);
  }
  const xOf = (t) => right - (right - left) * (now - t) / span;
  const yOf = (v) => bottom - (bottom - top) * v / max;
  // in: a filled area; out: a line over it (an echo has both the same)
  for (const [key, col] of [["in", "--in"], ["out", "--out"]]) {
    if (!pts.length) break;
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo : g.moveTo).call(g, xOf(p.t), yOf(p[key])));
    g.strokeStyle = color(col);
    g.lineWidth = key === "in" ? 1.2 : 1.8;
    g.stroke();
    if (key === "in") {
      g.lineTo(xOf(pts[pts.length - 1].t), bottom);
      g.lineTo(xOf(pts[0].t), bottom);
      g.closePath();
      g.globalAlpha = 0.25;
      g.fillStyle = color(col);
      g.fill();
      g.globalAlpha = 1;
    }
  }
  const lastp = pts[pts.length - 1];
  $("rates").textContent = lastp ? "in " + rate(lastp.in) + ", out " + rate(lastp.out) : "";
  $("span").textContent = "(last " + Math.round(span / 60000) + " minutes, every " + POLL_MS / 1000 + " s)";
}

// A round top for the axis: 1, 2 or 5 times a power of ten of a binary unit
// (KiB/s, MiB/s, ...), so that the labels read 2 MiB/s, not 2.38 MiB/s.
function niceMax(v) {
  let unit = 1;
  while (v / unit >= 1024) unit *= 1024;
  const x = v / unit, p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p * unit;
  return 10 * p * unit;
}

// ---- the form ----

const form = $("svc-form");
const addrKey = () => (state.status && state.status.role === "client" ? "local_addr" : "bind_addr");
const FORM_KEYS = ["type", "token", "nodelay"];

function clearErrors() {
  $("form-error").textContent = "";
  for (const e of form.querySelectorAll(".err[data-for]")) e.textContent = "";
}

function openEditor(cfg) {
  const readonly = cfg && cfg.source !== "api";
  const c = (cfg && cfg.config) || {};
  const ak = addrKey();
  clearErrors();
  state.editing = cfg ? { name: cfg.name, etag: cfg.etag, readonly } : null;
  $("editor-title").textContent = !cfg ? "Add a service" : readonly ? "Service " + cfg.name : "Edit service " + cfg.name;
  $("f-addr-label").textContent = ak;
  $("f-addr-err").dataset.for = ak;
  $("f-addr").placeholder = ak === "bind_addr" ? "0.0.0.0:5202" : "127.0.0.1:22";
  $("f-name").value = cfg ? cfg.name : "";
  $("f-type").value = c.type || "tcp";
  $("f-addr").value = c[ak] || "";
  $("f-token").value = "";
  $("f-token").placeholder = cfg && "token" in c ? "(set; type a new one to change it)" : "default_token";
  $("f-nodelay").value = c.nodelay === undefined ? "" : String(c.nodelay);
  const more = {};
  for (const [k, v] of Object.entries(c)) if (k !== ak && !FORM_KEYS.includes(k)) more[k] = v;
  $("f-more").value = Object.keys(more).length ? JSON.stringify(more, null, 1) : "";
  for (const f of form.elements) if (f.id !== "cancel") f.disabled = readonly;
  $("f-name").disabled = readonly || !!cfg;
  $("save").hidden = readonly;
  $("editor-note").textContent = readonly
    ? "Defined in the configuration file: change it there, then reload."
    : state.services && state.services.persisted === false
      ? "Not persisted: without services_file this service lasts until the next restart." : "";
  $("editor").hidden = false;
  (readonly ? $("cancel") : cfg ? $("f-addr") : $("f-name")).focus();
}

$("add").addEventListener("click", () => openEditor(null));
$("cancel").addEventListener("click", () => { $("editor").hidden = true; state.editing = null; });

// A message goes next to the field of its key; one about a key the form has
// no field for (typed in the JSON box) goes under that box.
function fieldError(key, msg) {
  const slot = form.querySelector('.err[data-for="' + CSS.escape(key) + '"]') ||
               form.querySelector('.err[data-for="*more"]');
  const text = slot.dataset.for === key ? msg : (key && key !== "*more" ? key + ": " : "") + msg;
  slot.textContent = slot.textContent ? slot.textContent + " " + text : text;
}

// The body of the PUT: the service's TOML keys.
function formBody() {
  const ed = state.editing;
  const old = ed ? (configOf(ed.name) || {}).config || {} : {};
  const body = {};
  const more = $("f-more").value.trim();
  if (more) {
    let extra;
    try { extra = JSON.parse(more); } catch (e) { throw { key: "*more", msg: "not JSON: " + e.message }; }
    if (!extra || typeof extra !== "object" || Array.isArray(extra)) throw { key: "*more", msg: "a JSON object is expected" };
    Object.assign(body, extra);
  }
  body.type = $("f-type").value;
  if ($("f-addr").value.trim()) body[addrKey()] = $("f-addr").value.trim();
  if ($("f-token").value) body.token = $("f-token").value;
  else if ("token" in old) body.token = old.token;   // unchanged (the server knows the redacted form)
  if ($("f-nodelay").value) body.nodelay = $("f-nodelay").value === "true";
  return body;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ed = state.editing;
  if (ed && ed.readonly) return;
  clearErrors();
  const name = ed ? ed.name : $("f-name").value.trim();
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) { fieldError("name", "letters, digits, '_', '-' and '.' only"); return; }
  let body;
  try { body = formBody(); } catch (e) { fieldError(e.key, e.msg); return; }
  const headers = { "Content-Type": "application/json" };
  if (ed && ed.etag) headers["If-Match"] = ed.etag;
  $("save").disabled = true;
  try {
    const { body: reply } = await api("api/services/" + encodeURIComponent(name),
                                      { method: "PUT", headers, body: JSON.stringify(body) });
    $("editor").hidden = true;
    state.editing = null;
    notice("Service " + name + " saved" + (reply && reply.persisted === false ? " (until the next restart)" : "") + ".", "ok");
  } catch (e) {
    if (e.status === 412) {
      $("form-error").textContent = "This service was changed meanwhile; the form now shows the new version: check and save again.";
      await loadServices();
      const fresh = configOf(name);
      if (fresh) openEditor(fresh);
      $("form-error").textContent = "This service was changed meanwhile; the form now shows the new version: check and save again.";
    } else if (e.body && Array.isArray(e.body.errors) && e.body.errors.length) {
      // every message next to the key it names
      for (const x of e.body.errors) fieldError(x.key || "", x.error || x.message || String(x));
    } else if (e.body && e.body.key) {
      fieldError(e.body.key, e.body.error || e.message);
    } else {
      $("form-error").textContent = e.message;
    }
  } finally {
    $("save").disabled = false;
  }
  await loadServices().catch(() => {});
  renderServices();
});

// Two clicks: the first arms the button for a few seconds.
async function removeService(btn, cfg) {
  if (state.armed !== btn) {
    state.armed = btn;
    btn.textContent = "Really delete?";
    setTimeout(() => { if (state.armed === btn) { state.armed = null; btn.textContent = "Delete"; } }, 4000);
    return;
  }
  state.armed = null;
  const headers = {};
  if (cfg.etag) headers["If-Match"] = cfg.etag;
  try {
    await api("api/services/" + encodeURIComponent(cfg.name), { method: "DELETE", headers });
    notice("Service " + cfg.name + " deleted.", "ok");
    if (state.editing && state.editing.name === cfg.name) { $("editor").hidden = true; state.editing = null; }
  } catch (e) {
    notice("Cannot delete " + cfg.name + ": " + e.message, "bad");
  }
  await loadServices().catch(() => {});
  renderServices();
}

$("reload").addEventListener("click", async () => {
  try {
    await api("api/reload", { method: "POST" });
    notice("Configuration reloaded.", "ok");
  } catch (e) {
    notice("Reload: " + e.message, "bad");
  }
  await loadEvents().catch(() => {});
});

// ---- start ----

$("logout").hidden = !state.token;
poll();
setInterval(poll, POLL_MS);
window.addEventListener("resize", drawGraph);
document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
