// The dashboard's forms: config and per-session config generated from the plugin's configSchema,
// and the sessions a plugin is active on. Loaded before dashboard.js, whose helpers (el, api, ok,
// fail, refresh...) these call when the operator acts; values are only ever set as text or .value.
"use strict";

function configField(name, spec, value, required, placeholder) {
  const label = el("label", (spec.title || name) + " ");
  let input;
  if (spec.type === "boolean") { input = el("input"); input.type = "checkbox"; input.checked = value === true; }
  else if (spec.enum) {
    input = el("select");
    if (!required) { const none = el("option", ""); none.value = ""; none.selected = value === undefined || value === null; input.append(none); }  // unset stays unset
    for (const o of spec.enum) { const opt = el("option", o); opt.value = JSON.stringify(o); opt.selected = o === value; input.append(opt); }
  } else if (spec.type === "textarea" || spec.type === "array" || spec.type === "object") {
    input = el("textarea"); input.rows = 3; input.cols = 50;
    input.value = value === undefined || value === null ? "" : (typeof value === "string" ? value : JSON.stringify(value));
  } else {
    input = el("input");
    input.type = spec.secret ? "password" : (spec.type === "number" ? "number" : "text");
    input.value = value === undefined || value === null ? "" : value;
    if (placeholder !== undefined && placeholder !== null) input.placeholder = String(placeholder);
  }
  input.name = name; input.dataset.type = spec.type; input.dataset.enum = spec.enum ? "1" : "";
  label.append(input);
  if (spec.description) label.append(el("span", " " + spec.description, "muted"));
  return label;
}

function readField(input) {
  const t = input.dataset.type;
  if (t === "boolean") return input.checked;
  if (input.dataset.enum) return input.value === "" ? null : JSON.parse(input.value);
  if (input.value === "") return null;
  if (t === "number") return Number(input.value);
  if (t === "array" || t === "object") return JSON.parse(input.value);
  return input.value;
}

function schemaProps(p) { return (p.configSchema && p.configSchema.properties) || {}; }
function isRequired(p, name, spec) {
  const req = Array.isArray(p.configSchema && p.configSchema.required) ? p.configSchema.required : [];
  return spec.required === true || req.includes(name);
}

function renderConfig(p) {
  const form = $("#d-config");
  form.replaceChildren();
  const props = schemaProps(p);
  for (const [name, spec] of Object.entries(props)) form.append(configField(name, spec, p.config[name], isRequired(p, name, spec)));
  if (!Object.keys(props).length) { form.append(el("p", "no configuration", "muted")); form.onsubmit = null; return; }
  const save = el("button", "Save config"); save.type = "submit"; form.append(save);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const id = p.id;
    try {
      const doc = {};
      for (const input of form.querySelectorAll("[name]")) { const v = readField(input); if (v !== null) doc[input.name] = v; }
      await api("PUT", pluginPath(id, "/config"), doc);
      ok(id + ": config saved");
      await refreshDetail(true);
    } catch (err) { fail(err); }
  };
}

// Per-session overrides: the form starts from the session's effective config; only what differs
// from the base config (or was already overridden) is sent.
async function renderSessionConfig(p) {
  const pick = $("#d-session-pick"), form = $("#d-session-config");
  const props = schemaProps(p);
  $("#d-session-config-wrap").hidden = !Object.keys(props).length || !engineSessions.length;
  if ($("#d-session-config-wrap").hidden) return;
  const chosen = pick.value && engineSessions.some((s) => s.id === pick.value) ? pick.value : engineSessions[0].id;
  pick.replaceChildren(...engineSessions.map((s) => { const o = el("option", s.id); o.value = s.id; return o; }));
  pick.value = chosen;
  pick.onchange = () => renderSessionConfig(p);
  const doc = await api("GET", pluginPath(p.id, "/sessions/" + enc(chosen) + "/config"));
  form.replaceChildren();
  for (const [name, spec] of Object.entries(props)) {
    const label = configField(name, spec, doc.effective[name], isRequired(p, name, spec));
    if (name in doc.config) label.append(el("span", "(set for this session)", "muted field-note"));
    form.append(label);
  }
  const save = el("button", "Save session config"); save.type = "submit"; form.append(save);
  form.onsubmit = async (e) => {
    e.preventDefault();
    try {
      const out = {};
      for (const input of form.querySelectorAll("[name]")) {
        const v = readField(input);
        if (v !== null && (input.name in doc.config || JSON.stringify(v) !== JSON.stringify(p.config[input.name]))) out[input.name] = v;
      }
      await api("PUT", pluginPath(p.id, "/sessions/" + enc(chosen) + "/config"), out);
      ok(p.id + ": config for session " + chosen + " saved");
      await renderSessionConfig(p);
    } catch (err) { fail(err); }
  };
}

function renderSessions(p) {
  const form = $("#d-sessions");
  form.replaceChildren();
  const allowed = p.sessions.includes("*") ? "any session" : p.sessions.join(", ");
  form.append(el("p", "The manifest allows: " + allowed + "." + (p.sessionScoped === false
    ? " Not session-scoped: it sees every session's events." : " It acts only on the sessions ticked here."), "muted"));
  const box = el("fieldset", undefined, "checks");
  box.append(el("legend", "Active sessions", "sr-only"));
  for (const s of engineSessions) {
    const label = el("label");
    const cb = el("input"); cb.type = "checkbox"; cb.name = "session"; cb.value = s.id;
    cb.checked = p.activeSessions.includes(s.id);
    const allowedHere = p.sessions.includes("*") || p.sessions.includes(s.id);
    cb.disabled = !allowedHere && !cb.checked;  // the manifest's sessions are static: config cannot widen them
    label.append(cb, " " + s.id + " ", el("span", allowedHere ? s.status : "not allowed by the manifest", "muted"));
    box.append(label);
  }
  if (!engineSessions.length) box.append(el("span", "the engine has no sessions", "muted"));
  const save = el("button", "Save sessions"); save.type = "submit";
  form.append(box, save);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const chosen = [...form.querySelectorAll("input[name=session]:checked")].map((cb) => cb.value);
    try {
      const doc = await api("PUT", pluginPath(p.id, "/sessions"), { activeSessions: chosen });
      ok(p.id + ": active on " + (doc.activeSessions.join(", ") || "no session"));
      await refresh(); await refreshDetail(false);
    } catch (err) { fail(err); }
  };
}

