// api.js: the console's only way to the server. REST calls carry the
// token from sessionStorage in the Authorization header; the event stream
// carries a single-use stream ticket instead, since EventSource cannot
// send headers. The token is never put in a URL.

const tokenKey = "incidents.token";

// session is the signed-in user's token, for this tab only.
export const session = {
  get token() { return sessionStorage.getItem(tokenKey); },
  set(token) { sessionStorage.setItem(tokenKey, token); },
  clear() { sessionStorage.removeItem(tokenKey); },
  // expiresAt is the token's "exp" in milliseconds, or 0 when unknown.
  expiresAt() {
    const t = this.token;
    if (!t || t.split(".").length !== 3) return 0;
    try {
      const claims = JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      return typeof claims.exp === "number" ? claims.exp * 1000 : 0;
    } catch {
      return 0;
    }
  },
};

// APIError is an answer other than 2xx, with the API's detail in words.
export class APIError extends Error {
  constructor(status, detail) {
    super(describe(status, detail));
    this.status = status;
    this.detail = detail;
  }
}

function describe(status, detail) {
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail.map((p) => `${(p.loc || []).slice(1).join(".")}: ${p.msg}`).join("; ");
  }
  if (status === 0) return "The server cannot be reached";
  return `The server answered ${status}`;
}

let unauthorized = () => {};

// whenUnauthorized sets what happens when the server refuses the token
// (expired, revoked): the console asks the user to sign in again.
export function whenUnauthorized(f) { unauthorized = f; }

// api sends one request and returns {data, headers}, or throws an
// APIError. anonymous leaves the token out.
export async function api(method, path, { body, headers = {}, anonymous = false } = {}) {
  const h = { Accept: "application/json", ...headers };
  const token = anonymous ? null : session.token;
  if (token) h.Authorization = "Bearer " + token;
  if (body !== undefined) h["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method, headers: h, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new APIError(0, "");
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!resp.ok) {
    const err = new APIError(resp.status, data && data.detail);
    if (resp.status === 401 && token) unauthorized(err);
    throw err;
  }
  return { data, headers: resp.headers };
}

// nextPage is the path in a Link header's rel="next", or "".
export function nextPage(headers) {
  const m = /<([^>]+)>;\s*rel="next"/.exec(headers.get("Link") || "");
  return m ? m[1] : "";
}

// eventTypes are the stream's event types the console knows; it ignores
// any other, as the API asks.
const eventTypes = ["added", "occurred", "acknowledged", "unacknowledged", "resolved", "reopened", "noted",
  "escalated", "heartbeat_down", "heartbeat_up"];

// Stream follows /api/v1/events. It resumes after a drop from the last
// event it saw (?since=, which is what Last-Event-ID does, but a ticket
// is good for one connection only, so every connection is opened anew,
// with a fresh ticket when signed in). onState gets "connecting", "live"
// or "reconnecting"; onHello the server's hello (first: the first one);
// onEvent every event once, in order.
export class Stream {
  constructor({ onEvent, onState, onHello }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onHello = onHello;
    this.seq = null;
    this.attempt = 0;
    this.stopped = true;
    this.source = null;
    this.timer = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  async connect() {
    if (this.stopped) return;
    this.onState(this.seq === null ? "connecting" : "reconnecting");
    const params = new URLSearchParams();
    if (this.seq !== null) params.set("since", String(this.seq));
    if (session.token) {
      try {
        const { data } = await api("POST", "/api/v1/stream-tickets");
        params.set("ticket", data.ticket);
      } catch (e) {
        if (e.status !== 401) this.retry(); // on 401 the sign-in takes over
        return;
      }
    }
    if (this.stopped) return;
    const query = params.toString();
    const source = new EventSource("/api/v1/events" + (query ? "?" + query : ""));
    this.source = source;
    source.addEventListener("hello", (ev) => {
      const hello = JSON.parse(ev.data);
      const first = this.seq === null;
      if (first) this.seq = hello.seq;
      this.attempt = 0;
      this.onState("live");
      this.onHello(hello, first);
    });
    for (const type of eventTypes) {
      source.addEventListener(type, (ev) => {
        const msg = JSON.parse(ev.data);
        if (this.seq !== null && msg.seq <= this.seq) return;
        this.seq = msg.seq;
        this.onEvent(msg);
      });
    }
    const drop = () => {
      if (this.source !== source) return;
      source.close();
      this.source = null;
      this.retry();
    };
    source.addEventListener("close", drop); // the server is shutting down
    source.onerror = drop;
  }

  retry() {
    if (this.stopped) return;
    this.onState("reconnecting");
    const delay = Math.min(5000, 200 * 2 ** this.attempt++);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
