// dom.js: building elements and writing times, with no HTML strings, so
// nothing the server sends can become markup.

export const $ = (id) => document.getElementById(id);

// el makes an element: attrs are attributes (true/false for boolean ones,
// "class" for the class); children are nodes, text, arrays of them, or
// empty values, which are skipped.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "checked") e.checked = true;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  const add = (c) => {
    if (c === null || c === undefined || c === "" || c === false) return;
    if (Array.isArray(c)) c.forEach(add);
    else e.append(c instanceof Node ? c : String(c));
  };
  children.forEach(add);
  return e;
}

// ago is how long ago an RFC 3339 time was, shortly: 42s, 5m, 3h 10m, 2d.
export function ago(t) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(t)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// fmtTime writes a time in the reader's zone and language.
export function fmtTime(t) { return t ? dateTime.format(new Date(t)) : "—"; }

// fmtSeconds writes a duration: 45s, 12m, 3.5h, 2.1d.
export function fmtSeconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86400) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86400).toFixed(1)}d`;
}
