// app.js: the console. One state object, rendered into the page; the URL
// holds the view and the filters, so a view can be bookmarked and shared.
import { api, nextPage, session, Stream, whenUnauthorized } from "./api.js";
import { ago, el, fmtTime, fmtSeconds, $ } from "./dom.js";

const severities = ["critical", "high", "medium", "low"];
const rank = { critical: 4, high: 3, medium: 2, low: 1 };
const liveStatuses = ["open", "acknowledged"];
const actionLabels = { acknowledge: "Acknowledge", unacknowledge: "Unacknowledge", resolve: "Resolve", reopen: "Reopen" };
const actionsFrom = {
  open: ["acknowledge", "resolve"],
  acknowledged: ["unacknowledge", "resolve"],
  resolved: ["reopen"],
};

const state = {
  user: null,          // {username, role}, null when anonymous
  incidents: new Map(), // id -> incident, as the server last said
  rows: new Map(),      // id -> {li, version, key}: rendered rows, reused
  fresh: new Set(),     // ids reported since the page loaded, highlighted
  selected: new Set(),
  cursor: null,         // the id j/k are on
  stream: null,
  loaded: false,
  detail: null,         // {incident, events} while the detail view is shown
  historyNext: "",
  renderQueued: false,
  expiryTimer: 0,
  panelsTimer: 0,
  liveURL: "/ui/",      // the live list as last filtered, for Back and g
};

const canManage = () => !!state.user && (state.user.role === "responder" || state.user.role === "admin");

// ---- The URL ----

function readURL() {
  const q = new URLSearchParams(location.search);
  const list = (name, allowed) => (q.get(name) || "").split(",").filter((v) => allowed.includes(v));
  return {
    view: q.get("incident") ? "detail" : q.get("view") === "history" ? "history" : "live",
    id: Number(q.get("incident")) || 0,
    status: list("status", liveStatuses),
    severity: list("severity", severities),
    label: q.get("label") || "",
    q: q.get("q") || "",
    source: q.get("source") || "",
    hq: q.get("hq") || "",
    from: q.get("from") || "",
    to: q.get("to") || "",
  };
}

function filtersFromForm() {
  const form = $("filters");
  const checked = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value);
  return {
    status: checked("status"), severity: checked("severity"),
    label: $("filter-label").value.trim(), q: $("filter-q").value.trim(), source: $("filter-source").value.trim(),
  };
}

function liveQuery(f) {
  const q = new URLSearchParams();
  if (f.status.length) q.set("status", f.status.join(","));
  if (f.severity.length) q.set("severity", f.severity.join(","));
  for (const k of ["label", "q", "source"]) if (f[k]) q.set(k, f[k]);
  return q;
}

function go(url, replace = false) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

function withQuery(q) {
  const s = q.toString();
  return "/ui/" + (s ? "?" + s : "");
}

// ---- Messages ----

function toast(text, kind = "error") {
  const close = el("button", { type: "button", class: "link", "aria-label": "Dismiss" }, "×");
  const t = el("div", { class: "toast " + kind }, el("span", {}, text), close);
  close.addEventListener("click", () => t.remove());
  $("toasts").append(t);
  setTimeout(() => t.remove(), kind === "error" ? 15000 : 5000);
}

// ---- Signing in ----

function showSignIn(reason) {
  stopStream();
  state.user = null;
  $("main").hidden = true;
  $("banners").replaceChildren(); // what an admin saw goes with the admin
  $("signin").hidden = false;
  $("signin-reason").textContent = reason || "";
  $("signin-error").textContent = "";
  renderWho();
  $("username").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const username = $("username").value, password = $("password").value;
  $("signin-error").textContent = "";
  try {
    const { data } = await api("POST", "/api/v1/login", { body: { username, password }, anonymous: true });
    session.set(data.access_token);
    $("password").value = "";
    await start();
  } catch (e) {
    $("signin-error").textContent = e.message;
  }
}

function signOut() {
  session.clear();
  stopStream();
  state.user = null;
  start();
}

// watchExpiry asks the server, once the token's time is up, whether it
// still takes it; a 401 sends the user to sign in.
function watchExpiry() {
  clearTimeout(state.expiryTimer);
  const at = session.expiresAt();
  if (!at) return;
  state.expiryTimer = setTimeout(() => api("GET", "/api/v1/me").catch(() => {}), Math.max(0, at - Date.now()) + 1000);
}

// start finds out who the user is (or whether reading is open without
// signing in) and shows the view the URL names.
async function start() {
  state.incidents.clear();
  state.rows.clear();
  state.selected.clear();
  state.loaded = false;
  $("list").replaceChildren();
  if (session.token) {
    try {
      state.user = (await api("GET", "/api/v1/me")).data;
    } catch (e) {
      if (e.status !== 401) showSignIn(e.message);
      return; // a 401 already shows the sign-in
    }
    watchExpiry();
  } else {
    try {
      await api("GET", "/api/v1/incidents?limit=1", { anonymous: true });
    } catch (e) {
      showSignIn(e.status === 401 || e.status === 403 ? "" : e.message);
      return;
    }
  }
  $("signin").hidden = true;
  $("main").hidden = false;
  renderWho();
  startStream();
  loadPanels();
  route();
}

function renderWho() {
  const u = state.user;
  $("who").textContent = u ? `${u.username} (${u.role})` : $("signin").hidden ? "read-only" : "";
  $("signout").hidden = !u;
  $("signin-open").hidden = !!u || !$("signin").hidden;
  document.body.classList.toggle("can-manage", canManage());
}

// ---- The stream ----

function startStream() {
  stopStream();
  let loadTimer = 0;
  state.stream = new Stream({
    onState: (s) => {
      const live = $("live");
      live.textContent = s === "live" ? "live" : s;
      live.className = "indicator " + (s === "live" ? "on" : "off");
    },
    onHello: (_, first) => {
      // The list is read after the stream stands, so no change falls
      // between the two: a change in both is applied once, by version.
      if (first) { clearTimeout(loadTimer); loadOpen(); }
    },
    onEvent: applyEvent,
  });
  state.stream.start();
  loadTimer = setTimeout(loadOpen, 3000); // no stream: read the list anyway
}

function stopStream() {
  if (state.stream) state.stream.stop();
  state.stream = null;
  $("live").textContent = "offline";
  $("live").className = "indicator off";
}

function upsert(inc) {
  const cur = state.incidents.get(inc.id);
  if (cur && cur.version > inc.version) return false;
  state.incidents.set(inc.id, inc);
  return true;
}

function applyEvent(ev) {
  const inc = ev.data;
  if (!inc || typeof inc.id !== "number") return;
  upsert(inc);
  if (ev.type === "added" || ev.type === "reopened") {
    state.fresh.add(inc.id);
    setTimeout(() => { state.fresh.delete(inc.id); queueRender(); }, 15000);
  }
  if (state.detail && state.detail.incident.id === inc.id) {
    state.detail.incident = state.incidents.get(inc.id);
    // The timeline read over REST may hold it already.
    if (!state.detail.events.some((e) => e.seq === ev.seq)) state.detail.events.push(ev);
    renderDetail();
  }
  if (ev.type === "heartbeat_down" || ev.type === "heartbeat_up") {
    clearTimeout(state.panelsTimer); // one reading for a burst
    state.panelsTimer = setTimeout(loadPanels, 100);
  }
  queueRender();
}

async function loadOpen() {
  if (state.loaded) return;
  state.loaded = true;
  let path = "/api/v1/incidents?status=open,acknowledged&limit=1000";
  try {
    while (path) {
      const { data, headers } = await api("GET", path);
      for (const inc of data) upsert(inc);
      path = nextPage(headers);
    }
  } catch (e) {
    state.loaded = false;
    toast("Could not read the incidents: " + e.message);
  }
  queueRender();
}

async function refresh(id) {
  try {
    const { data } = await api("GET", `/api/v1/incidents/${id}`);
    upsert(data);
    queueRender();
  } catch { /* the stream brings it */ }
}

// ---- The live list ----

function matches(inc, f) {
  if (!liveStatuses.includes(inc.status)) return false;
  if (f.status.length && !f.status.includes(inc.status)) return false;
  if (f.severity.length && !f.severity.includes(inc.severity)) return false;
  if (f.q && !inc.title.toLowerCase().includes(f.q.toLowerCase())) return false;
  if (f.source && inc.source.toLowerCase() !== f.source.toLowerCase()) return false;
  if (f.label) {
    const i = f.label.indexOf(":");
    const k = i < 0 ? f.label : f.label.slice(0, i), v = i < 0 ? null : f.label.slice(i + 1);
    if (!Object.hasOwn(inc.labels || {}, k) || (v !== null && inc.labels[k] !== v)) return false;
  }
  return true;
}

function byUrgency(a, b) {
  return rank[b.severity] - rank[a.severity] || Date.parse(b.created_at) - Date.parse(a.created_at) || b.id - a.id;
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    renderLive();
  });
}

function renderLive() {
  const all = [...state.incidents.values()].filter((i) => liveStatuses.includes(i.status));
  renderCounters(all);
  const f = filtersFromForm();
  const shown = all.filter((i) => matches(i, f)).sort(byUrgency);
  const manage = canManage();
  const lis = shown.map((inc) => {
    const key = [inc.version, manage, state.fresh.has(inc.id), state.selected.has(inc.id), state.cursor === inc.id].join();
    let row = state.rows.get(inc.id);
    if (!row || row.key !== key) {
      row = { li: renderRow(inc, manage), key };
      state.rows.set(inc.id, row);
    }
    return row.li;
  });
  const ids = new Set(shown.map((i) => i.id));
  for (const id of state.rows.keys()) if (!ids.has(id)) state.rows.delete(id);
  for (const id of state.selected) {
    if (!state.incidents.has(id) || !liveStatuses.includes(state.incidents.get(id).status)) state.selected.delete(id);
  }
  $("list").replaceChildren(...lis);
  $("list-empty").hidden = !state.loaded || lis.length > 0;
  $("bulk").hidden = !manage || state.selected.size === 0;
  $("bulk-count").textContent = `${state.selected.size} selected`;
}

function renderCounters(all) {
  const count = (pred) => all.filter(pred).length;
  const chip = (name, n, cls) => el("span", { class: "counter " + cls }, el("b", {}, String(n)), " " + name);
  $("counters").replaceChildren(
    ...severities.map((s) => chip(s, count((i) => i.severity === s), "sev-" + s)),
    ...liveStatuses.map((s) => chip(s, count((i) => i.status === s), "st-" + s)),
  );
}

function chips(labels) {
  return el("span", { class: "chips" },
    ...Object.entries(labels || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`)));
}

function renderRow(inc, manage) {
  const cls = ["row", "sev-" + inc.severity, "st-" + inc.status];
  if (state.fresh.has(inc.id)) cls.push("fresh");
  if (state.selected.has(inc.id)) cls.push("selected");
  if (state.cursor === inc.id) cls.push("current");
  const li = el("li", { class: cls.join(" "), "data-id": inc.id, tabindex: "-1" });
  if (manage) {
    li.append(el("input", {
      type: "checkbox", class: "pick", "aria-label": `Select incident ${inc.id}`,
      checked: state.selected.has(inc.id), "data-pick": inc.id,
    }));
  }
  li.append(
    el("span", { class: "sev" }, inc.severity),
    el("a", { class: "title", href: `/ui/?incident=${inc.id}`, "data-nav": "" }, inc.title),
    chips(inc.labels),
    el("span", { class: "meta" },
      inc.occurrences > 1 ? el("span", { class: "occ", title: "occurrences" }, `×${inc.occurrences}`) : "",
      el("span", { class: "src" }, inc.source),
      el("time", { class: "age", "data-since": inc.created_at, datetime: inc.created_at }, ago(inc.created_at)),
      inc.status === "acknowledged" ? el("span", { class: "acker" }, "ack " + (inc.acknowledged_by || "")) : ""),
  );
  if (manage) {
    li.append(el("span", { class: "actions" },
      ...actionsFrom[inc.status].map((a) => el("button", { type: "button", "data-act": a, "data-id": inc.id }, actionLabels[a]))));
  }
  return li;
}

// ---- Acting ----

// act applies action to every id, with the note if any, and says in
// words what failed; a conflict refreshes the row.
async function act(ids, action, note) {
  const failures = await Promise.all(ids.map(async (id) => {
    const inc = state.incidents.get(id);
    const headers = inc ? { "If-Match": `"${inc.version}"` } : {};
    try {
      const { data } = await api("PATCH", `/api/v1/incidents/${id}/${action}`, { body: note ? { note } : undefined, headers });
      upsert(data);
      return "";
    } catch (e) {
      const what = `Could not ${action} #${id}${inc ? ` “${inc.title}”` : ""}`;
      if (e.status === 409 || e.status === 412) {
        refresh(id);
        return `${what}: ${e.message} (${e.status}). Someone changed it meanwhile; it now shows as it is.`;
      }
      return `${what}: ${e.message}`;
    }
  }));
  for (const f of failures) if (f) toast(f);
  if (!failures.some(Boolean) && ids.length > 1) toast(`${actionLabels[action]}: ${ids.length} incidents`, "info");
  queueRender();
  if (state.detail && ids.includes(state.detail.incident.id)) renderDetail();
  return !failures.some(Boolean);
}

function targets() {
  if (state.selected.size) return [...state.selected];
  return state.cursor ? [state.cursor] : [];
}

// ---- Detail ----

async function showDetail(id) {
  state.detail = null;
  $("detail").replaceChildren(el("p", { class: "muted" }, "Loading…"));
  try {
    const [inc, events] = await Promise.all([
      api("GET", `/api/v1/incidents/${id}`),
      api("GET", `/api/v1/incidents/${id}/events?limit=1000`),
    ]);
    upsert(inc.data);
    state.detail = { incident: state.incidents.get(id), events: events.data };
    renderDetail();
  } catch (e) {
    $("detail").replaceChildren(el("p", { class: "error" }, `Incident ${id}: ${e.message}`));
  }
}

function actorName(a) {
  if (!a) return "system";
  return a.user ? a.user + (a.api_key ? ` (key ${a.api_key})` : "") : a.integration ? `integration ${a.integration}` : "system";
}

function renderDetail() {
  const { incident: inc, events } = state.detail;
  const field = (name, value) => [el("dt", {}, name), el("dd", {}, value ?? "—")];
  const when = (t) => (t ? el("time", { datetime: t, title: t }, fmtTime(t)) : "—");
  const links = (inc.links || []).filter((l) => /^https?:\/\//i.test(l.href))
    .map((l) => el("li", {}, el("a", { href: l.href, rel: "noopener noreferrer", target: "_blank" }, l.text || l.href)));
  const parts = [
    el("h2", {}, el("span", { class: "sev sev-" + inc.severity }, inc.severity), " ", inc.title),
    el("dl", { class: "fields" },
      ...field("id", String(inc.id)), ...field("status", inc.status), ...field("source", inc.source),
      ...field("created", when(inc.created_at)), ...field("updated", when(inc.updated_at)),
      ...field("last occurred", when(inc.last_occurred_at)), ...field("occurrences", String(inc.occurrences)),
      ...field("acknowledged", inc.acknowledged_at ? [when(inc.acknowledged_at), " by " + (inc.acknowledged_by || "system")] : null),
      ...field("resolved", inc.resolved_at ? [when(inc.resolved_at), " by " + (inc.resolved_by || "system")] : null),
      ...field("dedup key", inc.dedup_key), ...field("version", String(inc.version))),
    inc.description ? el("p", { class: "description" }, inc.description) : "",
    chips(inc.labels),
    links.length ? el("ul", { class: "links" }, ...links) : "",
    inc.details && Object.keys(inc.details).length ? el("pre", { class: "details" }, JSON.stringify(inc.details, null, 2)) : "",
  ];
  if (canManage()) {
    const note = el("textarea", { id: "detail-note", rows: "2", placeholder: "Note (optional)", "aria-label": "Note" });
    const buttons = actionsFrom[inc.status].map((a) => {
      const b = el("button", { type: "button", "data-detail-act": a }, actionLabels[a]);
      b.addEventListener("click", async () => {
        // The field is read again once done: the detail may have been
        // rendered anew meanwhile.
        if (await act([inc.id], a, note.value.trim())) $("detail-note").value = "";
      });
      return b;
    });
    const addNote = el("button", { type: "button" }, "Add note");
    addNote.addEventListener("click", async () => {
      const body = note.value.trim();
      if (!body) { note.focus(); return; }
      try {
        await api("POST", `/api/v1/incidents/${inc.id}/notes`, { body: { body } });
        $("detail-note").value = "";
      } catch (e) { toast("Could not add the note: " + e.message); }
    });
    parts.push(el("div", { class: "act" }, note, el("div", {}, ...buttons, addNote)));
  }
  const notes = events.filter((ev) => ev.note).map((ev) => ev.note);
  parts.push(el("h3", {}, "Notes"), notes.length
    ? el("ol", { class: "notes" }, ...notes.map((n) => el("li", {},
      el("time", { datetime: n.created_at }, fmtTime(n.created_at)), " ", n.author || "system",
      el("blockquote", {}, n.body))))
    : el("p", { class: "muted" }, "No notes yet."));
  parts.push(el("h3", {}, "Timeline"), el("ol", { class: "timeline" }, ...events.map((ev) => el("li", {},
    el("time", { datetime: ev.created_at }, fmtTime(ev.created_at)), " ",
    el("b", {}, ev.type), " by ", actorName(ev.actor),
    ev.escalation ? ` (${ev.escalation.policy}, step ${ev.escalation.step})` : "",
    ev.heartbeat ? ` (heartbeat ${ev.heartbeat.name})` : "",
    ev.note ? el("blockquote", {}, ev.note.body) : ""))));
  // A note being written survives the detail being rendered anew.
  const old = $("detail-note");
  const draft = old && { value: old.value, focused: document.activeElement === old, start: old.selectionStart, end: old.selectionEnd };
  $("detail").replaceChildren(...parts);
  const note = $("detail-note");
  if (draft && note) {
    note.value = draft.value;
    if (draft.focused) { note.focus(); note.setSelectionRange(draft.start, draft.end); }
  }
}

// ---- History ----

// dayStart and dayEnd bound a day given as YYYY-MM-DD in local time; a
// date that is not one (a hand-edited URL) sets no bound.
function dayStart(d) { return dayBound(d, 0); }
function dayEnd(d) { return dayBound(d, 1); }
function dayBound(d, add) {
  const t = new Date(d + "T00:00:00");
  if (!d || isNaN(t)) return "";
  t.setDate(t.getDate() + add);
  return t.toISOString();
}

async function showHistory(u) {
  $("history-q").value = u.hq;
  $("history-from").value = u.from;
  $("history-to").value = u.to;
  const q = new URLSearchParams({ status: "resolved", limit: "50" });
  if (u.hq) q.set("q", u.hq);
  if (u.from) q.set("since", dayStart(u.from));
  if (u.to) q.set("until", dayEnd(u.to));
  $("history-list").replaceChildren();
  state.historyNext = "/api/v1/incidents?" + q;
  moreHistory();
  const s = new URLSearchParams();
  if (u.from) s.set("since", dayStart(u.from));
  if (u.to) s.set("until", dayEnd(u.to));
  try {
    const { data } = await api("GET", "/api/v1/incidents/stats" + (s.size ? "?" + s : ""));
    renderTimes(data.response_times);
  } catch (e) {
    $("times").replaceChildren(el("p", { class: "error" }, "Response times: " + e.message));
  }
}

async function moreHistory() {
  const path = state.historyNext;
  if (!path) return;
  try {
    const { data, headers } = await api("GET", path);
    state.historyNext = nextPage(headers);
    $("history-list").append(...data.map((inc) => el("li", { class: "row sev-" + inc.severity, "data-id": inc.id },
      el("span", { class: "sev" }, inc.severity),
      el("a", { class: "title", href: `/ui/?incident=${inc.id}`, "data-nav": "" }, inc.title),
      chips(inc.labels),
      el("span", { class: "meta" }, el("span", { class: "src" }, inc.source),
        el("span", {}, "resolved " + fmtTime(inc.resolved_at) + " by " + (inc.resolved_by || "system"))))));
    if (!$("history-list").children.length) $("history-list").append(el("li", { class: "muted" }, "No resolved incidents match."));
  } catch (e) {
    toast("Could not read the history: " + e.message);
  }
  $("history-more").hidden = !state.historyNext;
}

function renderTimes(rt) {
  const periods = [["7 days", rt.last_7_days], ["30 days", rt.last_30_days]];
  if (rt.range) periods.push(["range", rt.range]);
  const head = el("tr", {}, el("th", { scope: "col" }, "severity"),
    ...periods.flatMap(([name]) => [
      el("th", { scope: "col" }, `to ack, ${name}`), el("th", { scope: "col" }, `to resolve, ${name}`)]));
  const cell = (n, median, p90) => el("td", {}, n ? `${fmtSeconds(median)} · p90 ${fmtSeconds(p90)} (${n})` : "—");
  const row = (label, pick) => el("tr", {}, el("th", { scope: "row" }, label),
    ...periods.flatMap(([, p]) => {
      const f = pick(p);
      return [cell(f.acknowledged, f.ack_median_seconds, f.ack_p90_seconds), cell(f.resolved, f.resolve_median_seconds, f.resolve_p90_seconds)];
    }));
  $("times").replaceChildren(el("div", { class: "scroll" }, el("table", {},
    el("caption", { class: "muted" }, "median · 90th percentile (count)"),
    el("thead", {}, head),
    el("tbody", {}, row("all", (p) => p.all), ...severities.map((s) => row(s, (p) => p.by_severity[s]))))));
}

// ---- Heartbeats and webhooks ----

async function loadPanels() {
  try {
    const { data } = await api("GET", "/api/v1/heartbeats");
    $("heartbeats").hidden = !data.length;
    $("heartbeat-list").replaceChildren(...data.map((hb) => el("li", { class: "hb-" + hb.state },
      el("span", { class: "state" }, hb.state), " ", hb.name,
      hb.next_deadline ? el("span", { class: "muted" }, " · due " + fmtTime(hb.next_deadline)) : "")));
  } catch {
    $("heartbeats").hidden = true;
  }
  const banners = [];
  if (state.user && state.user.role === "admin") {
    try {
      const { data } = await api("GET", "/api/v1/webhooks");
      for (const wh of data.filter((w) => !w.enabled)) {
        banners.push(el("div", { class: "banner" },
          `Webhook “${wh.name}” is disabled` + (wh.disabled_reason ? `: ${wh.disabled_reason}` : ".")));
      }
      for (const wh of data.filter((w) => w.enabled && w.failing_since)) {
        banners.push(el("div", { class: "banner" },
          `Webhook “${wh.name}” is failing: its deliveries have been held up since ${fmtTime(wh.failing_since)}.`));
      }
    } catch { /* the banner is a courtesy */ }
  }
  // Signed out while the list was on its way: it is no one's to see.
  if (!$("main").hidden) $("banners").replaceChildren(...banners);
}

// ---- Views ----

function route() {
  const u = readURL();
  if ($("main").hidden) return;
  for (const v of ["live", "history", "detail"]) $("view-" + v).hidden = v !== u.view;
  $("nav-live").classList.toggle("active", u.view === "live");
  $("nav-history").classList.toggle("active", u.view === "history");
  if (u.view !== "detail") state.detail = null;
  if (u.view === "live") {
    const form = $("filters");
    for (const i of form.querySelectorAll("input[type=checkbox]")) i.checked = u[i.name].includes(i.value);
    $("filter-q").value = u.q;
    $("filter-label").value = u.label;
    $("filter-source").value = u.source;
    document.title = "Incidents";
    state.liveURL = location.pathname + location.search;
    queueRender();
  } else if (u.view === "history") {
    document.title = "History · Incidents";
    showHistory(u);
  } else {
    document.title = `#${u.id} · Incidents`;
    showDetail(u.id);
  }
}

function rowsShown() { return [...$("list").children].map((li) => Number(li.dataset.id)); }

function moveCursor(delta) {
  const ids = rowsShown();
  if (!ids.length) return;
  const i = ids.indexOf(state.cursor);
  state.cursor = ids[Math.max(0, Math.min(ids.length - 1, i < 0 ? 0 : i + delta))];
  renderLive();
  const li = $("list").querySelector(`li[data-id="${state.cursor}"]`);
  if (li) { li.focus(); li.scrollIntoView({ block: "nearest" }); }
}

function onKey(ev) {
  const t = ev.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement;
  const view = readURL().view;
  if (ev.key === "Escape") {
    if ($("help").open) $("help").close();
    else if (typing) t.blur();
    else if (view === "detail") go(state.liveURL);
    else { state.selected.clear(); queueRender(); }
    return;
  }
  // Behind the open help no key acts: the user cannot see what it does.
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey || $("main").hidden || $("help").open) return;
  const manage = canManage();
  switch (ev.key) {
    case "?": $("help").showModal(); break;
    case "/":
      if (view !== "live") go("/ui/");
      $("filter-q").focus();
      break;
    case "g": go(state.liveURL); break;
    case "h": go("/ui/?view=history"); break;
    case "j": if (view === "live") moveCursor(1); break;
    case "k": if (view === "live") moveCursor(-1); break;
    case "Enter": if (view === "live" && state.cursor) go(`/ui/?incident=${state.cursor}`); else return; break;
    case "x":
      if (view !== "live" || !manage || !state.cursor) return;
      if (state.selected.has(state.cursor)) state.selected.delete(state.cursor);
      else state.selected.add(state.cursor);
      renderLive();
      break;
    case "a": case "u": case "r": {
      if (!manage) return;
      const action = { a: "acknowledge", u: "unacknowledge", r: "resolve" }[ev.key];
      const ids = view === "detail" && state.detail ? [state.detail.incident.id] : targets();
      if (ids.length) act(ids, action, view === "live" ? $("bulk-note").value.trim() : "");
      break;
    }
    default: return;
  }
  ev.preventDefault();
}

function wire() {
  whenUnauthorized(() => {
    session.clear();
    showSignIn("Your session has ended. Sign in again to go on where you were.");
  });
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("signin-open").addEventListener("click", () => showSignIn(""));
  $("help-open").addEventListener("click", () => $("help").showModal());
  $("help-close").addEventListener("click", () => $("help").close());
  document.addEventListener("keydown", onKey);
  window.addEventListener("popstate", route);

  // Links inside the console change the view without a reload.
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-nav], nav a, #home, #detail-back");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    go(a.id === "detail-back" || a.id === "nav-live" ? state.liveURL : a.getAttribute("href"));
  });

  const filters = $("filters");
  const onFilter = () => {
    go(withQuery(liveQuery(filtersFromForm())), true);
  };
  filters.addEventListener("input", onFilter);
  filters.addEventListener("submit", (ev) => { ev.preventDefault(); onFilter(); });
  $("filters-clear").addEventListener("click", () => go("/ui/", true));

  $("list").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-act]");
    if (b) {
      act([Number(b.dataset.id)], b.dataset.act, $("bulk-note").value.trim());
      return;
    }
    const li = ev.target.closest("li[data-id]");
    if (li) state.cursor = Number(li.dataset.id);
  });
  $("list").addEventListener("change", (ev) => {
    const box = ev.target.closest("input[data-pick]");
    if (!box) return;
    const id = Number(box.dataset.pick);
    if (box.checked) state.selected.add(id); else state.selected.delete(id);
    queueRender();
  });
  $("bulk").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-bulk]");
    if (!b) return;
    if (await act([...state.selected], b.dataset.bulk, $("bulk-note").value.trim())) {
      state.selected.clear();
      $("bulk-note").value = "";
      queueRender();
    }
  });

  $("history-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ view: "history" });
    for (const [k, id] of [["hq", "history-q"], ["from", "history-from"], ["to", "history-to"]]) {
      if ($(id).value) q.set(k, $(id).value);
    }
    go(withQuery(q));
  });
  $("history-more").addEventListener("click", moreHistory);

  // Ages tick.
  setInterval(() => {
    for (const t of document.querySelectorAll("time[data-since]")) {
      const text = ago(t.dataset.since);
      if (t.textContent !== text) t.textContent = text;
    }
  }, 1000);
  setInterval(() => { if (!$("main").hidden) loadPanels(); }, 30000);
}

wire();
start();
