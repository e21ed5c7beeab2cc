// The controller's dashboard: polls GET /overview every second and redraws, no reloads.
// Every text from the cluster goes in through textContent (never innerHTML): server
// URLs come from heartbeats and must not become markup.
"use strict";

const POLL_MS = 1000;
const controller = window.location.origin;
let last = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "style") node.style.width = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const badge = (state, attrs) => el("span", { class: "badge", "data-state": state, ...(attrs || {}) }, state);
const cli = (command) => el("code", { class: "cli", title: "the same from the command line" }, command);
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const age = (s) => (s < 120 ? `${s.toFixed(1)} s` : `${Math.round(s / 60)} min`);
const when = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");

function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { class: h.startsWith("#") ? "num" : "" }, h.replace(/^#/, ""))))),
    el("tbody", {}, ...rows));
}

function section(title, command, wide, id, ...body) {
  return el("section", { class: wide ? "wide" : "", id }, el("h2", {}, el("span", {}, title), cli(command)), ...body);
}

function serversSection(view) {
  const rows = view.servers.map((s) =>
    el("tr", { "data-server": s.server_id, "data-state": s.state },
      el("td", {}, s.server_id), el("td", {}, s.url), el("td", {}, badge(s.state)),
      el("td", { class: "num" }, age(s.heartbeat_age_s)), el("td", { class: "num" }, num(s.replicas))));
  return section("Servers", `venice status --controller ${controller}`, false, "servers",
    view.servers.length ? table(["server", "url", "state", "#heartbeat", "#replicas"], rows) : el("p", { class: "dim" }, "No server has registered."));
}

function progressBar(progress, status) {
  const done = status === "ONLINE" || status === "RETIRED";
  const share = progress ? progress.replicated_partitions / Math.max(1, progress.partitions) : done ? 1 : 0;
  return el("div", { class: "progress", "data-done": String(done), title: `${Math.round(share * 100)} %` },
    el("div", { style: `${Math.round(share * 100)}%` }));
}

function versionCell(store, v) {
  const label = el("span", { class: v.current ? "current" : "" }, `v${v.version}${v.current ? "*" : ""} `);
  return el("span", { "data-version": `${store.name}:${v.version}`, "data-status": v.status }, label, badge(v.status), " ");
}

function storesSection(view) {
  const rows = view.stores.map((store) => {
    const kept = store.versions.filter((v) => v.status !== "RETIRED");
    const push = kept.find((v) => v.status === "STARTED");
    return el("tr", { "data-store": store.name },
      el("td", {}, el("a", { href: `#store=${encodeURIComponent(store.name)}` }, store.name), store.hybrid ? el("span", { class: "dim" }, " hybrid") : null),
      el("td", {}, store.current_version === null ? "–" : `v${store.current_version}`),
      el("td", { class: "num" }, `${store.partitions} × ${store.replication_factor}`),
      el("td", {}, ...kept.map((v) => versionCell(store, v))),
      el("td", {}, push ? pushProgress(push) : el("span", { class: "dim" }, "–")));
  });
  return section("Stores", `venice store list --controller ${controller}`, true, "stores",
    view.stores.length ? table(["store", "current", "#partitions × R", "versions (* current)", "push"], rows) : el("p", { class: "dim" }, "No stores yet."));
}

function pushProgress(v) {
  const p = v.progress;
  return el("span", { "data-push": `${v.version}` }, progressBar(p, v.status),
    el("span", { class: "dim" }, `${p.replicated_partitions}/${p.partitions} partitions, ${num(p.records_applied)} records${p.push_ended ? ", push ended" : ""}`));
}

function routersSection(view) {
  const rows = (view.routers || []).map((r) =>
    el("tr", { "data-router": r.url, "data-state": r.up ? "live" : "dead" },
      el("td", {}, r.url), el("td", {}, badge(r.up ? "live" : "dead")),
      el("td", { class: "num", "data-reads": "" }, r.reads_per_s === null || r.reads_per_s === undefined ? "–" : r.reads_per_s.toFixed(1)),
      el("td", { class: "num", "data-p99": "" }, r.p99_ms === null || r.p99_ms === undefined ? "–" : `${r.p99_ms} ms`),
      el("td", { class: "num" }, num(r.failovers_per_s === undefined ? null : r.failovers_per_s))));
  return section("Routers: reads", `venice status --controller ${controller}`, false, "routers",
    rows.length ? table(["router", "state", "#reads/s", "#p99", "#failovers/s"], rows)
      : el("p", { class: "dim" }, "The controller was given no routers to watch (venice controller --router URL)."));
}

function replicaMap(store, v, servers) {
  const used = new Set();
  for (const rows of Object.values(v.replicas || {})) for (const r of rows) used.add(r.server);
  const columns = servers.map((s) => s.server_id).filter((id) => used.has(id));
  for (const id of used) if (!columns.includes(id)) columns.push(id);
  const stateOf = Object.fromEntries(servers.map((s) => [s.server_id, s.state]));
  const head = el("tr", {}, el("th", {}, "partition"),
    ...columns.map((id) => el("th", { class: stateOf[id] === "dead" || !stateOf[id] ? "dead" : "" }, id)));
  const body = Object.entries(v.replicas || {}).map(([partition, rows]) => {
    const byServer = Object.fromEntries(rows.map((r) => [r.server, r]));
    return el("tr", {}, el("th", {}, partition), ...columns.map((id) => {
      const r = byServer[id];
      if (!r) return el("td", { class: "cell", "data-state": "none" }, "–");
      const lag = r.lag !== null && r.lag !== undefined ? `lag ${num(r.lag)}` : r.rt_lag !== null && r.rt_lag !== undefined ? `rt lag ${num(r.rt_lag)}` : "";
      return el("td", { class: "cell", "data-state": r.status, "data-replica": `${partition}@${id}`, title: `${r.status}, ${num(r.records)} records ${lag}` },
        `${num(r.records)}`, el("br"), lag || r.status);
    }));
  });
  return el("table", { class: "map", "data-map": `${store.name}:${v.version}` }, el("thead", {}, head), el("tbody", {}, ...body));
}

function storeView(view, name) {
  const store = view.stores.find((s) => s.name === name);
  if (!store) {
    return [section(`Store ${name}`, `venice store describe --controller ${controller} ${name}`, true, "store", el("p", {}, "No such store (deleted?). ", el("a", { href: "#" }, "Back to the cluster")))];
  }
  const rows = store.versions.map((v) =>
    el("tr", { "data-version-row": `${store.name}:${v.version}`, "data-status": v.status },
      el("td", { class: v.current ? "current" : "" }, `v${v.version}${v.current ? " (current)" : ""}`),
      el("td", {}, badge(v.status)),
      el("td", { class: "num" }, num(v.records)),
      el("td", {}, when(v.created_at)),
      el("td", { class: "num" }, v.online_at ? `${(v.online_at - v.created_at).toFixed(1)} s` : "–"),
      el("td", {}, v.progress ? pushProgress(v) : null),
      el("td", { class: "dim" }, v.reason || "")));
  const out = [
    section(`Store ${store.name}: versions`, `venice version list --controller ${controller} --store ${store.name}`, true, "versions",
      table(["version", "status", "#records", "opened", "#to ONLINE", "replicas ready", "reason"], rows)),
  ];
  for (const v of store.versions.filter((x) => x.replicas)) {
    out.push(section(`v${v.version} replica map (${v.status})${v.current ? ": current" : ""}`,
      `venice store describe --controller ${controller} ${store.name}`, true, `map-${v.version}`, replicaMap(store, v, view.servers)));
  }
  return out;
}

function render(view) {
  const counts = { live: 0, draining: 0, dead: 0 };
  for (const s of view.servers) counts[s.state] += 1;
  document.getElementById("summary").textContent =
    `${counts.live} live, ${counts.draining} draining, ${counts.dead} dead servers · ${view.stores.length} stores · routing generation ${view.generation}`;
  const match = window.location.hash.match(/^#store=(.+)$/);
  const parts = match ? storeView(view, decodeURIComponent(match[1])) : [serversSection(view), routersSection(view), storesSection(view)];
  const main = document.getElementById("view");
  main.replaceChildren(...parts);
  main.dataset.generation = String(view.generation);
  document.getElementById("updated").textContent = `Last update ${when(view.time)}.`;
}

// A closed cluster (docs/security.md) answers /overview with 401 until the page shows a
// monitor (or admin) token. The token is kept in sessionStorage only (gone with the tab),
// sent as "Authorization: Bearer", never put in a URL, and never rendered.
const TOKEN_KEY = "venice.token";

function storedToken() {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY);
  } catch (error) {
    return null;
  }
}

function signIn(message) {
  const input = el("input", { type: "password", id: "token", autocomplete: "off", spellcheck: "false", placeholder: "vt_…", "aria-label": "token" });
  const submit = () => {
    const token = input.value.trim();
    if (!token) return;
    try {
      window.sessionStorage.setItem(TOKEN_KEY, token);
    } catch (error) {
      // Storage refused (private mode): the token lives until the next refused answer.
    }
    signedInToken = token;
    input.value = "";
    poll();
  };
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") submit(); });
  const button = el("button", { type: "button", id: "sign-in" }, "Show the cluster");
  button.addEventListener("click", submit);
  const main = document.getElementById("view");
  main.replaceChildren(section("This cluster is closed", "venice token create --role monitor", true, "signin",
    el("p", {}, "The overview needs a monitor or admin token. It is kept in this tab only (sessionStorage) and sent to the controller, nowhere else."),
    el("p", { id: "signin-error", class: "error" }, message || ""),
    el("p", {}, input, " ", button)));
  document.getElementById("summary").textContent = "";
  input.focus();
}

let signedInToken = storedToken();

function forget() {
  signedInToken = null;
  try {
    window.sessionStorage.removeItem(TOKEN_KEY);
  } catch (error) {
    // nothing kept
  }
}

let timer = null;
let inFlight = false;

async function poll() {
  window.clearTimeout(timer);
  if (inFlight) return; // one loop: a second sign-in click does not start another
  inFlight = true;
  try {
    await pollOnce();
  } finally {
    inFlight = false;
  }
}

async function pollOnce() {
  const connection = document.getElementById("connection");
  const headers = signedInToken ? { Authorization: `Bearer ${signedInToken}` } : {};
  try {
    const response = await fetch("/overview", { cache: "no-store", headers, credentials: "omit" });
    if (response.status === 401 || response.status === 403) {
      const sent = Boolean(signedInToken);
      let why = "";
      try {
        why = (await response.json()).error.message;
      } catch (error) {
        why = `HTTP ${response.status}`;
      }
      forget();
      connection.dataset.state = "locked";
      connection.textContent = "token needed";
      signIn(sent ? `That token was refused: ${why}` : "");
      return; // polling resumes when a token is given (no timer)
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    last = await response.json();
    render(last);
    connection.dataset.state = "ok";
    connection.textContent = "live";
  } catch (error) {
    if (error instanceof TypeError && signedInToken && /header/i.test(error.message)) {
      forget(); // a token the browser cannot send (not ASCII): ask again
      signIn("That token is not a valid token.");
      return;
    }
    connection.dataset.state = "down";
    connection.textContent = `controller unreachable (${error.message}); retrying`;
  }
  timer = window.setTimeout(poll, POLL_MS);
}

window.addEventListener("hashchange", () => last && render(last));
poll();
