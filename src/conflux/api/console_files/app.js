// The Conflux console: pages over the REST API, with the caller's own credentials.
// Every value from the store is put into the page with textContent (never as markup), and
// every change goes through the same REST routes as any client's (docs/console.md).

const KEY = "conflux-api-key";
const main = document.getElementById("main");
const flash = document.getElementById("flash");
let schema = null;       // GET /v1/schema, once signed in
let stopPage = () => {}; // what the current page must stop (timers, streams) when left

// -- helpers -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const key = sessionStorage.getItem(KEY);
  if (key) out["X-API-Key"] = key;
  return out;
}

async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} :
                                          { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.statusText;
    throw new ApiError(response.status, message || `HTTP ${response.status}`);
  }
  return data;
}

function q(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") out.set(k, v);
  const text = out.toString();
  return text ? `?${text}` : "";
}

// h("td", {class: "value"}, "text", child): an element; strings become text nodes.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function show(value) {
  if (value === undefined || value === null) return "—";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function say(message, kind = "ok") {
  flash.replaceChildren(h("p", { class: kind, id: `flash-${kind}` }, message));
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    sessionStorage.removeItem(KEY);
    route("#/signin");
  }
  say(error.message || String(error), "error");
}

function page(title, ...children) {
  main.replaceChildren(h("h1", { id: "page-title" }, title), ...children);
}

function envSelect(id, selected) {
  return h("select", { id }, schema.environments.map(e =>
    h("option", { value: e, selected: e === selected }, e)));
}

function link(entityId) {
  return h("a", { href: `#/entity/${encodeURIComponent(entityId)}`, class: "entity" }, entityId);
}

// -- sign-in -------------------------------------------------------------------------------

function signin() {
  document.getElementById("nav").hidden = true;
  const key = h("input", { id: "key", type: "password", placeholder: "API key", size: 40,
                           autocomplete: "off" });
  const form = h("form", { class: "row", id: "signin" }, key,
                 h("button", { class: "primary", id: "signin-go", type: "submit" }, "Sign in"),
                 h("button", { id: "signin-cert", type: "button", onclick: () => enter() },
                   "Use my client certificate"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, key.value.trim());
    enter();
  });
  page("Sign in", h("p", { class: "muted" },
    "Paste an API key (kept in this tab only), or continue with the client certificate " +
    "your browser presents."), form);
}

async function enter() {
  try {
    schema = await api("/v1/schema");
    flash.replaceChildren();
    route(location.hash && location.hash !== "#/signin" ? location.hash : "#/overview");
  } catch (error) {
    const tried = sessionStorage.getItem(KEY) !== null;
    sessionStorage.removeItem(KEY);
    signin();
    if (error.status !== 401) say(error.message, "error");
    else if (tried) say("That key was not accepted.", "error");
  }
}

// -- overview ------------------------------------------------------------------------------

async function overview() {
  const total = h("div", { class: "figure", id: "ops-total" }, "…");
  const rate = h("div", { class: "figure", id: "ops-rate" }, "…");
  const bars = h("div", { class: "bars", id: "ops-bars" });
  const envs = h("ul", { class: "plain", id: "env-list" });
  const conflicts = h("div", { class: "figure", id: "conflict-count" }, "…");
  const violations = h("ul", { class: "plain", id: "violation-list" });
  const milestone = h("div", { id: "last-milestone" }, "…");
  const hooks = h("ul", { class: "plain", id: "webhooks" });
  const watching = h("p", { id: "watchers" }, "…");
  page("Overview",
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Operations in the log"), total),
      h("section", { class: "card" }, h("h2", {}, "Operations per second"), rate, bars),
      h("section", { class: "card" }, h("h2", {}, "Open conflicts"), conflicts,
        h("a", { href: "#/conflicts" }, "review them")),
      h("section", { class: "card" }, h("h2", {}, "Last milestone"), milestone)),
    h("section", { class: "card" }, h("h2", {}, "Environments"), envs),
    h("section", { class: "card" }, h("h2", {}, "Violations per environment"), violations),
    h("section", { class: "card" }, h("h2", {}, "Webhooks and watchers"), hooks, watching));
  const samples = [];
  let timer = null;
  const refresh = async () => {
    try {
      const s = await api("/v1/status");
      const now = Date.now();
      samples.push([now, s.operations]);
      while (samples.length > 61) samples.shift();
      total.textContent = String(s.operations);
      if (samples.length > 1) {
        const [t0, n0] = samples[samples.length - 2];
        rate.textContent = ((s.operations - n0) / Math.max((now - t0) / 1000, 0.001)).toFixed(1);
        const steps = samples.slice(1).map(([t, n], i) =>
          (n - samples[i][1]) / Math.max((t - samples[i][0]) / 1000, 0.001));
        const top = Math.max(1, ...steps);
        bars.replaceChildren(...steps.map(v => {
          const bar = h("span", { title: `${v.toFixed(1)} ops/s` });
          bar.style.height = `${Math.max(1, Math.round(40 * v / top))}px`;
          return bar;
        }));
      } else rate.textContent = "—";
      conflicts.textContent = String(s.conflicts);
      envs.replaceChildren(...Object.entries(s.environments).map(([name, e]) =>
        h("li", {}, h("strong", {}, name), ` — ${e.entities} entities`,
          e.inherits ? ` — inherits ${e.inherits}` : " — base")));
      const perEnv = {};
      for (const v of s.violation_list || []) (perEnv[v.env] = perEnv[v.env] || []).push(v);
      violations.replaceChildren(...schema.environments.map(env =>
        h("li", {}, h("strong", {}, env), `: ${(perEnv[env] || []).length}`,
          ...(perEnv[env] || []).slice(0, 5).map(v =>
            h("div", { class: "muted" }, link(v.entity_id), `.${v.field}: ${v.message}`)))));
      const m = s.last_milestone;
      milestone.replaceChildren(m ? h("span", {}, h("a", { href: "#/milestones" }, `#${m.id}`),
        ` ${m.title} — ${m.pending_operations} operations since`) : "none yet");
      const w = s.watchers || { open: 0, processes: 0 };
      watching.textContent = `${w.open} open watch stream(s) (SSE and gRPC) in ` +
        `${w.processes} daemon process(es)`;
      const entries = Object.entries(s.webhooks || {});
      hooks.replaceChildren(...(entries.length ? entries.map(([name, w]) =>
        h("li", { class: w.failed ? "warn" : null }, h("strong", {}, name),
          ` — ${show(w.pending)} operation(s) waiting, ${show(w.delivered)} delivered, ` +
          `${show(w.failed)} failed` +
          (w.last_error ? `, last error: ${w.last_error}` : ""))) :
        [h("li", { class: "muted" }, "no webhook")]));
    } catch (error) { fail(error); }
  };
  await refresh();
  timer = setInterval(refresh, 2000);
  stopPage = () => clearInterval(timer);
}

// -- state ---------------------------------------------------------------------------------

async function state(params) {
  const env = params.get("env") || schema.base;
  const type = params.get("type") || "";
  const text = params.get("q") || "";
  const offset = Number(params.get("offset") || 0);
  const typeSelect = h("select", { id: "state-type" }, h("option", { value: "" }, "every type"),
    Object.keys(schema.types).map(t => h("option", { value: t, selected: t === type }, t)));
  const envs = envSelect("state-env", env);
  const search = h("input", { id: "state-q", type: "search", placeholder: "search ids",
                              value: text });
  const go = (at = 0) => route(`#/state${q({ env: envs.value, type: typeSelect.value,
                                             q: search.value, offset: at || "" })}`);
  const form = h("form", { class: "row", id: "state-form" }, typeSelect, envs, search,
                 h("button", { type: "submit", id: "state-search" }, "Search"));
  form.addEventListener("submit", (event) => { event.preventDefault(); go(0); });
  const rows = h("tbody", { id: "state-rows" });
  const count = h("p", { class: "muted", id: "state-count" }, "…");
  const prev = h("button", { id: "state-prev", type: "button", disabled: offset === 0,
                             onclick: () => go(Math.max(0, offset - 100)) }, "Previous");
  const next = h("button", { id: "state-next", type: "button", disabled: true }, "Next");
  page("State", form, count,
       h("table", { id: "state-table" }, h("thead", {}, h("tr", {}, h("th", {}, "entity"))),
         rows), h("div", { class: "row" }, prev, next));
  try {
    const data = await api(`/v1/entities${q({ env, type, q: text, offset, limit: 100 })}`);
    rows.replaceChildren(...data.entities.map(e => h("tr", {}, h("td", {},
      h("a", { href: `#/entity/${encodeURIComponent(e)}${q({ env })}`, class: "entity" }, e)))));
    count.textContent = `${data.matched} matching ids in ${env}; showing ` +
      `${data.entities.length} from ${offset + 1}`;
    if (data.next !== null) {
      next.disabled = false;
      next.addEventListener("click", () => go(data.next));
    }
  } catch (error) { fail(error); }
}

// -- one entity ----------------------------------------------------------------------------

async function entity(id) {
  const type = id.split(".")[0];
  const spec = Object.hasOwn(schema.types, type) ? schema.types[type] : null;
  if (!spec) { page("Unknown entity type"); return say(`no entity type ${type}`, "error"); }
  const head = h("tr", {}, h("th", {}, "field"), h("th", {}, "strategy"),
                 schema.environments.map(e => h("th", {}, e)));
  const body = h("tbody", {});
  const problems = h("ul", { class: "plain", id: "entity-violations" });
  const place = h("p", { id: "entity-place", class: "muted" });
  page(id, h("p", {}, h("a", { id: "entity-history", href: `#/history/${encodeURIComponent(id)}` },
                        "History and blame"), " · ", h("a", { href: "#/state" }, "back to the state")),
       place,
       h("table", { id: "entity-values", class: "wide" }, h("thead", {}, head), body),
       h("h2", {}, "Violations"), problems);
  try {
    const views = {};
    for (const env of schema.environments) {
      try { views[env] = (await api(`/v1/entities/${encodeURIComponent(id)}${q({ env })}`)).fields; }
      catch (error) { if (error.status === 404) views[env] = null; else throw error; }
    }
    for (const [fname, field] of Object.entries(spec.fields)) {
      const cells = schema.environments.map(env => {
        const item = views[env] && views[env][fname];
        if (!item) return h("td", { class: "value absent", "data-env": env }, "—");
        const from = item.default ? "schema default" : item.env !== env ? `from ${item.env}` : null;
        return h("td", { class: `value${from ? " inherited" : ""}`, "data-env": env,
                         "data-from": from, title: item.op_id ? `op ${item.op_id}` : null },
                 show(item.value));
      });
      body.append(h("tr", { "data-field": fname }, h("th", {}, fname),
                    h("td", {}, field.merge), cells));
    }
    const gone = schema.environments.filter(env => views[env] === null);
    if (gone.length) body.append(h("tr", {}, h("td", { colspan: 2 + schema.environments.length,
      class: "muted" }, `does not exist in ${gone.join(", ")}`)));
    const found = (await api(`/v1/violations${q({ entity: id })}`)).violations;
    problems.replaceChildren(...(found.length ? found.map(v =>
      h("li", { class: "error" }, `${v.env}: ${v.field}: ${v.message}`)) :
      [h("li", { class: "muted" }, "none")]));
    try {
      const where = await api(`/v1/tree${q({ entity: id })}`);
      place.replaceChildren(where.parent ? h("span", {}, "under ", link(where.parent)) : "a root",
        where.children.length ? h("span", {}, " · children: ",
          ...where.children.flatMap((c, i) => i ? [", ", link(c)] : [link(c)])) : "");
    } catch (_) { place.textContent = ""; }
  } catch (error) { fail(error); }
}

// -- history and blame ---------------------------------------------------------------------

async function history(id, params) {
  const field = h("select", { id: "history-field" }, h("option", { value: "" }, "every field"),
    Object.keys((Object.hasOwn(schema.types, id.split(".")[0]) ? schema.types[id.split(".")[0]]
                 : { fields: {} }).fields).map(f =>
      h("option", { value: f, selected: f === params.get("field") }, f)));
  const actor = h("input", { id: "history-actor", placeholder: "actor (id or class:id)",
                             value: params.get("actor") || "" });
  const env = h("select", { id: "history-env" }, h("option", { value: "" }, "every environment"),
    schema.environments.map(e => h("option", { value: e, selected: e === params.get("env") }, e)));
  const since = h("input", { id: "history-since", placeholder: "since (ISO date, hlc, seq)",
                             value: params.get("since") || "" });
  const form = h("form", { class: "row" }, field, actor, env, since,
                 h("button", { type: "submit", id: "history-apply" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    route(`#/history/${encodeURIComponent(id)}${q({ field: field.value, actor: actor.value,
                                                    env: env.value, since: since.value })}`);
  });
  const rows = h("tbody", { id: "history-rows" });
  const blame = h("tbody", { id: "blame-rows" });
  page(`History of ${id}`, h("p", {}, link(id)), form,
       h("table", { id: "history-table", class: "wide" }, h("thead", {}, h("tr", {},
         ["seq", "time (hlc)", "actor", "intent", "operation", "before", "after", "signature"]
           .map(t => h("th", {}, t)))), rows),
       h("h2", {}, "Blame (who set each field's current value)"),
       h("table", { id: "blame-table", class: "wide" }, h("thead", {}, h("tr", {},
         ["field", "value", "from", "actor", "intent", "time (hlc)"].map(t => h("th", {}, t)))),
         blame));
  try {
    const data = await api(`/v1/history/${encodeURIComponent(id)}${q({
      field: params.get("field"), actor: params.get("actor"), env: params.get("env"),
      since: params.get("since") })}`);
    rows.replaceChildren(...data.operations.map(op => h("tr", { "data-seq": op.seq },
      h("td", {}, op.seq), h("td", {}, op.hlc), h("td", {}, `${op.actor_class}:${op.actor}`),
      h("td", {}, op.intent || ""), h("td", {}, op.text),
      h("td", { class: "value" }, show(op.previous)),
      h("td", { class: "value" }, show(op.value !== undefined ? op.value : op.elements !== undefined
        ? op.elements : op.type === "move_entity" ? { parent: op.parent, position: op.position }
        : null)),
      h("td", {}, op.signed ? `signed (${op.key_id})` : "unsigned"))));
    if (!data.operations.length) rows.append(h("tr", {}, h("td", { colspan: 8, class: "muted" },
                                                           "no operation matches")));
    try {
      const b = await api(`/v1/blame/${encodeURIComponent(id)}${q({ env: params.get("env") })}`);
      blame.replaceChildren(...Object.entries(b.fields).map(([f, item]) => h("tr", {},
        h("th", {}, f), h("td", { class: "value" }, show(item.value)), h("td", {}, item.env),
        h("td", {}, item.actor ? `${item.actor_class}:${item.actor}` : "—"),
        h("td", {}, item.intent || ""), h("td", {}, item.hlc || ""))));
    } catch (error) { if (error.status !== 404) throw error; }
  } catch (error) { fail(error); }
}

// -- live log ------------------------------------------------------------------------------

async function live() {
  const list = h("ul", { class: "plain", id: "live-list" });
  let paused = false;
  const held = [];
  const pause = h("button", { id: "live-pause", type: "button", onclick: () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) { held.splice(0).forEach(add); }
  } }, "Pause");
  const add = (op) => {
    if (paused) { held.push(op); pause.textContent = `Resume (${held.length} waiting)`; return; }
    const target = op.field ? `${op.entity_id}.${op.field}` : (op.entity_id || "");
    list.prepend(h("li", { "data-seq": op.seq },
      h("span", { class: "muted" }, `${op.seq}  ${op.hlc}  `),
      h("strong", {}, `${op.actor_class}:${op.actor}`), ` ${op.type} `,
      op.entity_id ? link(op.entity_id) : "", op.field ? `.${op.field}` : "",
      op.value !== undefined ? ` = ${show(op.value)}` : "",
      op.elements !== undefined ? ` ${show(op.elements)}` : "",
      ` @${op.env}`, op.intent ? h("span", { class: "muted" }, ` — ${op.intent}`) : ""));
    while (list.children.length > 500) list.lastChild.remove();
  };
  page("Live log", h("div", { class: "row" }, pause,
                     h("span", { class: "muted", id: "live-state" }, "connecting…")), list);
  const controller = new AbortController();
  stopPage = () => controller.abort();
  const status = document.getElementById("live-state");
  try {
    const response = await fetch("/v1/watch", { headers: headers({ Accept: "text/event-stream" }),
                                                signal: controller.signal });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new ApiError(response.status, data && data.error ? data.error.message : "watch failed");
    }
    status.textContent = "following new operations as they commit";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter(l => l.startsWith("data:"))
          .map(l => l.slice(5).trimStart()).join("\n");
        if (data) { try { add(JSON.parse(data)); } catch (_) { /* not an op */ } }
      }
    }
    status.textContent = "the stream ended";
  } catch (error) {
    if (error.name !== "AbortError") { status.textContent = "disconnected"; fail(error); }
  }
}

// -- conflicts -----------------------------------------------------------------------------

async function conflicts() {
  const list = h("div", { id: "conflict-list" });
  page("Conflicts", h("p", { class: "muted" },
    "Review fields written concurrently. Choosing a value writes a resolve operation as you."),
    list);
  try {
    const found = (await api("/v1/conflicts")).conflicts;
    if (!found.length) list.append(h("p", { class: "muted", id: "no-conflicts" }, "No open conflict."));
    for (const c of found) {
      const box = h("section", { class: "card conflict", "data-entity": c.entity_id,
                                 "data-field": c.field, "data-env": c.env },
        h("h2", {}, link(c.entity_id), `.${c.field} in ${c.env}`));
      for (const cand of c.candidates) {
        box.append(h("div", { class: "row candidate" },
          h("code", { class: "value" }, show(cand.value)),
          h("span", {}, ` by ${cand.actor_class || ""}:${cand.actor}`),
          h("span", { class: "muted" }, cand.intent ? ` — ${cand.intent}` : ""),
          h("button", { type: "button", class: "choose", onclick: async () => {
            try {
              const ack = await api("/v1/conflicts/resolve", { method: "POST", body: {
                entity_id: c.entity_id, field: c.field, env: c.env, value: cand.value } });
              say(`Resolved ${c.entity_id}.${c.field} (op ${ack.op_id})`);
              conflicts();
            } catch (error) { fail(error); }
          } }, "Choose this value")));
      }
      list.append(box);
    }
  } catch (error) { fail(error); }
}

// -- environments --------------------------------------------------------------------------

async function envs() {
  const from = envSelect("diff-from", schema.environments[1] || schema.base);
  const to = envSelect("diff-to", schema.base);
  const rows = h("tbody", { id: "diff-rows" });
  const entities = h("input", { id: "promote-entities", size: 40,
                                placeholder: "entities to promote (comma-separated; empty: all)" });
  const fields = h("input", { id: "promote-fields", size: 30,
                              placeholder: "fields (comma-separated; empty: all)" });
  const plan = h("div", { id: "promote-plan" });
  const list = (input) => input.value.split(",").map(s => s.trim()).filter(Boolean);
  const diff = async () => {
    const data = await api(`/v1/envs/diff${q({ from: from.value, to: to.value })}`);
    return data.differences;
  };
  const compare = async () => {
    try {
      const found = await diff();
      rows.replaceChildren(...found.map(d => h("tr", {}, h("td", {}, link(d.entity_id)),
        h("td", {}, d.field), h("td", { class: "value" }, show(d.from_value)),
        h("td", { class: "value" }, show(d.to_value)))));
      if (!found.length) rows.append(h("tr", {}, h("td", { colspan: 4, class: "muted" },
                                                   "no difference")));
    } catch (error) { fail(error); }
  };
  const preview = async () => {
    // the request previewed is the one confirmed, whatever the inputs say by then
    const request = { from: from.value, to: to.value, entities: list(entities),
                      fields: list(fields), intent: "promoted from the console" };
    try {
      const chosen = new Set(request.entities), only = new Set(request.fields);
      const found = await api(`/v1/envs/diff${q({ from: request.from, to: request.to })}`);
      // a promotion copies the first's values: a field the first has no value for is left
      // as it is, and a grow field only gains elements
      const changes = found.differences.filter(d => (!chosen.size || chosen.has(d.entity_id)) &&
        (!only.size || only.has(d.field)) && d.from_value !== null && d.from_value !== undefined);
      const confirm = h("button", { id: "promote-confirm", class: "primary", type: "button",
        onclick: async () => {
          try {
            const ack = await api("/v1/promote", { method: "POST", body: request });
            say(`Promoted ${request.from} → ${request.to} (op ${ack.op_id})`);
            plan.replaceChildren();
            compare();
          } catch (error) { fail(error); }
        } }, `Promote ${changes.length} change(s)`);
      plan.replaceChildren(h("h2", {}, `What promoting ${request.from} → ${request.to} changes`),
        h("ul", { class: "plain", id: "promote-changes" }, ...changes.map(d => h("li", {},
          `${d.entity_id}.${d.field}: ${show(d.to_value)} → ${show(d.from_value)}`))),
        changes.length ? confirm : h("p", { class: "muted" }, "nothing to promote"));
    } catch (error) { fail(error); }
  };
  page("Environments",
    h("p", { class: "muted" }, "Inheritance: ", Object.entries(schema.inherits)
      .map(([e, p]) => `${e} ← ${p}`).join(", ") || "none"),
    h("div", { class: "row" }, "Compare", from, "with", to,
      h("button", { type: "button", id: "diff-run", onclick: compare }, "Diff")),
    h("table", { id: "diff-table", class: "wide" }, h("thead", {}, h("tr", {},
      ["entity", "field", "in the first", "in the second"].map(t => h("th", {}, t)))), rows),
    h("h2", {}, "Promote the first into the second"),
    h("div", { class: "row" }, entities, fields,
      h("button", { type: "button", id: "promote-preview", onclick: preview }, "Preview")),
    plan);
  compare();
}

// -- milestones ----------------------------------------------------------------------------

async function milestones(params) {
  const rows = h("tbody", { id: "milestone-rows" });
  const detail = h("div", { id: "milestone-detail" });
  const title = h("input", { id: "ms-title", size: 40, placeholder: "milestone title" });
  const create = h("button", { id: "ms-create", class: "primary", type: "button", onclick: async () => {
    try {
      const m = await api("/v1/milestones", { method: "POST", body: { message: title.value } });
      say(`Milestone ${m.id} created (${m.commit.slice(0, 12)})`);
      milestones(new URLSearchParams());
    } catch (error) { fail(error); }
  } }, "Create milestone");
  const from = h("select", { id: "ms-diff-from" });
  const to = h("select", { id: "ms-diff-to" }, h("option", { value: "" }, "now"));
  const env = envSelect("ms-diff-env", schema.base);
  const diffRows = h("tbody", { id: "ms-diff-rows" });
  const rbEnv = envSelect("rb-env", schema.base);
  const rbEntities = h("input", { id: "rb-entities", size: 40,
                                  placeholder: "entities (comma-separated; empty: all)" });
  const rbPlan = h("div", { id: "rb-plan" });
  const rbFrom = h("select", { id: "rb-milestone" });
  page("Milestones", h("div", { class: "row" }, title, create),
    h("table", { id: "milestone-table", class: "wide" }, h("thead", {}, h("tr", {},
      ["#", "title", "created", "operations", "environments"].map(t => h("th", {}, t)))), rows),
    detail,
    h("h2", {}, "Diff"), h("div", { class: "row" }, "from milestone", from, "to", to, "in", env,
      h("button", { type: "button", id: "ms-diff-run", onclick: async () => {
        try {
          const d = await api(`/v1/diff${q({ milestone: from.value, to: to.value, env: env.value })}`);
          diffRows.replaceChildren(...d.changes.map(c => h("tr", {}, h("td", {}, link(c.entity_id)),
            h("td", {}, c.field), h("td", { class: "value" }, show(c.at_milestone)),
            h("td", { class: "value" }, show(c.now)), h("td", {}, String(c.operations.length)))));
          if (!d.changes.length) diffRows.append(h("tr", {}, h("td", { colspan: 5, class: "muted" },
                                                               "no difference")));
        } catch (error) { fail(error); }
      } }, "Diff")),
    h("table", { id: "ms-diff-table", class: "wide" }, h("thead", {}, h("tr", {},
      ["entity", "field", "then", "later", "operations"].map(t => h("th", {}, t)))), diffRows),
    h("h2", {}, "Roll back"),
    h("p", { class: "muted" }, "Return an environment (or some entities) to a milestone's " +
      "values, by new operations written as you; history is never rewritten."),
    h("div", { class: "row" }, "to milestone", rbFrom, "in", rbEnv, rbEntities,
      h("button", { type: "button", id: "rb-preview", onclick: async () => {
        // the request previewed is the one confirmed, whatever the inputs say by then
        const milestone = rbFrom.value;
        const body = { env: rbEnv.value, dry_run: true };
        const chosen = rbEntities.value.split(",").map(s => s.trim()).filter(Boolean);
        if (chosen.length) body.entities = chosen;
        try {
          const p = await api(`/v1/milestones/${encodeURIComponent(milestone)}/rollback`,
                              { method: "POST", body });
          const confirm = h("button", { id: "rb-confirm", class: "primary", type: "button",
            onclick: async () => {
              try {
                const done = await api(`/v1/milestones/${encodeURIComponent(milestone)}/rollback`,
                                       { method: "POST", body: { ...body, dry_run: false } });
                if (done.remaining && done.remaining.length) {
                  say(`Rolled ${done.env} back to milestone ${done.milestone}, but ` +
                      `${done.remaining.length} value(s) still differ (a write came in ` +
                      "between): preview again", "error");
                } else {
                  say(`Rolled ${done.env} back to milestone ${done.milestone}: ` +
                      `${done.written} operation(s) written`);
                }
                rbPlan.replaceChildren();
              } catch (error) { fail(error); }
            } }, `Write ${p.changes.length} change(s) to milestone #${milestone} in ${body.env}`);
          rbPlan.replaceChildren(
            h("ul", { class: "plain", id: "rb-changes" }, ...p.changes.map(c => h("li", {},
              `${c.entity_id}${c.field ? "." + c.field : ""}: ${show(c.now)} → ` +
              `${show(c.at_milestone)} (${c.op}${c.override ? ", override" : ""})`))),
            h("ul", { class: "plain", id: "rb-skipped" }, ...p.skipped.map(s => h("li", { class: "warn" },
              `${s.entity_id}.${s.field}: kept ${show(s.now)} (${s.reason})`))),
            p.changes.length ? confirm : h("p", { class: "muted" }, "already at the milestone's values"));
        } catch (error) { fail(error); }
      } }, "Preview")),
    rbPlan);
  try {
    const found = (await api("/v1/milestones")).milestones;
    for (const m of found) {
      rows.append(h("tr", { "data-id": m.id }, h("td", {}, h("a", { href: `#/milestones${q({ id: m.id })}`,
        class: "milestone" }, `#${m.id}`)), h("td", {}, m.title), h("td", {}, m.created),
        h("td", {}, String(m.operations)), h("td", {}, m.envs.join(", "))));
      for (const select of [from, to, rbFrom]) select.append(h("option", { value: m.id }, `#${m.id} ${m.title}`));
    }
    if (!found.length) rows.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "no milestone yet")));
    const chosen = params.get("id");
    if (chosen) {
      const m = await api(`/v1/milestones/${encodeURIComponent(chosen)}`);
      detail.replaceChildren(h("h2", {}, `Milestone #${m.id} — ${m.commit}`),
        h("pre", { id: "milestone-message" }, m.message));
    }
  } catch (error) { fail(error); }
}

// -- routing -------------------------------------------------------------------------------

const pages = { overview, state, live, conflicts, envs, milestones };

function route(hash) {
  if (location.hash !== hash) { location.hash = hash; return; }
  render();
}

async function render() {
  stopPage();
  stopPage = () => {};
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "signin" || !schema) return signin();
  document.getElementById("nav").hidden = false;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("on", a.getAttribute("href") === `#/${parts[0]}`);
  }
  flash.replaceChildren();
  if (parts[0] === "entity" && parts[1]) return entity(decodeURIComponent(parts[1]), params);
  if (parts[0] === "history" && parts[1]) return history(decodeURIComponent(parts[1]), params);
  return (pages[parts[0]] || overview)(params);
}

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  schema = null;
  route("#/signin");
});
window.addEventListener("hashchange", render);
enter();
