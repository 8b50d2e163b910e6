// The plugbox dashboard: plain fetch calls to the JSON API, no framework, no third-party code.
// Plugin-supplied text (names, errors, log lines, schema texts) is only ever set with textContent.
// The API key lives in sessionStorage and is sent as a header, never in a URL (URLs reach logs).
"use strict";

const $ = (sel) => document.querySelector(sel);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
const enc = encodeURIComponent;
const POLL_MS = 3000;
const SENT_SHOWN = 20;
let apiKey = sessionStorage.getItem("plugbox-key") || "";
let current = null;       // the plugin whose detail is open
let lastLogTs = 0;        // newest log line shown in the detail
let engineSessions = [];  // [{id, status, live}]

// ---- messages: each stays until dismissed; a repeat of the newest one counts instead of stacking
function notify(text, kind) {
  const list = $("#messages");
  const newest = list.firstElementChild;
  if (newest && newest.dataset.text === text && newest.dataset.kind === kind) {
    const n = Number(newest.dataset.n) + 1;
    newest.dataset.n = String(n);
    newest.querySelector(".count").textContent = "×" + n;
    return;
  }
  const li = el("li", undefined, kind);
  li.dataset.text = text; li.dataset.kind = kind; li.dataset.n = "1";
  if (kind === "error") li.setAttribute("role", "alert");
  const dismiss = el("button", "Dismiss");
  dismiss.type = "button";
  dismiss.setAttribute("aria-label", "Dismiss: " + text);
  dismiss.onclick = () => { li.remove(); messagesChanged(); };
  li.append(el("span", text, "text"), el("span", "", "count"), dismiss);
  list.prepend(li);
  messagesChanged();
}
function messagesChanged() { $("#dismiss-all").hidden = $("#messages").children.length < 2; }
$("#dismiss-all").onclick = () => { $("#messages").replaceChildren(); messagesChanged(); };
const ok = (text) => notify(text, "ok");
const fail = (err) => notify(err instanceof Error ? err.message : String(err), "error");

// ---- API
async function send(method, path, body, raw) {
  const opts = { method, headers: { "X-API-Key": apiKey } };
  if (raw !== undefined) opts.body = raw;
  else if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const res = await fetch(path, opts);
  if (res.status === 401) { apiKey = ""; sessionStorage.removeItem("plugbox-key"); }  // a refused key is not kept
  return res;
}
async function api(method, path, body, raw) {
  const res = await send(method, path, body, raw);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || ("HTTP " + res.status));
  return data;
}
const pluginPath = (id, rest) => "/api/plugins/" + enc(id) + (rest || "");

// ---- plugin table
let refreshes = 0;
async function refresh() {
  if (!apiKey) return;
  const mine = ++refreshes;
  try {
    const doc = await api("GET", "/api/plugins");
    if (mine !== refreshes) return;  // a newer refresh is on its way: an older answer must not overwrite it
    renderPlugins(doc.plugins);
    renderBroken(doc.broken || []);
  } catch (err) { if (mine === refreshes) fail(err); }
}

function failureTotal(p) { return Object.values(p.failures || {}).reduce((a, b) => a + b, 0); }

function renderPlugins(plugins) {
  $("#plugin-count").textContent = "(" + plugins.length + ")";
  const tbody = $("#plugins tbody");
  tbody.replaceChildren();
  for (const p of plugins) {
    const tr = el("tr");
    tr.dataset.id = p.id;
    const name = el("td");
    const link = el("a", p.name);
    link.href = "#" + enc(p.id);
    link.onclick = (e) => { e.preventDefault(); openDetail(p.id); };
    name.append(link, el("div", p.id + " " + p.version, "muted"));
    const status = el("td", undefined, p.status);
    status.append(el("span", p.status, "status-word"));
    if (p.error) status.append(el("div", p.error, "muted"));
    if (p.warnings && p.warnings.length) status.append(el("span", "no session", "badge"));
    const failures = el("td", String(failureTotal(p)));
    if (p.lastError) failures.append(el("div", "last: " + p.lastError["class"], "muted"));
    const actions = el("td");
    const toggle = el("button", p.status === "enabled" ? "Disable" : "Enable");
    toggle.type = "button";
    toggle.onclick = () => act(p.id, p.status === "enabled" ? "disable" : "enable");
    actions.append(toggle);
    tr.append(name, status, el("td", p.tier), el("td", p.permissions.join(", ")),
              el("td", p.activeSessions.join(", ")), failures, actions);
    tbody.append(tr);
  }
}

function renderBroken(broken) {
  $("#broken").hidden = broken.length === 0;
  const list = $("#broken-list");
  list.replaceChildren();
  for (const b of broken) list.append(el("li", b.directory + ": " + b.error));
}

async function act(id, verb) {
  try { await api("POST", pluginPath(id, "/" + verb)); ok(id + ": " + verb + "d"); }
  catch (err) { fail(err); }
  await refresh();
  if (current === id) await refreshDetail(false);
}

// ---- install / uninstall
$("#install").onsubmit = async (e) => {
  e.preventDefault();
  const file = $("#install-file").files[0];
  if (!file) { notify("choose a plugin zip first", "error"); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const res = await send("POST", "/api/plugins", undefined, form);
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.error || ("HTTP " + res.status));
    ok((res.status === 201 ? "installed " : "updated ") + data.id + " " + data.version);
    $("#install").reset();
    await refresh();
    await openDetail(data.id);
  } catch (err) { fail(err); }
};

$("#d-uninstall").onclick = () => { $("#d-confirm").hidden = false; $("#d-uninstall").hidden = true; $("#d-confirm-yes").focus(); };
$("#d-confirm-no").onclick = () => { $("#d-confirm").hidden = true; $("#d-uninstall").hidden = false; };
$("#d-confirm-yes").onclick = async () => {
  const id = current;
  try { await api("DELETE", pluginPath(id)); ok(id + ": uninstalled"); closeDetail(); }
  catch (err) { fail(err); }
  await refresh();
};

// ---- detail
function fmtTime(ts) { return new Date(ts * 1000).toISOString().replace("T", " ").replace("Z", ""); }
function logLine(l) { return fmtTime(l.ts) + " " + l.level.toUpperCase().padEnd(7) + " " + l.message; }

function renderStatus(p) {
  $("#d-title").textContent = p.name + " (" + p.id + " " + p.version + ")";
  $("#d-status").textContent = p.status + (p.error ? ": " + p.error : "");
  $("#d-status").className = p.status;
  $("#d-health").textContent = "health: " + (p.health.healthy ? "healthy" : "unhealthy") + (p.health.message ? " - " + p.health.message : "");
  const warnings = $("#d-warnings"); warnings.replaceChildren(...(p.warnings || []).map((w) => el("li", w)));
  // Hosts sharing a database each run the plugin: list them only when there is more than this one.
  const hosts = p.hosts || [];
  $("#d-hosts").replaceChildren(...(hosts.length > 1 ? hosts : []).map((h) => el("li",
    "host " + h.host + (h.this ? " (this one)" : "") + ": " + h.status + (h.error ? ": " + h.error : "")
    + (h.live ? "" : " - not live; its last status, from " + (h.updatedAt || "never")), h.live ? h.status : "muted")));
  $("#d-uninstall").hidden = p.tier === "builtin" || !$("#d-confirm").hidden;
  const last = p.lastError;
  $("#d-last-error").textContent = last ? "Last error (" + last["class"] + ", " + last.timestamp + "): " + last.message : "No failures since the host loaded it.";
  $("#d-last-error").className = last ? "error" : "muted";
  const counts = Object.entries(p.failures || {}).filter(([, n]) => n > 0).map(([k, n]) => k + " " + n);
  $("#d-failure-counts").textContent = counts.length ? "By class: " + counts.join(", ") : "";
  $("#d-failures").replaceChildren(...(p.recentFailures || []).slice().reverse().map(
    (f) => el("li", f.timestamp + " " + f["class"] + ": " + f.message)));
  const layers = $("#d-layers"); layers.replaceChildren();
  for (const l of p.confinement || []) {  // skipped: the policy did not ask for the layer (not missing)
    const [word, cls] = l.applied ? ["applied", "enabled"] : l.skipped ? ["off", "muted"] : ["MISSING", "error"];
    layers.append(el("li", word + " " + l.name + (l.detail ? " - " + l.detail : ""), cls));
  }
  // The layers stay reported after the worker is gone (disabled, failed): say they are history.
  $("#d-layers-note").textContent = p.confinement && p.status !== "enabled" ? "(from the last start; no worker running)" : "";
  if (!p.confinement) layers.append(el("li", p.tier === "builtin" ? "in-process (trusted built-in)" : "not running", "muted"));
}

function renderLogs(lines) {
  const pre = $("#d-logs");
  pre.textContent = lines.map(logLine).join("\n");
  lastLogTs = lines.length ? lines[lines.length - 1].ts : 0;
  if (!lines.length) pre.textContent = "(none)";
  pre.scrollTop = pre.scrollHeight;
}

function appendLog(line) {
  if (line.ts <= lastLogTs) return;  // already shown by the detail read
  const pre = $("#d-logs");
  if (!lastLogTs) pre.textContent = "";
  pre.textContent += (pre.textContent ? "\n" : "") + logLine(line);
  lastLogTs = line.ts;
  pre.scrollTop = pre.scrollHeight;
}

// forms: also rebuild the config and session forms (not on a background refresh, which must not
// wipe what the operator is typing).
async function refreshDetail(forms) {
  const id = current;
  if (id === null) return;
  try {
    const p = await api("GET", pluginPath(id));
    if (current !== id) return;
    renderStatus(p);
    renderLogs(p.logs);
    if (forms) {
      engineSessions = (await api("GET", "/api/sessions").catch(() => ({ sessions: [] }))).sessions;
      const s = await api("GET", pluginPath(id, "/sessions"));
      renderSessions({ ...p, sessionScoped: s.sessionScoped });
      renderConfig(p);
      await renderSessionConfig(p);
    }
  } catch (err) { fail(err); }
}

async function openDetail(id) {
  current = id;
  $("#d-confirm").hidden = true;
  $("#detail").hidden = false;
  await refreshDetail(true);
}

function closeDetail() { current = null; $("#detail").hidden = true; }
$("#d-close").onclick = closeDetail;

// ---- sent messages and metrics
async function refreshSent() {
  const res = await send("GET", "/api/sent?limit=" + SENT_SHOWN);
  const data = await res.json().catch(() => ({}));
  const tbody = $("#sent tbody");
  if (!res.ok) { tbody.replaceChildren(); $("#sent-note").textContent = data.error || ("HTTP " + res.status); return; }
  const rows = data.sent.slice().reverse().map((m) => {
    const tr = el("tr");
    tr.append(el("td", m.timestamp ? fmtTime(m.timestamp).slice(0, 19) : ""), el("td", m.sessionId),
              el("td", m.chatId || m.to), el("td", m.body));
    return tr;
  });
  tbody.replaceChildren(...rows);
  $("#sent-note").textContent = rows.length ? "Newest first; the last " + SENT_SHOWN + " at most." : "Nothing sent yet.";
}

// The Prometheus text format, as much of it as the overview reads: name{labels} value.
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function fmtBytes(n) { return n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : Math.round(n / 1024) + " KiB"; }

async function refreshMetrics() {
  const res = await send("GET", "/metrics");
  if (!res.ok) return;
  const samples = parseMetrics(await res.text());
  const per = {};
  const row = (id) => (per[id] = per[id] || { calls: 0, denied: 0, failures: 0, timeouts: 0, crashes: 0, memory: null });
  const columns = { plugbox_capability_calls_total: "calls", plugbox_capability_denied_total: "denied",
    plugbox_plugin_failures_total: "failures", plugbox_hook_timeouts_total: "timeouts",
    plugbox_worker_crashes_total: "crashes" };
  let chains = 0, statuses = [];
  for (const s of samples) {
    const col = columns[s.name];
    if (col && s.labels.plugin) row(s.labels.plugin)[col] += s.value;
    else if (s.name === "plugbox_worker_memory_pss_bytes") row(s.labels.plugin).memory = s.value;
    else if (s.name === "plugbox_hook_chain_seconds_count") chains += s.value;
    else if (s.name === "plugbox_plugins" && s.value) statuses.push(s.labels.status + " " + s.value);
  }
  $("#metrics-summary").textContent = "Plugins: " + (statuses.join(", ") || "none") + ". Hook chains run: " + chains + ".";
  const tbody = $("#metrics tbody");
  tbody.replaceChildren(...Object.keys(per).sort().map((id) => {
    const r = per[id], tr = el("tr");
    tr.dataset.plugin = id;
    tr.append(el("td", id), el("td", r.calls), el("td", r.denied, r.denied ? "error" : ""),
              el("td", r.failures, r.failures ? "error" : ""), el("td", r.timeouts), el("td", r.crashes),
              el("td", r.memory === null ? "" : fmtBytes(r.memory)));
    return tr;
  }));
}

// ---- live events: /api/events read with fetch (an EventSource cannot send the key header)
let streamGen = 0;
let refreshTimer = null;
function soon() {  // a burst of failures is one refresh
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); if (current !== null) refreshDetail(false); refreshMetrics(); }, 100);
}

function onEvent(type, data) {
  if (type === "log" && data.plugin === current) appendLog(data);
  else if (type === "failure") soon();
  else if (type === "dropped") notify("live view fell behind: " + data.count + " events not shown", "error");
}

async function follow() {
  const gen = ++streamGen;
  const live = $("#live");
  while (apiKey && gen === streamGen) {
    try {
      const res = await send("GET", "/api/events");
      if (!res.ok) throw new Error("HTTP " + res.status);
      live.textContent = "live"; live.className = "live on";
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== streamGen) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, cut); buf = buf.slice(cut + 2);
          let type = "message", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) onEvent(type, JSON.parse(data));
        }
      }
    } catch (err) { /* the server went away or refused: shown below, retried */ }
    live.textContent = "reconnecting"; live.className = "live";
    await new Promise((r) => setTimeout(r, 2000));
  }
  if (gen === streamGen) { live.textContent = "offline"; live.className = "live"; }
}

// ---- start
function poll() {
  if (!apiKey || document.hidden) return;
  refresh();
  if (current !== null) refreshDetail(false);
  refreshSent().catch(() => {});
  refreshMetrics().catch(() => {});
}

function start() {
  poll();
  follow();
}

$("#keyform").onsubmit = async (e) => {
  e.preventDefault();
  apiKey = $("#key").value.trim();
  $("#key").value = "";
  try {
    await api("GET", "/api/plugins");
    sessionStorage.setItem("plugbox-key", apiKey);
    ok("key accepted");
    start();
  } catch (err) { fail(err); }
};
if (apiKey) start(); else notify("Enter an API key.", "info");
setInterval(poll, POLL_MS);
