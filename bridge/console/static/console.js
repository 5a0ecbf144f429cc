// simbridge console: plain JavaScript, no library. Every text from the server is
// put in the page with textContent, never as HTML. Every POST carries the
// session's CSRF token (X-CSRF-Token), and the sign-in form its pre-session one.
"use strict";

const state = { session: null, account: null, view: "threads", arg: null, events: null, timer: null,
                opened: new Set() };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function badge(status) { return el("span", { class: "badge", dataset: { status } }, status); }
function say(text) {
  const status = document.getElementById("status");
  status.textContent = text;
  clearTimeout(state.sayTimer);
  state.sayTimer = setTimeout(() => { status.textContent = ""; }, 4000);
}

function withAccount(path) {
  if (!state.session || !state.session.operator || !state.account) return path;
  return path + (path.includes("?") ? "&" : "?") + "account=" + encodeURIComponent(state.account);
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.session ? state.session.csrf : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/console" + withAccount(path), {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { showLogin(); throw new Error("signed out"); }
  if (!response.ok) throw new Error(data.message || ("HTTP " + response.status));
  return data;
}

// -- sign-in ------------------------------------------------------------------------

async function start() {
  const response = await fetch("/console/session", { credentials: "same-origin" });
  const data = await response.json();
  if (data.signed_in) signedIn(data); else { state.preCsrf = data.csrf; showLogin(); }
}

function showLogin() {
  state.session = null;
  if (state.events) { state.events.close(); state.events = null; }
  document.getElementById("top").hidden = true;
  document.getElementById("view").replaceChildren();
  const form = document.getElementById("login");
  form.hidden = false;
  form.elements.login.focus();
}

async function login(event) {
  event.preventDefault();
  const form = event.target;
  const body = new FormData(form);
  if (!state.preCsrf) {
    const s = await (await fetch("/console/session", { credentials: "same-origin" })).json();
    state.preCsrf = s.csrf;
  }
  body.append("csrf", state.preCsrf);
  const response = await fetch("/console/login", { method: "POST", body, credentials: "same-origin" });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    document.getElementById("login-error").textContent = data.message || "sign-in failed";
    return;
  }
  form.reset();
  document.getElementById("login-error").textContent = "";
  signedIn(data);
}

function signedIn(session) {
  state.session = session;
  state.account = session.login;
  document.getElementById("login").hidden = true;
  document.getElementById("top").hidden = false;
  document.getElementById("who").textContent = session.login + (session.operator ? " (operator)" : "");
  const pick = document.getElementById("account-pick");
  pick.hidden = !session.operator;
  const select = document.getElementById("account");
  select.replaceChildren(...session.accounts.map((a) => el("option", { value: a, selected: a === state.account }, a)));
  listen();
  route();
}

async function logout() {
  try { await call("POST", "/logout"); } catch (e) { /* signed out either way */ }
  state.preCsrf = null;
  showLogin();
}

// -- live changes (server-sent events) -----------------------------------------------

function listen() {
  if (state.events) state.events.close();
  state.events = new EventSource("/console" + withAccount("/api/events"));
  state.events.addEventListener("change", () => {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => render(true), 50);
  });
}

// -- routing ----------------------------------------------------------------------------

function route() {
  const [, view, ...rest] = (location.hash || "#/threads").split("/");
  state.view = ["threads", "devices", "queue", "webhooks"].includes(view) ? view : "threads";
  state.arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.view === state.view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  render(false);
}

async function render(live) {
  if (!state.session) return;
  // Renders overlap (a live change arrives while the user opens a thread): only the newest one
  // may replace the view, or a slow older one would put back what the user just left.
  const seq = state.renders = (state.renders || 0) + 1;
  const view = document.getElementById("view");
  try {
    const node = await VIEWS[state.view]();
    if (seq !== state.renders) return;
    // What the user typed and where, read at the swap itself: they may have typed while the
    // view was being fetched.
    const keep = live ? document.activeElement : null;
    const draft = live ? collectDrafts() : null;
    view.replaceChildren(node);
    if (draft) restoreDrafts(draft, keep);
  } catch (e) {
    if (e.message !== "signed out") say(e.message);
  }
}

function collectDrafts() {
  const out = {};
  for (const field of document.querySelectorAll("#view [data-keep]")) out[field.dataset.keep] = field.value;
  return out;
}

function restoreDrafts(drafts, active) {
  for (const field of document.querySelectorAll("#view [data-keep]")) {
    if (field.dataset.keep in drafts) field.value = drafts[field.dataset.keep];
    if (active && active.dataset && active.dataset.keep === field.dataset.keep) field.focus();
  }
}

// -- conversations -----------------------------------------------------------------------

async function threadsView() {
  const threads = await call("GET", "/api/threads");
  const list = el("ul", { class: "threads", "aria-label": "Conversations" }, threads.map((t) =>
    el("li", {}, el("a", { href: "#/threads/" + encodeURIComponent(t.number),
                           "aria-current": t.number === state.arg ? "true" : null },
      el("strong", {}, t.name || t.number), " ", t.opted_out ? badge("opted-out") : null,
      el("div", { class: "sub" }, t.name ? t.number + " · " : "", t.last_text)))));
  const open = el("form", { class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    location.hash = "#/threads/" + encodeURIComponent(e.target.elements.number.value.trim());
  } }, el("label", {}, "Number", el("input", { name: "number", required: true, placeholder: "+33612345678",
                                                  "data-keep": "open-number" })),
  el("button", { type: "submit", class: "secondary" }, "Open"));
  const left = el("section", { class: "card" }, el("h1", {}, "Conversations"), open,
                  threads.length ? list : el("p", {}, "No messages yet."));
  const right = el("section", { class: "card", id: "thread" },
                   state.arg ? await threadView(state.arg) : el("p", {}, "Choose a conversation."));
  return el("div", { class: "panes" }, left, right);
}

async function threadView(number) {
  const t = await call("GET", "/api/threads/" + encodeURIComponent(number));
  const items = t.messages.map((m) => el("li", { class: "msg " + m.direction, dataset: { id: m.id } },
    m.text,
    el("span", { class: "meta" }, when(m.at), " ",
       m.direction === "out" ? [badge(m.status), m.device_id ? " via " + m.device_id : "",
                                m.reason ? " — " + m.reason : ""] : "received")));
  const reply = el("form", { class: "reply", onsubmit: async (e) => {
    e.preventDefault();
    const field = e.target.elements.message;
    try {
      await call("POST", "/api/threads/" + encodeURIComponent(t.number), { message: field.value });
      field.value = "";
      say("Queued");
      render(false);
    } catch (err) { say(err.message); }
  } }, el("label", { class: "grow" }, "Reply", el("textarea", { name: "message", required: true, rows: 2,
                                                                  "data-keep": "reply" })),
  el("button", { type: "submit" }, "Send"));
  return el("div", {},
    el("h2", {}, t.name ? t.name + " · " + t.number : t.number, " ",
       t.opted_out ? badge("opted-out") : null),
    t.opted_out ? el("p", { class: "error" }, "This number asked to stop: messages to it are refused.") : null,
    el("ol", { class: "messages", "aria-label": "Messages" }, items), reply);
}

// -- devices ---------------------------------------------------------------------------------

async function devicesView() {
  const devices = await call("GET", "/api/devices");
  const cols = ["Device", "State", "Step / reason", "Signal", "Battery", "Last seen", "Sent today", "Limits", ""];
  const rows = devices.map((d) => el("tr", { dataset: { device: d.id } },
    td(cols[0], el("strong", {}, d.id), el("div", { class: "mono" }, d.kind + " · " + d.account)),
    td(cols[1], badge(d.state)),
    td(cols[2], d.step ? "step " + d.step + ": " : "", d.reason || ""),
    td(cols[3], d.signal === null || d.signal === undefined ? "—" : d.signal + "%"),
    td(cols[4], d.battery === null || d.battery === undefined ? "—" : d.battery + "%"),
    td(cols[5], d.last_seen_at ? when(d.last_seen_at) : "never"),
    td(cols[6], String(d.sent_today ?? 0)),
    td(cols[7], [d.max_per_minute ? d.max_per_minute + "/min" : "", d.max_per_hour ? d.max_per_hour + "/h" : "",
                 d.max_per_day ? d.max_per_day + "/day" : ""].filter(Boolean).join(" · ") || "no rate limit"
                + " · window " + d.window),
    td(cols[8], el("button", { type: "button", class: "secondary", onclick: async () => {
      try { const r = await call("POST", "/api/devices/" + encodeURIComponent(d.id) + "/recheck");
            say(r.closed ? d.id + ": session closed" : d.id + ": token still valid"); render(false); }
      catch (err) { say(err.message); }
    } }, "Re-check"))));
  return el("section", { class: "card" }, el("h1", {}, "Devices"), table(cols, rows));
}

function td(label, ...children) { return el("td", { "data-label": label }, ...children); }
function table(cols, rows) {
  return el("table", { class: "stack" }, el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))),
            el("tbody", {}, rows));
}

// -- queue and history -------------------------------------------------------------------------

const STATES = ["queued", "dispatched", "unconfirmed", "sent", "delivered", "failed", "expired", "cancelled"];

async function queueView() {
  const params = new URLSearchParams(state.arg || "");
  const query = new URLSearchParams();
  if (params.get("state")) query.set("state", params.get("state"));
  if (params.get("search")) query.set("search", params.get("search"));
  const [jobs, counts] = await Promise.all([call("GET", "/api/jobs?" + query), call("GET", "/api/jobs/counts")]);
  const filter = el("form", { class: "toolbar", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const f = new URLSearchParams();
    if (e.target.elements.state.value) f.set("state", e.target.elements.state.value);
    if (e.target.elements.search.value.trim()) f.set("search", e.target.elements.search.value.trim());
    location.hash = "#/queue/" + encodeURIComponent(f.toString());
  } },
  el("label", {}, "State", el("select", { name: "state" }, el("option", { value: "" }, "any"),
     STATES.map((s) => el("option", { value: s, selected: s === params.get("state") }, s)))),
  el("label", {}, "Number or id", el("input", { name: "search", value: params.get("search") || "",
                                                type: "search" })),
  el("button", { type: "submit" }, "Search"));
  const summary = el("p", { class: "mono" }, counts.length ? counts.map((c) =>
    c.state + " p" + c.priority + ": " + c.count).join(" · ") : "no jobs");
  const cols = ["Id", "To", "Text", "State", "Priority", "Device", "Created", ""];
  const rows = jobs.map((j) => el("tr", { dataset: { id: j.id_sms_api } },
    td(cols[0], el("button", { type: "button", class: "secondary mono", "aria-expanded": "false",
                               onclick: (e) => toggleHistory(e.target, j.id_sms_api) }, j.id_sms_api)),
    td(cols[1], j.phone_number), td(cols[2], j.message), td(cols[3], badge(j.status)),
    td(cols[4], String(j.priority)), td(cols[5], j.device_id || "—"), td(cols[6], when(j.created_at)),
    td(cols[7], j.status === "queued" ? el("button", { type: "button", onclick: async () => {
      try { await call("POST", "/api/jobs/" + encodeURIComponent(j.id_sms_api) + "/cancel");
            say(j.id_sms_api + " cancelled"); render(false); }
      catch (err) { say(err.message); }
    } }, "Cancel") : "")));
  // Histories opened before a live refresh stay open.
  await Promise.all(rows.filter((r) => state.opened.has(r.dataset.id)).map((r) =>
    showHistory(r.querySelector("button"), r.dataset.id)));
  return el("section", { class: "card" }, el("h1", {}, "Queue and history"), filter, summary, table(cols, rows));
}

async function toggleHistory(button, id) {
  const open = button.parentElement.querySelector(".history");
  if (open) {
    open.remove();
    state.opened.delete(id);
    button.setAttribute("aria-expanded", "false");
    return;
  }
  state.opened.add(id);
  await showHistory(button, id);
}

async function showHistory(button, id) {
  const cell = button.parentElement;
  const job = await call("GET", "/api/jobs/" + encodeURIComponent(id));
  cell.append(el("ol", { class: "history" }, job.history.map((h) =>
    el("li", {}, h.status, " · ", when(h.at), h.device_id ? " · " + h.device_id : "", h.reason ? " · " + h.reason : ""))));
  button.setAttribute("aria-expanded", "true");
}

// -- webhooks ------------------------------------------------------------------------------------

async function webhooksView() {
  const events = await call("GET", "/api/webhooks");
  const cols = ["Event", "Kind", "State", "Attempts", "Next attempt", "Last error", ""];
  const rows = events.map((e) => el("tr", { dataset: { event: e.id } },
    td(cols[0], "#" + e.id, el("div", { class: "sub" }, when(e.created_at))), td(cols[1], e.kind),
    td(cols[2], badge(e.status)), td(cols[3], String(e.attempts)), td(cols[4], when(e.next_attempt_at) || "—"),
    td(cols[5], e.last_error || ""),
    td(cols[6], e.status === "dead" ? el("button", { type: "button", onclick: async () => {
      try { await call("POST", "/api/webhooks/" + e.id + "/replay"); say("#" + e.id + " replayed"); render(false); }
      catch (err) { say(err.message); }
    } }, "Replay") : "")));
  const test = el("button", { type: "button", class: "secondary", onclick: async () => {
    try { await call("POST", "/api/webhooks/test"); say("Test event recorded"); render(false); }
    catch (err) { say(err.message); }
  } }, "Send a test event");
  return el("section", { class: "card" }, el("h1", {}, "Webhooks"),
            el("div", { class: "toolbar" }, test),
            events.length ? table(cols, rows) : el("p", {}, "Nothing waiting: every event was delivered."));
}

const VIEWS = { threads: threadsView, devices: devicesView, queue: queueView, webhooks: webhooksView };

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  document.getElementById("account").addEventListener("change", (e) => {
    state.account = e.target.value;
    location.hash = "#/" + state.view;
    listen();
    render(false);
  });
  window.addEventListener("hashchange", route);
  start();
});
